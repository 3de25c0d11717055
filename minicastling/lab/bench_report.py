"""The speed benchmark's report: every measurement of bench.py printed, each ratio beside its goal."""

from .bench import BENCH_MODEL, goal_rows, speedups


def print_training_steps(results) -> None:
    """The cpu preset's training step with the softmax branch on and off, against the twin's."""
    rows = results.get("training_steps", [])
    if not rows:
        return
    print(f"\ntraining step of the cpu preset's model, Fashion-MNIST-shaped images, batch {rows[0]['batch']}, "
          f"{rows[0]['threads']} thread(s) (cost = castling step / twin step: median over rounds, and range):")
    for r in rows:
        print(f"  {r['tokens']:>4} tokens (patch {r['patch_size']}): twin {r['twin_ms']:.0f} ms, branch off "
              f"{r['branch_off_ms']:.0f} ms ({r['cost_off']:.2f}x), branch on {r['branch_on_ms']:.0f} ms "
              f"({r['cost']:.2f}x, {r['cost_min']:.2f}-{r['cost_max']:.2f})")


def print_floor(results) -> None:
    """The attention alone: the twin's one SDPA call against the library calls the castled attention
    cannot avoid, and against the compiled CPU kernel's one call."""
    print("\nattention alone, forward, B=8, C=128, 4 heads (the library-call path's floor: its two batched "
          "matmuls and its conv, timed alone; the CPU kernel: all of it in one call):")
    for r in results["floor"]:
        kernel = "" if r.get("kernel_ms") is None else (
            f" | CPU kernel {r['kernel_ms']:.2f} ms ({r['kernel_ms'] / r['sdpa_ms']:.2f}x SDPA)")
        print(f"  {r['tokens']:>5} tokens: SDPA {r['sdpa_ms']:.2f} ms | library calls {r['castled_ms']:.2f} ms, of "
              f"which at least matmuls {r['matmuls_ms']:.2f} + conv {r['conv_ms']:.2f} = {r['floor_ms']:.2f} ms "
              f"({r['floor_ms'] / r['sdpa_ms']:.2f}x SDPA)" + kernel)


def print_compiled(results) -> None:
    """The same comparisons with both sides under torch.compile, or why they were skipped."""
    compiled = results["compiled"]
    if "skipped" in compiled:
        print(f"\ncompiled comparison skipped: {compiled['skipped']}")
        return
    print("\nboth sides under torch.compile (castled / twin speed-up, median over rounds and range):")
    for r in compiled["modules"]:
        print(f"  module {r['tokens']:>5} tokens {r['mode']:<8} twin {r['twin_ms']:7.2f} ms, castled "
              f"{r['castled_ms']:7.2f} ms: {r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})")
    for r in compiled["model_ratios"]:
        print(f"  model  {r['tokens']:>5} tokens inference twin {r['twin_inference_ms']:7.1f} ms, castled "
              f"{r['castled_inference_ms']:7.1f} ms: {r['inference_speedup']:.2f}x "
              f"({r['inference_speedup_min']:.2f}-{r['inference_speedup_max']:.2f})")


def print_results(results: dict) -> None:
    """Everything a bench run measured, each ratio beside its goal: what the command prints."""
    print(f"\nlinear-angular vs torch SDPA (B={1 if results['quick'] else 8}, 4 heads, head_dim 32, float32):")
    for row in results["headline"]:
        print(f"  {row['setting']:<24} {row['method']:<28} {row['ms']:9.2f} ms {row['speedup_vs_sdpa']:6.1f}x")
    print(f"\n{results.get('cpu_kernel', 'CPU kernel: not asked for')}")
    print_module_ratios(results)
    print_training_steps(results)
    print("\nmodules (B=1, C=128), castled vs twin, by token count:")
    for mode in ("forward", "fwd_bwd"):
        ratios = speedups(results[f"modules_{mode}"], "CastlingAttention, castled", "SoftmaxAttention (twin)")
        print(f"  {mode.replace('_', '+'):<8} " + ", ".join(f"{n}: {r:.2f}x" for n, r in ratios.items()))
    memory = results["memory_4096"]
    print("\npeak memory, fwd+bwd, 1 x 4 heads (goal: linear-angular <= 0.1x explicit):")
    for name, entry in memory.items():
        print(f"  {name:<26} {entry['mib']:9.1f} MiB  {entry['vs_explicit']:.4f}x explicit")
    e = results["efficiency"]
    print(f"\nlinear path (forward): {e['gflops']:.1f} GFLOP/s of {e['matmul_gflops']:.0f} for a plain 1024^2 matmul, "
          f"{e['gbs']:.2f} GB/s of {e['copy_gbs']:.1f} for a plain copy")
    if "kernel_gflops" in e:
        print(f"  the same in the CPU kernel: {e['kernel_gflops']:.1f} GFLOP/s, {e['kernel_gbs']:.2f} GB/s")
    print_thread_scaling(e)
    print_floor(results)
    print_compiled(results)
    print_goals(results)


def print_thread_scaling(limits) -> None:
    """What the CPU's threads add to a plain matmul, and a warning where they add little."""
    if "matmul_gflops_one_thread" not in limits:
        return
    gain = limits["matmul_gflops"] / limits["matmul_gflops_one_thread"]
    print(f"threads: {limits['threads']} give {gain:.2f}x one thread's matmul rate "
          f"({limits['matmul_gflops_one_thread']:.0f} GFLOP/s on one)")
    if gain < 1.3:
        print("  warning: the threads add little here (hyperthreads of one core, or a busy host): this run measures "
              "about one core, and its times are not comparable with the README's")


def print_module_ratios(results) -> None:
    """The module and whole-model comparisons, each ratio with its range over rounds and its arithmetic."""
    matmul = results["efficiency"]["matmul_gflops"]
    print("\ncastled CastlingAttention vs its SoftmaxAttention twin, B=8, C=128, 4 heads "
          "(speed-up = twin time / castled time: median over rounds, and range):")
    print(f"  {'tokens':>6} {'mode':<8} {'twin ms':>9} {'castled ms':>10} {'speed-up':>9} {'range':>12}   "
          f"{'MACs twin/castled':>17}   GFLOP/s twin, castled (matmul: {matmul:.0f})")
    for r in results["modules"]:
        twin_rate = 2 * r["twin_macs"] / r["twin_ms"] / 1e6
        castled_rate = 2 * r["castled_macs"] / r["castled_ms"] / 1e6
        print(f"  {r['tokens']:>6} {r['mode']:<8} {r['twin_ms']:9.2f} {r['castled_ms']:10.2f} {r['speedup']:8.2f}x "
              f"{r['speedup_min']:5.2f}-{r['speedup_max']:<5.2f}   {r['twin_macs'] / r['castled_macs']:16.2f}x   "
              f"{twin_rate:6.1f}, {castled_rate:6.1f}")
    shape = "smoke preset" if results.get("quick") else ", ".join(f"{k} {v}" for k, v in BENCH_MODEL.items())
    print(f"\nwhole models ({shape}), 32x32 images, batch 32 (inference: castled vs twin; training step with the "
          "softmax branch on, cost against the twin's):")
    for r in results["model_ratios"]:
        print(f"  {r['tokens']:>5} tokens (patch {r['patch_size']}): inference {r['inference_speedup']:.2f}x "
              f"({r['inference_speedup_min']:.2f}-{r['inference_speedup_max']:.2f}; twin {r['twin_inference_ms']:.1f} ms, "
              f"castled {r['castled_inference_ms']:.1f} ms), training step {r['training_cost']:.2f}x the twin's "
              f"({r['training_cost_min']:.2f}-{r['training_cost_max']:.2f})")


def print_goals(results) -> None:
    runs = {"eager": results}
    if "skipped" not in results["compiled"]:
        runs["compiled"] = results["compiled"]
    for name, run in runs.items():
        print(f"\ngoals, {name} (this run):")
        for g in goal_rows(run):
            sign = ">=" if g["direction"] == "at least" else "<="
            print(f"  {g['what']:<45} {g['tokens']:>5} tokens: {g['value']:5.2f}x ({g['min']:.2f}-{g['max']:.2f}), "
                  f"goal {sign} {g['goal']:.2f}x: {'met' if g['met'] else 'not met'}")
