"""Bad input at the command line: one sentence on stderr, exit 2 for an argument, 1 for data or files;
nothing lost, and an interrupted run resumes to where an uninterrupted one ends."""

import json

import numpy as np
import pytest
import torch

from minicastling import train as training
from minicastling.__main__ import main
from minicastling.datasets.images import save_npz
from minicastling.datasets.synthetic import stand_in


def one_sentence(capsys, status, expected_status, *fragments):
    err = capsys.readouterr().err.strip()
    assert status == expected_status, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def run(arguments):
    """main's exit status, also where argparse exits on its own."""
    try:
        return main(arguments)
    except SystemExit as exit_:
        return exit_.code


def train(*arguments, out):
    return run(["train", "--preset", "smoke", "--out", str(out), *arguments])


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_npz(stand_in(128, 32), path)
    return path


@pytest.mark.parametrize("arguments, fragments", [
    (["--epochs", "-1"], ["--epochs must be at least 1; got -1"]),
    (["--epochs", "0"], ["--epochs must be at least 1; got 0"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1; got 0"]),
    (["--lr", "inf"], ["--lr must be a finite number above 0; got inf"]),
    (["--lr", "0"], ["--lr must be a finite number above 0; got 0.0"]),
    (["--crop-padding", "-3"], ["--crop-padding must be an int >= 0; got -3"]),
    (["--mixup", "-1"], ["--mixup must be a finite number >= 0; got -1.0"]),
    (["--cutmix", "-0.5"], ["--cutmix must be a finite number >= 0"]),
    (["--drop-path", "1"], ["--drop-path is a probability", "got 1.0"]),
    (["--ema", "1"], ["--ema must be in [0, 1); got 1.0"]),
    (["--train-images", "10"], ["--train-images must be at least one batch (64 images); got 10"]),
    (["--alpha-end", "1"], ["need 0 <= hold <= end < 1", "end=1.0"]),
    (["--alpha-hold", "0.9"], ["hold=0.9, end=0.75"]),
    (["--epochs", "three"], ["argument --epochs: invalid int value: 'three'"]),
    (["--form", "paper"], ["argument --form: invalid choice: 'paper'"]),
])
def test_bad_numbers_exit_2_before_any_work(arguments, fragments, tmp_path, capsys):
    one_sentence(capsys, train(*arguments, "--data", "stand-in", out=tmp_path / "run"), 2, *fragments)
    assert not (tmp_path / "run").exists()


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    one_sentence(capsys, train("--data", "stand-in", out=existing), 2, "is a file, not a run folder")
    assert existing.read_text() == "mine"


def write_arrays(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (96, 8, 8, 1), dtype=np.uint8), "y_train": np.arange(96) % 4,
              "x_test": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), "y_test": np.arange(16) % 4}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("changes, fragments", [
    (dict(x_test=None, y_test=None), ["lacks ['x_test', 'y_test']"]),
    (dict(x_train=np.zeros((96, 8, 8, 1), np.float32)), ["x_train holds float32 values", "astype(np.uint8)"]),
    (dict(x_train=np.zeros((96, 8, 8), np.uint8)), ["x_train has shape (96, 8, 8)", "x_train[..., None]"]),
    (dict(x_train=np.zeros((96, 8, 8, 4), np.uint8)), ["x_train has 4 channels", "x[..., :3]"]),
    (dict(x_train=np.zeros((96, 1, 8, 8), np.uint8)), ["channels-first", "transpose(0, 2, 3, 1)"]),
    (dict(x_train=np.zeros((96, 8, 6, 1), np.uint8)), ["x_train holds 8×6 images", "square"]),
    (dict(x_train=np.zeros((0, 8, 8, 1), np.uint8), y_train=np.zeros(0, int)), ["x_train holds no images"]),
    (dict(y_train=np.full(96, 0.5)), ["y_train holds float64 values; labels must be integers"]),
    (dict(y_train=np.arange(96) % 4 * 1.0), ["y_train.astype(np.int64)"]),
    (dict(y_train=np.arange(96) % 4 - 1), ["y_train has negative labels (smallest -1)"]),
    (dict(y_test=np.arange(16) % 6), ["y_test has classes [4, 5] that y_train never has"]),
    (dict(x_test=np.zeros((16, 16, 16, 1), np.uint8)), ["train images are 8×8×1 and test images 16×16×1"]),
])
def test_bad_arrays_exit_1_naming_what_is_wrong(changes, fragments, tmp_path, capsys):
    path = write_arrays(tmp_path / "bad.npz", **changes)
    one_sentence(capsys, train("--data", str(path), out=tmp_path / "run"), 1, *fragments)


@pytest.mark.parametrize("content, fragments", [
    (None, ["no dataset file", "check the path"]),
    (b"", ["is empty (0 bytes)"]),
    (b"x_train,y_train\n1,2\n", ["is not an .npz archive", "np.savez"]),
    ("truncated", ["is a damaged archive"]),
    ("objects", ["holds Python objects rather than plain arrays"]),
])
def test_bad_files_exit_1_naming_what_is_wrong(content, fragments, tmp_path, capsys, tiny_npz):
    path = tmp_path / "data.npz"
    if content == "truncated":
        path.write_bytes(tiny_npz.read_bytes()[:5000])
    elif content == "objects":
        np.savez(path, x_train=np.array([object()] * 3), y_train=np.zeros(3), x_test=np.zeros(3), y_test=np.zeros(3))
    elif content is not None:
        path.write_bytes(content)
    one_sentence(capsys, train("--data", str(path), out=tmp_path / "run"), 1, *fragments)


def test_a_damaged_checkpoint_is_reported_and_kept(tmp_path, capsys, tiny_npz):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    one_sentence(capsys, train("--data", str(tiny_npz), out=run), 1, "checkpoint.pt is damaged", "it is kept",
                 "--restart", "another --out")
    assert (run / "checkpoint.pt").read_bytes() == b"PK\x03\x04 half a checkpoint"


def test_a_checkpoint_of_another_run_names_the_setting_that_differs(tmp_path, capsys, tiny_npz):
    run = tmp_path / "run"
    assert train("--data", str(tiny_npz), "--epochs", "1", out=run) == 0
    capsys.readouterr()
    one_sentence(capsys, train("--data", str(tiny_npz), "--epochs", "1", "--lr", "0.01", out=run), 1,
                 "belongs to another run: lr is 0.002 there and 0.01 now;")


def test_ctrl_c_keeps_the_last_epoch_and_the_same_command_finishes_the_run(tmp_path, capsys, monkeypatch, tiny_npz):
    arguments = ["--data", str(tiny_npz), "--epochs", "3", "--batch-size", "32"]
    assert train(*arguments, out=tmp_path / "straight") == 0
    steps = []
    original = training.training_step

    def interrupt_in_epoch_two(*args, **kwargs):
        steps.append(1)
        if len(steps) == 6:  # epoch 1 has 4 steps: Ctrl-C in the middle of epoch 2
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "training_step", interrupt_in_epoch_two)
    assert train(*arguments, out=tmp_path / "resumed") == 130
    err = capsys.readouterr().err
    assert "interrupted; the last finished epoch is kept" in err and "the same command resumes from it:" in err
    assert f"--out {tmp_path / 'resumed'}" in err and "Traceback" not in err
    monkeypatch.setattr(training, "training_step", original)
    assert train(*arguments, out=tmp_path / "resumed") == 0
    assert "resuming from checkpoint.pt after epoch 1 of 3" in capsys.readouterr().out
    straight, resumed = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "resumed"))
    assert resumed["test_acc_after_castling"] == straight["test_acc_after_castling"]
    one, two = (torch.load(tmp_path / name / "model.pt", weights_only=False)["model"] for name in ("straight", "resumed"))
    assert all(torch.equal(one[key], two[key]) for key in one if isinstance(one[key], torch.Tensor))


def test_the_main_command_prints_no_warning(tmp_path, capsys, tiny_npz):
    with _no_warnings():
        assert train("--data", str(tiny_npz), "--epochs", "1", out=tmp_path / "run") == 0
    assert "Warning" not in capsys.readouterr().err


class _no_warnings:
    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.seen = self.catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        assert not self.seen, [str(w.message) for w in self.seen]


@pytest.mark.parametrize("arguments, status, fragments", [
    (["demo", "--steps", "0"], 2, ["--steps must be at least 1, got 0"]),
    (["bench", "--quick", "--out", "."], 2, ["--out names the results file, a path ending in .json"]),
    (["assignments", "--out", "OUT", "--tutorials", "NOWHERE"], 1, ["no tutorials (NN_name.ipynb) in"]),
    (["study", "--quick", "--workers", "0"], 2, ["--workers must be at least 1, got 0"]),
    (["doctor", "--verbose"], 2, ["unrecognized arguments: --verbose"]),
])
def test_every_command_answers_bad_input_in_one_sentence(arguments, status, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_sentence(capsys, run(arguments), status, *fragments)


def test_assignments_refuse_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    one_sentence(capsys, main(["assignments", "--out", str(tmp_path / "out")]), 2, "is a file")
