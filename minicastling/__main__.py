"""Command line: `python -m minicastling train | ablate | bench | demo | assignments | doctor`."""

import argparse
import json
import sys
from pathlib import Path

import torch

from .model import ATTENTION_KINDS
from .runtime import keep_freed_memory


def demo(args) -> None:
    """Train a CastlingAttention layer with the α schedule, castle it, show nothing changed."""
    from . import AlphaSchedule, CastlingAttention, setup, toy

    setup(seed=args.seed, device="cpu")
    teacher = toy.make_teacher(sharpness=2.0)
    student = CastlingAttention(teacher.dim, teacher.num_heads, form=args.form, conv=args.conv)
    schedule = AlphaSchedule(end=0.75)
    print(f"Teaching CastlingAttention(form={args.form!r}, conv={args.conv!r}) to mimic a sharp "
          f"softmax-attention teacher for {args.steps} steps; α decays to 0 at 75% of training.")
    toy.fit(student, teacher, args.steps, schedule=schedule, seed=args.seed)
    tokens = toy.sample_tokens(256, 64, teacher.dim, torch.Generator().manual_seed(args.seed + 1))
    student.eval()
    before = student(tokens)
    error_before = toy.relative_error(student, teacher, tokens)
    student.castle()
    after = student(tokens)
    print(f"relative error before castling: {error_before:.4f}")
    print(f"relative error after castling:  {toy.relative_error(student, teacher, tokens):.4f}")
    print(f"outputs bit-for-bit unchanged by castling: {torch.equal(before, after)}")


def bench(args) -> None:
    """Attention and model speed and memory, measured in one run; ratios against SDPA and the twin."""
    import matplotlib

    matplotlib.use("Agg")
    from .bench import full_benchmark, print_compiled, print_floor, speedups
    from .plot import plot_benchmark
    from .runtime import describe, pick_device
    from .files import save_json

    device = pick_device(args.device)
    print(describe(device))
    print("measuring (a few minutes on a 2-core CPU; --quick for seconds) ...")
    results = {"device": describe(device), "quick": args.quick, **full_benchmark(args.quick, device)}
    print(f"\nlinear-angular vs torch SDPA (B={1 if args.quick else 8}, 4 heads, head_dim 32, float32):")
    for row in results["headline"]:
        print(f"  {row['setting']:<24} {row['method']:<28} {row['ms']:9.2f} ms {row['speedup_vs_sdpa']:6.1f}x")
    print_module_ratios(results)
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
    out = Path(args.out)
    save_json(out, results)
    figure = plot_benchmark(results)
    figure.savefig(out.with_suffix(".png"), dpi=110)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


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
    from .bench import BENCH_MODEL

    shape = "smoke preset" if results.get("quick") else ", ".join(f"{k} {v}" for k, v in BENCH_MODEL.items())
    print(f"\nwhole models ({shape}), 32x32 images, batch 32 (inference: castled vs twin; training step with the "
          "softmax branch on, cost against the twin's):")
    for r in results["model_ratios"]:
        print(f"  {r['tokens']:>5} tokens (patch {r['patch_size']}): inference {r['inference_speedup']:.2f}x "
              f"({r['inference_speedup_min']:.2f}-{r['inference_speedup_max']:.2f}; twin {r['twin_inference_ms']:.1f} ms, "
              f"castled {r['castled_inference_ms']:.1f} ms), training step {r['training_cost']:.2f}x the twin's "
              f"({r['training_cost_min']:.2f}-{r['training_cost_max']:.2f})")


def print_goals(results) -> None:
    from .bench import goal_rows

    runs = {"eager": results}
    if "skipped" not in results["compiled"]:
        runs["compiled"] = results["compiled"]
    for name, run in runs.items():
        print(f"\ngoals, {name} (this run):")
        for g in goal_rows(run):
            sign = ">=" if g["direction"] == "at least" else "<="
            print(f"  {g['what']:<45} {g['tokens']:>5} tokens: {g['value']:5.2f}x ({g['min']:.2f}-{g['max']:.2f}), "
                  f"goal {sign} {g['goal']:.1f}x: {'met' if g['met'] else 'not met'}")


def train(args) -> int:
    """Train a ViT (castling attention by default), castle it, report accuracy and MACs."""
    from .data import DatasetUnavailable
    from .train import get_recipe, train as run_training

    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    chosen = dict(epochs=args.epochs, attention=args.attention, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, compile=args.compile or None, train_images=args.train_images,
                  crop_padding=args.crop_padding, flip=False if args.no_flip else None, form=args.form,
                  precision=args.precision, augment=args.augment, mixup=args.mixup, cutmix=args.cutmix,
                  drop_path=args.drop_path, ema=args.ema)
    overrides = {key: value for key, value in chosen.items() if value is not None}
    if args.all_images:
        overrides["train_images"] = None
    recipe = get_recipe(preset, **overrides)
    out = args.out or f"runs/{preset}-{recipe.attention}"
    try:
        run_training(recipe, out, dataset=args.data, device=args.device, restart=args.restart)
    except (DatasetUnavailable, ValueError) as reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    return 0


def ablate(args) -> int:
    """Train every ablation variant with one recipe and tabulate accuracy and MACs."""
    from .ablation import VARIANTS, run_ablations

    unknown = [v for v in args.variant or [] if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 1
    run_ablations(args.preset, args.epochs, args.train_images, args.data, args.out, args.results, args.device,
                  args.variant)
    return 0


def study(args) -> int:
    """Paired arms × seeds, castled and compared; writes a results JSON with the contrasts and verdicts."""
    from .study import print_study, run_study

    try:
        result = run_study(args.part or ("primary", "secondary", "diagnostic"), args.seeds, args.quick, args.scale,
                           args.out, args.results, args.workers)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_study(result)
    print(f"\nwrote {args.results}")
    return 0


def assignments(args) -> int:
    """Student copies of the tutorials, each solution replaced by a stub with a hint."""
    from .assignments import write_assignments
    from .files import shown

    try:
        written = write_assignments(args.tutorials, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} student notebooks to {shown(args.out)}:")
    for path in written:
        print(f"  {path.name}")
    print("Each exercise is a stub that raises NotImplementedError with a hint; its check cell grades it.")
    return 0


def doctor(args) -> None:
    from .doctor import doctor as report

    report()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicastling", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a Castling-ViT, castle it, print accuracy before/after and MACs")
    p.add_argument("--preset", choices=["smoke", "cpu", "gpu"], help="default: gpu with CUDA, else cpu")
    p.add_argument("--data", default="auto", help="auto (CIFAR-10, else a local Fashion-MNIST, else the stand-in), "
                                                  "cifar10, fashion-mnist, stand-in, same-different or PATH.npz")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run directory (default runs/PRESET-ATTENTION); an unfinished run there resumes")
    p.add_argument("--attention", choices=ATTENTION_KINDS,
                   help="castling (default), its twins, or a zoo kind, trained by the same recipe")
    p.add_argument("--form", choices=["kernel", "official"], help="linear-angular form (default kernel)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-images", type=int, help="use the first N training images")
    p.add_argument("--all-images", action="store_true", help="use every training image")
    p.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (cpu preset: 0, tuned on Fashion-MNIST; CIFAR recipes: 4)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): bf16 on GPUs of compute capability >= 8.0, fp16 + gradient scaling below, "
                        "fp32 on the CPU")
    p.add_argument("--augment", type=float, help="TrivialAugment strength (0 off, 1 full; gpu preset: 1)")
    p.add_argument("--mixup", type=float, help="mixup's Beta alpha (0 off; gpu preset: 0.8)")
    p.add_argument("--cutmix", type=float, help="cutmix's Beta alpha (0 off; gpu preset: 1.0)")
    p.add_argument("--drop-path", type=float, help="stochastic depth of the last block (0 off; gpu preset: 0.1)")
    p.add_argument("--ema", type=float, help="decay of a weight average that is evaluated and castled (0 off)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="auto")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and start over")
    p.set_defaults(run=train)
    p = commands.add_parser("ablate", help="train every ablation variant with one recipe; write a results JSON")
    p.add_argument("--preset", choices=["smoke", "cpu", "gpu"], default="cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--results", default="results/ablations.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.set_defaults(run=ablate)
    p = commands.add_parser("study", help="does the softmax branch make the castled model better? paired runs, "
                                          "contrasts and verdicts; write a results JSON")
    p.add_argument("--part", action="append", choices=["primary", "secondary", "diagnostic"],
                   help="primary: branch on vs off for both forms on Fashion-MNIST; secondary: against the twin, "
                        "linear-angular alone and a held schedule; diagnostic: the same/different dose-response "
                        "(repeatable; default: all three)")
    p.add_argument("--seeds", type=int, help="seeds per arm (default: the design's; more than an earlier run's "
                                             "adds seeds to it)")
    p.add_argument("--workers", type=int, default=2, help="runs side by side, the threads shared between them")
    p.add_argument("--quick", action="store_true", help="tiny runs in seconds: the mechanics, not a result")
    p.add_argument("--scale", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: recipes that fit a 2-core CPU; gpu: all of Fashion-MNIST, more epochs (not run here)")
    p.add_argument("--out", default="runs/study", help="run folders; finished runs there are reused, unfinished resume")
    p.add_argument("--results", default="results/study.json", help="results JSON")
    p.set_defaults(run=study)
    p = commands.add_parser("demo", help="train, castle and check a CastlingAttention layer (~30 s on a CPU)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--form", choices=["kernel", "official"], default="kernel")
    p.add_argument("--conv", choices=["1d", "2d"], default="1d")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    p = commands.add_parser("bench", help="attention and model speed and memory against SDPA and the softmax twin")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small sizes: seconds, for a smoke test")
    p.add_argument("--out", default="results/bench.json", help="JSON results; the plot goes beside it as .png")
    p.set_defaults(run=bench)
    p = commands.add_parser("assignments", help="write student copies of the tutorials (solutions become stubs)")
    p.add_argument("--out", required=True, type=Path, help="folder for the student notebooks")
    p.add_argument("--tutorials", default=Path("tutorials"), type=Path, help="folder with the tutorials (default tutorials)")
    p.set_defaults(run=assignments)
    p = commands.add_parser("doctor", help="versions, device, budget mode and data cache: paste it into a bug report")
    p.set_defaults(run=doctor)
    args = parser.parse_args(argv)
    keep_freed_memory()  # this process is ours: page faults on freed tensors cost up to a fifth of a cpu run
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
