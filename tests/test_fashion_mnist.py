"""Fashion-MNIST's IDX files, with files the tests make: found, verified, downloaded, refused."""

import gzip
import hashlib

import numpy as np
import pytest

from minicastling.datasets import cifar10
from minicastling.datasets import fashion_mnist
from minicastling.datasets import DatasetUnavailable, load_dataset
from minicastling.datasets.fashion_mnist import CorruptFile, read_idx

TRAIN, TEST = 12, 5


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format: two zero bytes, type 0x08 (unsigned byte), the number of axes, sizes, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_contents():
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (TRAIN, 28, 28), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (TEST, 28, 28), dtype=np.uint8)}
    images["train"][0, 0, 1] = 255  # row 0, column 1 of the first image
    labels = {"train": np.arange(TRAIN) % 10, "t10k": (np.arange(TEST) + 3) % 10}
    return {f"{split}-images-idx3-ubyte.gz": idx_bytes(images[split]) for split in images} | \
           {f"{split}-labels-idx1-ubyte.gz": idx_bytes(labels[split]) for split in labels}


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Fake official files: a 'remote' copy reached through file://, a checksum table, empty local folders."""
    contents = fake_contents()
    remote = tmp_path / "remote"
    remote.mkdir()
    table = {}
    for name, content in contents.items():
        packed = gzip.compress(content, mtime=0)
        (remote / name).write_bytes(packed)
        table[name] = (hashlib.md5(packed).hexdigest(), hashlib.md5(content).hexdigest())
    monkeypatch.setattr(fashion_mnist, "FILES", table)
    monkeypatch.setattr(fashion_mnist, "URL", remote.as_uri() + "/")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("MINICASTLING_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar10, "CIFAR10_URL", (tmp_path / "no-such-archive").as_uri())
    return contents, remote


def test_idx_reader_gives_the_array_and_names_what_is_wrong():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(idx_bytes(array)), array)
    with pytest.raises(CorruptFile, match=r"labels.bin is not an IDX file.*starts with 89504e47"):
        read_idx(b"\x89PNG\r\n", "labels.bin")
    with pytest.raises(CorruptFile, match=r"x is truncated or padded.*shape \(2, 3, 4\), 40 bytes with the header, but it holds 30"):
        read_idx(idx_bytes(array)[:30], "x")


def test_files_are_downloaded_verified_parsed_and_cached(files, tmp_path):
    dataset = fashion_mnist.load(progress=False)
    assert dataset.name == "fashion-mnist" and dataset.classes[0] == "T-shirt/top"
    assert dataset.x_train.shape == (TRAIN, 28, 28, 1) and dataset.x_test.shape == (TEST, 28, 28, 1)
    assert dataset.x_train.dtype == np.uint8 and dataset.x_train[0, 0, 1, 0] == 255
    assert dataset.y_train.tolist() == list(np.arange(TRAIN) % 10)
    assert sorted(p.name for p in (tmp_path / "cache" / "fashion-mnist").iterdir()) == sorted(fashion_mnist.FILES)
    for path in (tmp_path / "remote").iterdir():
        path.unlink()  # the cache serves the next call without the network
    assert fashion_mnist.load(progress=False).x_train.shape == dataset.x_train.shape


def test_a_recompressed_copy_is_accepted_by_its_content(files, tmp_path):
    contents, _ = files
    debian = tmp_path / "debian"
    debian.mkdir()
    for name, content in contents.items():  # another compressor's bytes: a different .gz MD5, same content
        (debian / name).write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
        assert hashlib.md5((debian / name).read_bytes()).hexdigest() != fashion_mnist.FILES[name][0]
    (debian / "t10k-labels-idx1-ubyte").write_bytes(contents.pop("t10k-labels-idx1-ubyte.gz"))  # and one unpacked
    (debian / "t10k-labels-idx1-ubyte.gz").unlink()
    for path in (tmp_path / "remote").iterdir():
        path.unlink()  # nothing may be downloaded
    assert fashion_mnist.find_local() is not None
    assert len(fashion_mnist.load(progress=False).x_test) == TEST


@pytest.mark.parametrize("damage,words", [
    (lambda packed, content: packed[: len(packed) // 2], "not a readable gzip file"),
    (lambda packed, content: gzip.compress(b"\x00\x00\x0d\x01" + content[4:], mtime=0), "not an IDX file"),
    (lambda packed, content: gzip.compress(content[:-7], mtime=0), "truncated"),
    (lambda packed, content: gzip.compress(content[:-1] + bytes([content[-1] ^ 1]), mtime=0), "not Fashion-MNIST's"),
])
def test_a_damaged_local_file_is_named_and_kept(files, tmp_path, damage, words):
    contents, remote = files
    local = tmp_path / "debian"
    local.mkdir()
    for name, content in contents.items():
        packed = gzip.compress(content, mtime=0)
        (local / name).write_bytes(damage(packed, content) if name.startswith("train-labels") else packed)
    with pytest.raises(CorruptFile, match=rf"debian/train-labels-idx1-ubyte.gz .*{words}"):
        fashion_mnist.load(progress=False)
    assert (local / "train-labels-idx1-ubyte.gz").exists()  # not ours to delete
    assert not (tmp_path / "cache" / "fashion-mnist.npz").exists()


def test_a_corrupt_download_is_fetched_again_then_refused(files, tmp_path, capsys):
    _, remote = files
    good = (remote / "train-images-idx3-ubyte.gz").read_bytes()
    (remote / "train-images-idx3-ubyte.gz").write_bytes(good[:100])
    with pytest.raises(DatasetUnavailable, match="failed its check twice"):
        fashion_mnist.load(progress=False)
    assert "arrived corrupt; fetching it again" in capsys.readouterr().out
    cached = tmp_path / "cache" / "fashion-mnist"
    assert not (cached / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in cached.iterdir() if p.name.endswith(".part")]  # nothing half-written stays


def test_offline_without_files_is_one_clear_sentence(files):
    _, remote = files
    for path in remote.iterdir():
        path.unlink()
    with pytest.raises(DatasetUnavailable, match=r"not on this machine and .* could not be downloaded.*"
                                                 r"apt-get install dataset-fashion-mnist.*copy the four files"):
        fashion_mnist.load(progress=False)


def test_auto_prefers_cifar_then_local_fashion_mnist_then_the_stand_in(files, tmp_path, monkeypatch, capsys):
    from minicastling.datasets import synthetic

    monkeypatch.setattr(synthetic, "stand_in", lambda: synthetic.same_different(16, 8))
    assert load_dataset("auto", progress=False).name == "same-different"  # nothing local: the stand-in's place
    assert "No Fashion-MNIST on this machine either" in capsys.readouterr().out
    fashion_mnist.load(progress=False)  # now a local copy exists
    assert load_dataset("auto", progress=False).name == "fashion-mnist"
    out = capsys.readouterr().out
    assert "CIFAR-10 could not be downloaded" in out and "Using Fashion-MNIST, found in" in out


def test_cli_reports_a_missing_dataset_without_a_traceback(files, capsys):
    from minicastling.__main__ import main

    _, remote = files
    for path in remote.iterdir():
        path.unlink()
    assert main(["train", "--preset", "smoke", "--data", "fashion-mnist", "--out", str(remote)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Fashion-MNIST is not on this machine") and "Traceback" not in err
