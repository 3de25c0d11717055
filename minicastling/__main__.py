"""Command line: `python -m minicastling train | demo | bench`."""

import argparse
import sys

import torch


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
    """Linear-angular vs torch SDPA on this machine, measured in one run."""
    from .bench import sdpa_ratios
    from .runtime import describe, pick_device

    device = pick_device(args.device)
    print(describe(device))
    print(f"B={args.batch}, heads={args.heads}, head_dim={args.head_dim}, float32, median of {args.repeats}")
    print(f"{'setting':<24} {'method':<28} {'ms':>9} {'vs SDPA':>8}")
    for row in sdpa_ratios(args.batch, args.heads, args.head_dim, args.repeats, device):
        print(f"{row['setting']:<24} {row['method']:<28} {row['ms']:9.2f} {row['speedup_vs_sdpa']:7.1f}x")


def train(args) -> int:
    """Train a ViT (castling attention by default), castle it, report accuracy and MACs."""
    from .data import DatasetUnavailable
    from .train import get_recipe, train as run_training

    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    chosen = dict(epochs=args.epochs, attention=args.attention, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, compile=args.compile or None, train_images=args.train_images,
                  crop_padding=args.crop_padding, flip=False if args.no_flip else None)
    overrides = {key: value for key, value in chosen.items() if value is not None}
    if args.all_images:
        overrides["train_images"] = None
    recipe = get_recipe(preset, **overrides)
    out = args.out or f"runs/{preset}-{recipe.attention}"
    try:
        run_training(recipe, out, dataset=args.data, device=args.device, restart=args.restart)
    except DatasetUnavailable as reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicastling", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a Castling-ViT, castle it, print accuracy before/after and MACs")
    p.add_argument("--preset", choices=["smoke", "cpu", "gpu"], help="default: gpu with CUDA, else cpu")
    p.add_argument("--data", default="auto", help="auto (CIFAR-10, else the stand-in), cifar10, stand-in or PATH.npz")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run directory (default runs/PRESET-ATTENTION); an unfinished run there resumes")
    p.add_argument("--attention", choices=["castling", "linear-angular", "softmax"],
                   help="castling (default) or the twins trained by the same recipe")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-images", type=int, help="use the first N training images")
    p.add_argument("--all-images", action="store_true", help="use every training image")
    p.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (default 4)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    p.add_argument("--seed", type=int)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="auto")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and start over")
    p.set_defaults(run=train)
    p = commands.add_parser("demo", help="train, castle and check a CastlingAttention layer (~30 s on a CPU)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--form", choices=["kernel", "official"], default="kernel")
    p.add_argument("--conv", choices=["1d", "2d"], default="1d")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    p = commands.add_parser("bench", help="linear-angular vs torch SDPA: fwd+bwd @1,024 and fwd @4,096 tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(run=bench)
    args = parser.parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
