"""Training: it learns on a small real dataset, castles without loss, resumes exactly."""

import json

import numpy as np
import pytest
import torch

from minicastling.__main__ import main
from minicastling.datasets.synthetic import stand_in
from minicastling.extras.files import atomic_write
from minicastling.presets import get_recipe
from minicastling.train import learning_rate, train


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """scikit-learn's 1,797 handwritten digits (bundled, no network), as 16×16 uint8 images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.kron(digits.images, np.ones((2, 2))) * 15).astype(np.uint8)[..., None]  # (1797, 16, 16, 1)
    order = np.random.default_rng(0).permutation(len(images))
    train_index, test_index = order[:1437], order[1437:]
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=images[train_index], y_train=digits.target[train_index],
             x_test=images[test_index], y_test=digits.target[test_index])
    return path


def test_castling_vit_learns_real_digits_and_castles_without_loss(digits_npz, tmp_path):
    recipe = get_recipe("smoke", epochs=10, batch_size=64, lr=3e-3, train_images=None, crop_padding=1, flip=False)
    metrics = train(recipe, tmp_path, dataset=str(digits_npz), device="cpu", progress=False)
    assert metrics["dataset"] == "digits"
    assert metrics["test_acc_after_castling"] > 80  # chance is 10%
    assert abs(metrics["test_acc_before_castling"] - metrics["test_acc_after_castling"]) <= 0.5
    assert metrics["macs_after_castling"] < metrics["macs_before_castling"]
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, 11))
    assert history[-1]["alpha_end_of_epoch"] == 0.0 and history[0]["alpha_end_of_epoch"] > 0


class Interrupted(Exception):
    pass


def stop_after_first_epoch(epoch, history):
    if epoch == 1:
        raise Interrupted


def comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "device", "resumed_from_epoch")}


def test_interrupted_run_resumes_to_the_same_end(tmp_path):
    dataset = stand_in(256, 64)
    recipe = get_recipe("smoke", epochs=3, batch_size=32, train_images=None)
    straight = train(recipe, tmp_path / "straight", dataset, device="cpu", progress=False)
    with pytest.raises(Interrupted):
        train(recipe, tmp_path / "resumed", dataset, device="cpu", progress=False, on_epoch_end=stop_after_first_epoch)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = train(recipe, tmp_path / "resumed", dataset, device="cpu", progress=False)
    assert comparable(resumed) == comparable(straight)
    assert (straight["resumed_from_epoch"], resumed["resumed_from_epoch"]) == (0, 1)
    epochs_time = sum(json.loads(line)["seconds"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines())
    assert resumed["wall_time_s"] >= epochs_time  # both invocations' epochs, not only the second's
    a = torch.load(tmp_path / "straight" / "model.pt")["model"]
    b = torch.load(tmp_path / "resumed" / "model.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a if isinstance(a[key], torch.Tensor))
    rows = lambda run: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                        for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert rows("straight") == rows("resumed")
    with pytest.raises(ValueError, match="belongs to another run: epochs is 3 there and 4 now; it is kept.*--restart"):
        train(get_recipe("smoke", epochs=4, batch_size=32, train_images=None), tmp_path / "resumed", dataset,
              device="cpu", progress=False)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_learning_rate_warms_up_then_decays_to_zero():
    recipe = get_recipe("smoke", lr=1.0, warmup_epochs=1)
    rates = [learning_rate(recipe, step, 100, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] < 0.01


def test_train_command_writes_metrics_json(digits_npz, tmp_path, capsys):
    record = tmp_path / "record.json"
    assert main(["train", "--preset", "smoke", "--data", str(digits_npz), "--epochs", "1", "--out", str(tmp_path),
                 "--record", str(record)]) == 0
    recorded = json.loads(record.read_text())
    assert recorded["command"].startswith("python -m minicastling train --preset smoke") and "--record" not in recorded["command"]
    assert recorded["at"].endswith("Z") and recorded["code"]["training_code_digest"] and len(recorded["epochs"]) == 1
    assert recorded["metrics"]["attention_path"]["asked"] == "auto"
    assert main(["train", "--preset", "smoke", "--record", str(tmp_path)]) == 2  # a folder, not a .json file
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("dataset", "model", "recipe", "epochs", "device", "test_acc_before_castling", "test_acc_after_castling",
                "macs_before_castling", "macs_after_castling", "wall_time_s"):
        assert key in metrics
    out = capsys.readouterr().out
    assert "dataset: ImageDataset('digits'" in out and "before castling" in out and "the training-time model's" in out


def test_twins_never_switch_a_softmax_branch_on(tmp_path):
    from minicastling.castling import CastlingAttention

    dataset = stand_in(128, 32)
    for attention in ("linear-angular", "softmax"):
        recipe = get_recipe("smoke", epochs=1, batch_size=32, train_images=None, attention=attention)
        seen = []
        original = CastlingAttention.set_alpha
        CastlingAttention.set_alpha = lambda self, alpha: (seen.append(alpha), original(self, alpha))[1]
        try:
            metrics = train(recipe, tmp_path / attention, dataset, device="cpu", progress=False)
        finally:
            CastlingAttention.set_alpha = original
        assert all(alpha == 0.0 for alpha in seen)
        assert metrics["macs_before_castling"] == metrics["macs_after_castling"]
        row = json.loads((tmp_path / attention / "metrics.jsonl").read_text().splitlines()[0])
        assert row["mask_density"] is None and row["alpha_end_of_epoch"] == 0.0


def test_each_epochs_curves_may_use_the_first_test_images_and_the_final_accuracy_uses_all(tmp_path):
    data = stand_in(n_train=256, n_test=300, size=16)
    recipe = get_recipe("smoke", epochs=2, train_images=256, epoch_test_images=40, ema=0.5)
    metrics = train(recipe, tmp_path, dataset=data, device="cpu", progress=False)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(round(row["test_acc"] * 40 / 100, 6).is_integer() for row in history)  # k of 40 images
    assert round(metrics["test_acc_after_castling"] * 300 / 100, 6).is_integer()  # k of all 300
    assert metrics["weights"] == "average" and history[-1]["alpha_end_of_epoch"] == 0.0  # the average castled too
    with pytest.raises(ValueError, match="epoch_test_images must be None"):
        get_recipe("smoke", epoch_test_images=0)
