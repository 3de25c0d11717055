"""Measurement helpers and the command line."""

import pytest
import torch

from minicastling import __main__ as cli
from minicastling import runtime
from minicastling.bench import (
    ATTENTION_FUNCTIONS,
    crossover,
    median_time,
    peak_memory,
    scaling_sweep,
)


def test_peak_memory_sees_the_n_by_n_matrix_of_explicit_softmax():
    q, k, v = (torch.randn(2, 2, 512, 16) for _ in range(3))
    n_by_n = 2 * 2 * 512 * 512 * 4  # bytes of one float32 (B, H, N, N) tensor
    explicit = peak_memory(lambda: ATTENTION_FUNCTIONS["explicit softmax"](q, k, v))
    linear = peak_memory(lambda: ATTENTION_FUNCTIONS["linear-angular (kernel)"](q, k, v))
    assert explicit >= n_by_n
    assert linear < n_by_n / 4


def test_median_time_and_sweep_rows():
    assert median_time(lambda: None, repeats=3, warmup=0) >= 0
    rows = scaling_sweep({"sdpa": ATTENTION_FUNCTIONS["torch SDPA"]}, [16, 32], repeats=1, backward=True)
    assert [(r["method"], r["tokens"]) for r in rows] == [("sdpa", 16), ("sdpa", 32)]
    assert all(r["seconds"] > 0 and r["peak_mib"] >= 0 for r in rows)


def test_slow_methods_are_skipped_at_larger_sizes():
    rows = scaling_sweep({"sdpa": ATTENTION_FUNCTIONS["torch SDPA"]}, [16, 32], repeats=1,
                         memory=False, give_up_seconds=0.0)
    assert rows[1]["seconds"] is None


def test_crossover_is_where_the_fast_method_wins_from_then_on():
    rows = [{"method": m, "tokens": n, "seconds": s} for m, n, s in [
        ("lin", 64, 2.0), ("sm", 64, 1.0), ("lin", 128, 0.5), ("sm", 128, 1.0),
        ("lin", 256, 1.5), ("sm", 256, 1.0), ("lin", 512, 1.0), ("sm", 512, 4.0),
        ("lin", 1024, 1.0), ("sm", 1024, None)]]
    assert crossover(rows, "lin", "sm") == 512
    assert crossover(rows, "sm", "lin") is None


def test_budget_switch(monkeypatch):
    monkeypatch.setenv("MINICASTLING_BUDGET", "smoke")
    assert runtime.budget() == "smoke" and runtime.by_budget(1, 2, 3) == 1
    monkeypatch.setenv("MINICASTLING_BUDGET", "huge")
    with pytest.raises(ValueError, match=r"MINICASTLING_BUDGET='huge' is not a budget.*smoke"):
        runtime.budget()
    monkeypatch.delenv("MINICASTLING_BUDGET")
    assert runtime.budget() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_demo_command_castles_without_change(capsys):
    assert cli.main(["demo", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "budget smoke" in out
    assert "bit-for-bit unchanged by castling: True" in out


def test_bench_command_prints_ratios_and_writes_json_and_plot(capsys, tmp_path):
    import json

    assert cli.main(["bench", "--quick", "--out", str(tmp_path / "bench.json")]) == 0
    out = capsys.readouterr().out
    assert "fwd+bwd @ 1024 tokens" in out and "forward @ 4096 tokens" in out
    assert "castled CastlingAttention vs SoftmaxAttention" in out and "goal >= 1.30x" in out
    assert "GFLOP/s" in out and "images/s" in out
    results = json.loads((tmp_path / "bench.json").read_text())
    assert {r["tokens"] for r in results["modules"]} == {64, 256}
    assert results["memory_4096"]["linear-angular (kernel)"]["vs_explicit"] < 0.5
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_explicit_softmax_is_skipped_where_it_would_not_fit():
    rows = scaling_sweep({"explicit": ATTENTION_FUNCTIONS["explicit softmax"]}, [64, 128], repeats=1,
                         memory=False, max_square_bytes=4 * 4 * 64 * 64 * 3)
    assert rows[0]["seconds"] is not None and rows[1]["seconds"] is None


def test_ablate_command_runs_a_variant(tmp_path, capsys):
    import json

    from minicastling.data import save_npz, stand_in

    save_npz(stand_in(128, 64), tmp_path / "tiny.npz")
    assert cli.main(["ablate", "--preset", "smoke", "--epochs", "1", "--train-images", "128", "--data",
                     str(tmp_path / "tiny.npz"),
                     "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "ablations.json"),
                     "--variant", "linear-angular only", "--variant", "+ DWConv 1-D + softmax branch (castling)"]) == 0
    summary = json.loads((tmp_path / "ablations.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["linear-angular only", "+ DWConv 1-D + softmax branch (castling)"]
    assert summary["setup"]["dataset"] == "tiny"
    castling = summary["rows"][1]
    assert castling["macs_before_castling"] > castling["macs_after_castling"]
    assert cli.main(["ablate", "--variant", "nonsense"]) == 1
    assert "unknown variant" in capsys.readouterr().err
