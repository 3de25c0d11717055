"""Measurement helpers and the command line."""

import pytest
import torch

from minicastling import __main__ as cli
from minicastling import presets
from minicastling.memory import peak_memory
from minicastling.lab.bench import ATTENTION_FUNCTIONS, crossover, goal_rows, machine_limits, scaling_sweep
from minicastling.lab.bench_report import print_thread_scaling
from minicastling.lab.timing import interleaved_times, median_time, ratio_summary
from minicastling.measure import macs


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
    close = [{"method": m, "tokens": 64, "seconds": s} for m, s in [("lin", 0.98), ("sm", 1.0)]]
    assert crossover(close, "lin", "sm") is None  # 2 % in one measurement is not a crossover


def test_budget_switch(monkeypatch):
    assert tuple(presets.PRESETS) == presets.BUDGETS  # each budget mode is the preset of its name
    monkeypatch.setenv("MINICASTLING_BUDGET", "smoke")
    assert presets.budget() == "smoke" and presets.by_budget(1, 2, 3) == 1
    monkeypatch.setenv("MINICASTLING_BUDGET", "huge")
    with pytest.raises(ValueError, match=r"MINICASTLING_BUDGET='huge' is not a budget.*smoke"):
        presets.budget()
    monkeypatch.delenv("MINICASTLING_BUDGET")
    assert presets.budget() == ("gpu" if torch.cuda.is_available() else "cpu")


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
    assert "castled CastlingAttention vs its SoftmaxAttention twin" in out and "goal >= 1.50x" in out
    assert "GFLOP/s" in out and "whole models" in out and "goals, eager (this run)" in out
    assert "of which at least matmuls" in out and "compiled comparison skipped: quick run" in out
    assert ("one thread's matmul rate" in out) == (torch.get_num_threads() > 1)
    results = json.loads((tmp_path / "bench.json").read_text())
    assert {(r["tokens"], r["mode"]) for r in results["modules"]} == {(n, m) for n in (64, 256) for m in ("forward", "fwd+bwd")}
    assert all(r["speedup_min"] <= r["speedup"] <= r["speedup_max"] for r in results["modules"])
    assert results["memory_4096"]["linear-angular (kernel)"]["vs_explicit"] < 0.5
    assert [r["tokens"] for r in results["floor"]] == [64, 256] and results["compiled"] == {"skipped": "quick run"}
    assert [r["tokens"] for r in results["training_steps"]] == [49, 196] and "training step of the cpu preset" in out
    assert results["cpu_kernel"].startswith("CPU kernel:") and "cpu preset's training step, branch on vs twin" in out
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_explicit_softmax_is_skipped_where_it_would_not_fit():
    rows = scaling_sweep({"explicit": ATTENTION_FUNCTIONS["explicit softmax"]}, [64, 128], repeats=1,
                         memory=False, max_square_bytes=4 * 4 * 64 * 64 * 3)
    assert rows[0]["seconds"] is not None and rows[1]["seconds"] is None


def test_ratios_are_taken_round_by_round():
    times = {"peer": [2.0, 4.0, 2.0], "contender": [1.0, 4.0, 4.0]}
    summary = ratio_summary(times, "peer", "contender")
    assert summary["ratio"] == 1.0 and (summary["ratio_min"], summary["ratio_max"]) == (0.5, 2.0)
    assert summary["peer_ms"] == 2000.0 and summary["contender_ms"] == 4000.0
    calls = interleaved_times({"a": lambda: None, "b": lambda: None}, rounds=3, seconds_per_round=0.001)
    assert [len(calls[k]) for k in ("a", "b")] == [3, 3]


def test_goals_are_judged_in_their_direction():
    results = {"modules": [{"tokens": 256, "mode": "forward", "speedup": 1.6, "speedup_min": 1.4, "speedup_max": 1.7}],
               "model_ratios": [{"tokens": 64, "inference_speedup": 0.9, "inference_speedup_min": 0.8,
                                 "inference_speedup_max": 1.0, "training_cost": 1.4, "training_cost_min": 1.3,
                                 "training_cost_max": 1.6}],
               "training_steps": [{"tokens": 49, "cost": 1.12, "cost_min": 1.05, "cost_max": 1.2},
                                  {"tokens": 196, "cost": 1.12, "cost_min": 1.05, "cost_max": 1.2}]}
    verdicts = {(g["what"], g["tokens"]): g["met"] for g in goal_rows(results)}
    assert verdicts == {("castled module vs twin, forward", 256): True, ("castled model vs twin, inference", 64): False,
                        ("training step with the branch, cost vs twin", 64): True,
                        ("cpu preset's training step, branch on vs twin", 49): False,
                        ("cpu preset's training step, branch on vs twin", 196): True}


def test_macs_count_a_depthwise_convolution_backward_as_twice_its_forward():
    conv = torch.nn.Conv2d(8, 8, (9, 1), padding=(4, 0), groups=8, bias=False)
    x = torch.randn(2, 8, 16, 1)
    forward = macs(conv, x, backward=False)
    assert forward == 2 * 8 * 16 * 9
    assert macs(conv, x, backward=True) == 3 * forward


def test_compiled_comparison_times_both_sides_under_torch_compile_or_says_why_not(monkeypatch):
    from minicastling.lab import bench

    problem = bench.compiler_problem()
    if problem:
        pytest.skip(f"torch.compile does not work here: {problem}")
    rows = bench.module_ratios(tokens=(16,), batch=1, dim=16, heads=2, rounds=1, compiled=True)
    assert [(r["tokens"], r["mode"]) for r in rows] == [(16, "forward"), (16, "fwd+bwd")]
    assert all(r["speedup"] > 0 and r["training_ms"] is None for r in rows)
    assert bench.compiled_benchmark(quick=True) == {"skipped": "quick run"}
    monkeypatch.setattr(bench, "compiler_problem", lambda: "RuntimeError: no C++ compiler")
    assert bench.compiled_benchmark() == {"skipped": "torch.compile unavailable (RuntimeError: no C++ compiler)"}


def test_a_compiled_run_is_judged_on_inference_alone():
    compiled = {"modules": [], "model_ratios": [{"tokens": 256, "inference_speedup": 1.4, "inference_speedup_min": 1.3,
                                                 "inference_speedup_max": 1.6}]}
    assert [(g["what"], g["met"]) for g in goal_rows(compiled)] == [("castled model vs twin, inference", True)]


def test_the_floor_is_the_castled_modules_unavoidable_calls():
    from minicastling.lab.bench import attention_floor

    (row,) = attention_floor(tokens=(32,), batch=1, dim=32, heads=2, repeats=2)
    assert row["floor_ms"] == pytest.approx(row["matmuls_ms"] + row["conv_ms"])
    assert all(row[key] > 0 for key in ("sdpa_ms", "castled_ms", "matmuls_ms", "conv_ms"))


def test_benchmark_figure_keeps_one_colour_for_the_twin_and_one_for_castling():
    from minicastling.lab import plot

    def rows(methods):
        return [{"method": m, "tokens": n, "seconds": 1e-3 * n, "peak_mib": 1.0 * n} for m in methods for n in (64, 256)]

    results = {"device": "cpu", "functions_fwd_bwd": rows(["explicit softmax", "torch SDPA", "linear-angular (kernel)"]),
               "modules_fwd_bwd": rows(["SoftmaxAttention (twin)", "CastlingAttention, castled"])}
    figure = plot.plot_benchmark(results)
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in figure.axes]
    assert colours[0]["torch SDPA"] == colours[2]["SoftmaxAttention (twin)"] == plot.TWIN
    assert colours[0]["linear-angular (kernel)"] == colours[3]["CastlingAttention, castled"] == plot.CASTLING
    assert len(set(colours[0].values())) == 3  # the methods of one panel stay apart


def test_thread_scaling_warns_where_the_threads_add_little(capsys):
    print_thread_scaling({"threads": 2, "matmul_gflops": 120.0, "matmul_gflops_one_thread": 64.0})
    assert "1.88x one thread's" in capsys.readouterr().out
    print_thread_scaling({"threads": 2, "matmul_gflops": 70.0, "matmul_gflops_one_thread": 66.0})
    assert "not comparable" in capsys.readouterr().out
    print_thread_scaling({"threads": None, "matmul_gflops": 9000.0})  # a GPU: nothing to say
    assert capsys.readouterr().out == ""


def test_machine_limits_restore_the_thread_count():
    before = torch.get_num_threads()
    limits = machine_limits(repeats=1)
    assert torch.get_num_threads() == before and limits["threads"] == before
    assert ("matmul_gflops_one_thread" in limits) == (before > 1)
