"""CIFAR-10 download, verification and parsing with archives built here; arrays; augmentation."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from minicastling.datasets import cifar10
from minicastling.datasets import DatasetUnavailable, ImageDataset, load_dataset, load_npz
from minicastling.datasets.batches import DeviceData, random_crop_flip
from minicastling.datasets.cifar10 import load_cifar10
from minicastling.datasets.images import save_npz
from minicastling.datasets.synthetic import stand_in

PER_BATCH = 6


def fake_cifar_archive(path, per_batch=PER_BATCH):
    """A tar.gz in the official layout: pickled dicts of b'data' (N, 3072) uint8 and b'labels'."""
    def batch(index):
        images = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
        images[:, 0], images[:, 1], images[:, 2] = 10 + index, 20, 30  # channel-first, as CIFAR stores it
        images[:, 0, 0, 1] = 255  # one marked pixel: row 0, column 1 of the red channel
        labels = [(index + i) % 10 for i in range(per_batch)]
        return pickle.dumps({b"data": images.reshape(per_batch, 3072), b"labels": labels, b"batch_label": b"x"})

    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for index, name in enumerate(names):
            payload = batch(index)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A 'remote' archive reached through a file:// URL, and an empty cache directory."""
    remote = tmp_path / "remote" / "cifar-10-python.tar.gz"
    remote.parent.mkdir()
    checksum = fake_cifar_archive(remote)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", remote.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", checksum)
    monkeypatch.setenv("MINICASTLING_DATA", str(tmp_path / "cache"))
    return remote


def test_good_archive_is_downloaded_verified_parsed_and_cached(server, tmp_path):
    dataset = load_cifar10(progress=False)
    assert dataset.name == "cifar10" and dataset.classes[0] == "airplane"
    assert dataset.x_train.shape == (5 * PER_BATCH, 32, 32, 3) and dataset.x_train.dtype == np.uint8
    assert dataset.x_test.shape == (PER_BATCH, 32, 32, 3)
    assert dataset.x_train[0, 0, 0].tolist() == [10, 20, 30]  # channels last
    assert dataset.x_train[0, 0, 1, 0] == 255 and dataset.x_train[0, 1, 0, 0] == 10  # rows and columns kept
    assert dataset.y_train[:3].tolist() == [0, 1, 2] and dataset.y_test[0] == 5
    assert (tmp_path / "cache" / "cifar10.npz").exists()
    server.unlink()  # the cache serves the next call without the network
    assert load_cifar10(progress=False).x_train.shape == dataset.x_train.shape


def test_corrupt_cached_archive_is_detected_and_fetched_again(server, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    dataset = load_cifar10(progress=False)
    assert "corrupt or incomplete" in capsys.readouterr().out
    assert len(dataset.x_train) == 5 * PER_BATCH


def test_truncated_download_is_rejected(server, tmp_path):
    server.write_bytes(server.read_bytes()[:200])  # the remote copy is cut short
    with pytest.raises(DatasetUnavailable, match="failed its MD5 check twice"):
        load_cifar10(progress=False)
    assert not (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()


def test_missing_archive_gives_one_clear_sentence(server):
    server.unlink()
    with pytest.raises(DatasetUnavailable, match=r"could not be downloaded.*copy it to .*--data stand-in"):
        load_cifar10(progress=False)


def test_auto_falls_back_to_the_stand_in_when_offline(server, monkeypatch, tmp_path, capsys):
    from minicastling.datasets import fashion_mnist, synthetic

    server.unlink()
    monkeypatch.setattr(synthetic, "stand_in", lambda: stand_in(64, 32))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-copy")
    dataset = load_dataset("auto", progress=False)
    assert dataset.name == "stand-in"
    assert "Using the built-in stand-in instead" in capsys.readouterr().out


def test_cli_reports_offline_cifar_without_a_traceback(server, capsys):
    from minicastling.__main__ import main

    server.unlink()
    assert main(["train", "--preset", "smoke", "--data", "cifar10", "--out", str(server.parent)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CIFAR-10 could not be downloaded") and "Traceback" not in err


def test_npz_round_trip_any_classes_and_size(tmp_path):
    rng = np.random.default_rng(0)
    dataset = ImageDataset("mine", rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8), rng.integers(0, 7, 20),
                           rng.integers(0, 256, (5, 16, 16, 1), dtype=np.uint8), np.arange(5), ())
    save_npz(dataset, tmp_path / "mine.npz")
    loaded = load_npz(tmp_path / "mine.npz")
    assert loaded.name == "mine" and loaded.image_size == 16 and loaded.channels == 1
    assert loaded.num_classes == 7 and np.array_equal(loaded.x_train, dataset.x_train)


def test_bad_arrays_are_named(tmp_path):
    x = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"x_train holds float32 values; images must be uint8.*astype\(np.uint8\)"):
        ImageDataset("bad", x.astype(np.float32), np.zeros(4, int), x, np.zeros(4, int), ())
    with pytest.raises(ValueError, match=r"y_train must hold one label per image, 4 of them; got shape \(3,\)"):
        ImageDataset("bad", x, np.zeros(3, int), x, np.zeros(4, int), ())
    with pytest.raises(ValueError, match=r"x_train holds 8×6 images; the model needs square images"):
        ImageDataset("bad", np.zeros((4, 8, 6, 3), np.uint8), np.zeros(4, int), x, np.zeros(4, int), ())
    np.savez(tmp_path / "partial.npz", x_train=x, y_train=np.zeros(4, int))
    with pytest.raises(ValueError, match=r"lacks \['x_test', 'y_test'\]"):
        load_npz(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_crop_and_flip_are_shifted_or_mirrored_windows():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped_any = False
    for b in range(16):
        windows = [padded[b, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        plain = any(torch.equal(out[b], w) for w in windows)
        mirrored = any(torch.equal(out[b], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped_any |= mirrored and not plain
    assert flipped_any


def test_device_data_normalises_with_train_statistics():
    dataset = stand_in(200, 50)
    train = DeviceData(dataset.x_train, dataset.y_train, "cpu")
    images, labels = next(train.batches(200))
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.float32
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    batches = list(train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True))
    assert len(batches) == 3 and len(torch.cat([y for _, y in batches])) == 192
