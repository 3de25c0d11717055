"""What runs on a GPU, exercised on the CPU: precision per card, the scaler, the gpu recipe, torchrun."""

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minicastling import memory
from minicastling.extras import precision
from minicastling.attention import linear_angular_attention
from minicastling.datasets.images import save_npz
from minicastling.fast.library_calls import linear_angular
from minicastling.datasets.synthetic import stand_in
from minicastling.presets import get_config, get_recipe
from minicastling.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("capability,expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                 ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(precision, "cuda_capability", lambda device: capability)
    assert precision.choose_precision(torch.device("cuda", 0)) == expected
    assert expected in precision.describe_choice(torch.device("cuda", 0))


def test_cpu_trains_in_fp32_unless_asked_and_bad_requests_are_named(monkeypatch):
    assert precision.choose_precision(torch.device("cpu")) == "fp32"
    assert precision.choose_precision(torch.device("cpu"), "bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        precision.choose_precision(torch.device("cpu"), "fp8")
    monkeypatch.setattr(precision, "cuda_capability", lambda device: (7, 5))
    with pytest.warns(UserWarning, match="bf16 on a GPU of compute capability 7.5 runs emulated"):
        assert precision.choose_precision(torch.device("cuda", 0), "bf16") == "bf16"


@pytest.mark.parametrize("chosen", ["fp16", "bf16"])
def test_low_precision_training_runs_and_is_recorded(tmp_path, chosen):
    recipe = get_recipe("smoke", epochs=1, train_images=128, batch_size=32, precision=chosen)
    metrics = train(recipe, tmp_path, stand_in(128, 64), device="cpu", progress=False, quiet=True)
    assert metrics["precision"] == chosen and math.isfinite(metrics["test_acc_after_castling"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(rows[0]["train_loss"])


def test_the_gradient_scaler_is_on_for_fp16_only():
    assert precision.grad_scaler("cpu", "fp16").is_enabled()
    assert not precision.grad_scaler("cpu", "bf16").is_enabled() and not precision.grad_scaler("cpu", "fp32").is_enabled()


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_linear_path_stays_finite_in_fp16_where_fp16_sums_overflow(form):
    g = torch.Generator().manual_seed(0)
    qkv = (torch.randn(1, 4096, 48, generator=g) * 300 + 200).half()  # token sums reach millions: fp16 tops at 65,504
    q, k, v = qkv.float().view(1, 4096, 3, 2, 8).permute(2, 0, 3, 1, 4)
    assert not torch.isfinite(v.half().sum(-2)).all()  # the naive fp16 reduction overflows
    exact = linear_angular_attention(q.double(), k.double(), v.double(), form=form)
    for out in (linear_angular(qkv, 2, form)[0],
                linear_angular_attention(*(t.half() for t in (q, k, v)), form=form)):
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        assert ((out.double() - exact).norm() / exact.norm()) < 0.01


def test_the_gpu_recipe_trains_here_with_its_ingredients(tmp_path, monkeypatch):
    # torch.compile captures the whole training step; inductor's code generation for this model takes
    # minutes on a 2-core CPU, so the capture (dynamo and AOT autograd) is checked here without it.
    # fp32: a CPU without bf16 instructions emulates bf16 matmuls ~80× slower (the bf16 and fp16 paths
    # are trained above on the smoke model)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    recipe = get_recipe("gpu", epochs=1, train_images=64, batch_size=32, warmup_epochs=0.5, precision="fp32")
    assert recipe.compile
    assert recipe.augment and recipe.mixup and recipe.cutmix and recipe.model.drop_path and recipe.ema
    metrics = train(recipe, tmp_path, stand_in(64, 32), device="cpu", progress=False, quiet=True)
    assert metrics["weights"] == "average" and metrics["precision"] == "fp32"
    assert get_config("gpu").tokens == 256 and math.isfinite(metrics["test_acc_after_castling"])


def test_memory_estimate_grows_with_the_batch_and_names_what_to_lower(monkeypatch, capsys):
    config = get_config("smoke")
    base, per_image = memory.step_line(config)
    assert per_image > 0 and base > 0
    needed, rows = memory.table(config, 64)
    largest = [row["largest_batch"] for row in rows]
    assert largest == sorted(largest) and all(row["fits"] for row in rows)
    gpu_needed, gpu_rows = memory.table(get_config("gpu"), 256)  # the numbers doctor and the README print
    print(f"gpu preset, batch 256: about {gpu_needed:.1f} GiB; "
          + ", ".join(f"{r['gpu']}: up to {r['largest_batch']}" for r in gpu_rows))
    small = type("Properties", (), {"total_memory": int(base + per_image * 10)})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: small)
    with pytest.raises(ValueError, match=r"batch 64 needs about .* GiB .* lower --batch-size to [0-9] or less"):
        memory.check_fits(config, 64, torch.device("cuda", 0))
    assert "of this GPU's" in memory.check_fits(config, 2, torch.device("cuda", 0))
    warned = memory.check_fits(config, 64, torch.device("cuda", 0), "fp16")  # float32's estimate is an upper bound
    assert "under fp16 it needs less and may fit" in warned and "lower --batch-size to" in warned


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    from sklearn.datasets import load_digits

    import numpy as np

    digits = load_digits()
    images = (np.kron(digits.images, np.ones((2, 2))) * 15).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=images[order[:1437]], y_train=digits.target[order[:1437]],
             x_test=images[order[1437:]], y_test=digits.target[order[1437:]])
    return path


def torchrun(tmp_path, *arguments, processes=2):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "minicastling", "train", *arguments]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, digits_npz):
    arguments = ["--preset", "smoke", "--data", str(digits_npz), "--epochs", "8", "--batch-size", "64",
                 "--all-images", "--no-flip", "--crop-padding", "1"]
    two = torchrun(tmp_path, *arguments, "--out", "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test accuracy before castling") == 1  # rank 0 alone prints
    one = torchrun(tmp_path, *arguments, "--out", "one", processes=1)
    assert one.returncode == 0, one.stderr[-3000:]
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert metrics["two"]["world_size"] == 2 and metrics["one"]["world_size"] == 1
    accuracy = {name: m["test_acc_after_castling"] for name, m in metrics.items()}
    assert accuracy["one"] > 80 and abs(accuracy["one"] - accuracy["two"]) <= 3.0, accuracy
    resumed = torchrun(tmp_path, *arguments, "--out", "two")  # everything done: resumes at the end, castles once
    assert resumed.returncode == 0 and "resuming from checkpoint.pt after epoch 8 of 8" in resumed.stdout
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["test_acc_after_castling"] == accuracy["two"]
