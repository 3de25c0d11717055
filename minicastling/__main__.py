"""Command line: `python -m minicastling train | study | bench | demo | assignments | doctor`.

A user's mistake gets one sentence on stderr, what was wrong, the value seen and what to do, and no
traceback: exit status 2 for a bad argument, 1 for data or files that cannot be used. A traceback
means a bug.
"""

import argparse
import shlex
import sys
from pathlib import Path

from .attention import FORMS
from .castling import PATHS
from .extras.files import InputError, shown
from .extras.precision import PRECISIONS
from .extras.runtime import keep_freed_memory
from .model import ATTENTION_KINDS
from .presets import PRESETS

BAD_ARGUMENT, BAD_INPUT = 2, 1


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one sentence that says where to look."""

    def error(self, message):
        self.exit(BAD_ARGUMENT, f"error: {message}; see `{self.prog} --help`\n")


def fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def demo(args) -> int:
    """Train a CastlingAttention layer with the α schedule, castle it, show nothing changed."""
    import torch

    from . import AlphaSchedule
    from .course import setup, toy

    if args.steps < 1:
        return fail(f"--steps must be at least 1, got {args.steps}", BAD_ARGUMENT)
    setup(seed=args.seed, device="cpu")
    teacher = toy.make_teacher(sharpness=2.0)
    student = toy.make_student(teacher, seed=args.seed + 1, form=args.form, conv=args.conv)  # not the teacher's draw
    print(f"Teaching CastlingAttention(form={args.form!r}, conv={args.conv!r}) to mimic a sharp "
          f"softmax-attention teacher for {args.steps} steps; α decays to 0 at 75% of training.")
    toy.fit(student, teacher, args.steps, schedule=AlphaSchedule(end=0.75), seed=args.seed)
    tokens = toy.sample_tokens(256, 64, teacher.dim, torch.Generator().manual_seed(args.seed + 1))
    student.eval()
    before = student(tokens)
    error_before = toy.relative_error(student, teacher, tokens)
    student.castle()
    after = student(tokens)
    print(f"relative error before castling: {error_before:.4f}")
    print(f"relative error after castling:  {toy.relative_error(student, teacher, tokens):.4f}")
    print(f"outputs bit-for-bit unchanged by castling: {torch.equal(before, after)}")
    return 0


def bench(args) -> int:
    """Attention and model speed and memory, measured in one run; ratios against SDPA and the twin."""
    import matplotlib

    matplotlib.use("Agg")
    from .extras.files import save_json
    from .extras.runtime import describe, pick_device
    from .lab.bench import full_benchmark
    from .lab.bench_report import print_results
    from .lab.plot import plot_benchmark

    out = Path(args.out)
    if out.is_dir() or out.suffix != ".json":
        return fail(f"--out names the results file, a path ending in .json; got {args.out!r}", BAD_ARGUMENT)
    device = pick_device(args.device)
    print(describe(device))
    print("measuring (a few minutes on a 2-core CPU; --quick for seconds) ...")
    results = {"device": describe(device), "quick": args.quick, **full_benchmark(args.quick, device)}
    print_results(results)
    save_json(out, results)
    plot_benchmark(results).savefig(out.with_suffix(".png"), dpi=110)
    print(f"\nwrote {shown(out)} and {shown(out.with_suffix('.png'))}")
    return 0


def recipe_from(args):
    """The preset's recipe with the options given on the command line (None: the preset's own)."""
    import torch

    from .presets import get_recipe

    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    chosen = dict(epochs=args.epochs, attention=args.attention, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, compile=args.compile or None, train_images=args.train_images,
                  crop_padding=args.crop_padding, flip=False if args.no_flip else None, form=args.form, path=args.path,
                  precision=args.precision, augment=args.augment, mixup=args.mixup, cutmix=args.cutmix,
                  drop_path=args.drop_path, ema=args.ema, alpha_hold=args.alpha_hold, alpha_end=args.alpha_end)
    changes = {key: value for key, value in chosen.items() if value is not None}
    if args.all_images:
        changes["train_images"] = None
    return preset, get_recipe(preset, **changes)


def train(args) -> int:
    """Train a ViT (castling attention by default), castle it, report accuracy and MACs."""
    from .train import train as run_training

    try:
        preset, recipe = recipe_from(args)
    except ValueError as error:  # a setting out of range: say it as the option it came from
        name, _, rest = str(error).partition(" ")
        return fail(f"--{name.replace('_', '-')} {rest}" if name in vars(args) else str(error), BAD_ARGUMENT)
    out = Path(args.out or f"runs/{preset}-{recipe.model.attention}")
    if out.exists() and not out.is_dir():
        return fail(f"--out {shown(out)} is a file, not a run folder; name a folder (it is created if missing)",
                    BAD_ARGUMENT)
    if args.record and (Path(args.record).is_dir() or Path(args.record).suffix != ".json"):
        return fail(f"--record names a results file, a path ending in .json; got {args.record!r}", BAD_ARGUMENT)
    try:
        metrics = run_training(recipe, out, dataset=args.data, device=args.device, restart=args.restart)
    except InputError as error:
        return fail(str(error), BAD_INPUT)
    except KeyboardInterrupt:
        command = shlex.join(["python", "-m", "minicastling", *args.argv])
        print(f"\ninterrupted; the last finished epoch is kept in {shown(out / 'checkpoint.pt')}, and the same "
              f"command resumes from it: {command}", file=sys.stderr)
        return 130
    if args.record:
        from .extras.files import save_json
        from .lab.record import code_identity, now
        from .train import read_history

        command = shlex.join(["python", "-m", "minicastling", *[a for a in args.argv if a not in ("--record", args.record)]])
        save_json(Path(args.record), {"command": command, "at": now(), "code": code_identity(), "metrics": metrics,
                                      "epochs": read_history(out)})
        print(f"recorded in {shown(Path(args.record))}")
    return 0


def study(args) -> int:
    """Paired arms × seeds, castled and compared; keeps a record with the design, every run and the verdicts."""
    from .lab.study import STUDIES, print_study, reproduce, run_study

    if args.seeds is not None and args.seeds < 2:
        return fail(f"--seeds must be at least 2 (a paired interval needs two pairs), got {args.seeds}", BAD_ARGUMENT)
    if args.workers < 1:
        return fail(f"--workers must be at least 1, got {args.workers}", BAD_ARGUMENT)
    results = args.results or str(Path("minicastling") / STUDIES[args.tokens].results)
    if Path(results).is_dir():
        return fail(f"--results names a JSON file, and {results!r} is a folder", BAD_ARGUMENT)
    try:
        if args.speed:
            from .lab.study import print_speed, trained_speed

            print_speed(trained_speed(results, args.out, args.scale))
            print(f"\nadded to {shown(Path(results))}")
            return 0
        if args.reproduce:
            arm, seed = args.reproduce
            recorded, again = reproduce(results, arm, int(seed), out=Path(args.out) / "reproduce")
            same = "the same" if again["after"] == recorded["after"] else "DIFFERENT"
            print(f"{arm}, seed {seed}: recorded {recorded['after']:.2f} % (code {recorded['code']['commit']}), "
                  f"now {again['after']:.2f} % (code {again['code']['commit']}): {same}")
            return 0 if same == "the same" else 1
        result = run_study(args.part, args.seeds, args.quick, args.scale, args.out, results, args.workers,
                           tokens=args.tokens, amend=args.amend)
    except InputError as error:
        return fail(str(error), BAD_INPUT)
    print_study(result)
    print(f"\nwrote {shown(Path(results))}")
    return 0


def assignments(args) -> int:
    """Student copies of the tutorials, each solution replaced by a stub with a hint; or an nbgrader course."""
    from .course.assignments import write_assignments, write_nbgrader_course

    if args.out.exists() and not args.out.is_dir():
        return fail(f"--out {shown(args.out)} is a file; name a folder for the student notebooks", BAD_ARGUMENT)
    write = write_nbgrader_course if args.format == "nbgrader" else write_assignments
    try:
        written = write(args.tutorials, args.out)
    except InputError as error:
        return fail(str(error), BAD_INPUT)
    if args.format == "nbgrader":
        print(f"wrote an nbgrader course to {shown(args.out)}: nbgrader_config.py and {len(written) - 1} source "
              "assignments:")
        for path in written[1:]:
            print(f"  source/{path.parent.name}/{path.name}")
        print(f"Next, in {shown(args.out)}: nbgrader generate_assignment tutorial01 (and the others); "
              "tutorials/README.md gives every command up to the gradebook.")
        return 0
    print(f"wrote {len(written)} student notebooks to {shown(args.out)}:")
    for path in written:
        print(f"  {path.name}")
    print("Each exercise is a stub that raises NotImplementedError with a hint; its check cell grades it.")
    return 0


def doctor(args) -> int:
    from .course.doctor import doctor as report

    report()
    return 0


def parser() -> Parser:
    top = Parser(prog="python -m minicastling", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = commands.add_parser("train", help="train a Castling-ViT, castle it, print accuracy before/after and MACs")
    p.add_argument("--preset", choices=list(PRESETS), help="default: gpu with CUDA, else cpu")
    p.add_argument("--data", default="auto", help="auto (CIFAR-10, else a local Fashion-MNIST, else the stand-in), "
                                                  "cifar10, fashion-mnist, stand-in, same-different or PATH.npz")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run directory (default runs/PRESET-ATTENTION); an unfinished run there resumes")
    p.add_argument("--attention", choices=ATTENTION_KINDS,
                   help="castling (default), its twins, or a zoo kind, trained by the same recipe")
    p.add_argument("--form", choices=FORMS, help="linear-angular form (default official: what the authors' code computes)")
    p.add_argument("--path", choices=PATHS, help="which code computes castling attention (default auto: the CPU "
                                                 "kernel on a CPU, library calls on a GPU; readable: the tutorials' "
                                                 "formulas)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-images", type=int, help="use the first N training images")
    p.add_argument("--all-images", action="store_true", help="use every training image")
    p.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (cpu preset: 0, tuned on "
                                                    "Fashion-MNIST; CIFAR recipes: 4)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 on GPUs of compute capability >= 8.0, fp16 + gradient scaling below, "
                        "fp32 on the CPU")
    p.add_argument("--augment", type=float, help="TrivialAugment strength (0 off, 1 full; gpu preset: 1)")
    p.add_argument("--mixup", type=float, help="mixup's Beta alpha (0 off; gpu preset: 0.8)")
    p.add_argument("--cutmix", type=float, help="cutmix's Beta alpha (0 off; gpu preset: 1.0)")
    p.add_argument("--drop-path", type=float, help="stochastic depth of the last block (0 off; gpu preset: 0.1)")
    p.add_argument("--ema", type=float, help="decay of a weight average that is evaluated and castled (0 off)")
    p.add_argument("--alpha-hold", type=float, help="fraction of training with the softmax branch's α held at 1 "
                                                     "before it decays (default 0)")
    p.add_argument("--alpha-end", type=float, help="fraction of training at which α reaches 0 (default 0.75; "
                                                    "below 1, so the model trains without the branch before castling)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="auto")
    p.add_argument("--restart", action="store_true", help="start over, replacing the checkpoint in --out")
    p.add_argument("--record", help="also write the run's metrics, epochs, command, time and code to this JSON file "
                                    "(what minicastling/results/train_fashion_mnist.json holds)")
    p.set_defaults(run=train)
    p = commands.add_parser("study", help="does the softmax branch make the castled model better? paired runs, "
                                          "contrasts and verdicts, in a record that keeps the design and every run")
    p.add_argument("--tokens", type=int, choices=[49, 196], default=49,
                   help="49: Fashion-MNIST in 4x4 patches (results/study.json); 196: in 2x2 patches, where the mask is "
                        "sparse (results/study_196.json)")
    p.add_argument("--part", action="append", choices=["primary", "secondary", "diagnostic"],
                   help="primary: branch on vs off; secondary: against the twin and other arms (exploratory); "
                        "diagnostic (49 tokens): the same/different dose-response (repeatable; default: all)")
    p.add_argument("--seeds", type=int, help="seeds per arm of the chosen parts (default: the design's; a change is "
                                             "an amendment, so it needs --amend)")
    p.add_argument("--amend", help="why the design changes (seeds, recipe, …): appended to the record with the time")
    p.add_argument("--workers", type=int, default=2, help="runs side by side, the threads shared between them")
    p.add_argument("--quick", action="store_true", help="tiny runs in seconds: the mechanics, not a result")
    p.add_argument("--scale", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: recipes that fit a 2-core CPU; gpu: all of Fashion-MNIST, more epochs (not run here)")
    p.add_argument("--out", default="runs/study", help="run folders; an unfinished run there resumes")
    p.add_argument("--results", help="the record (default minicastling/results/study.json, or study_196.json)")
    p.add_argument("--speed", action="store_true",
                   help="time each seed's trained, castled models against its twin on the test split (after the runs; "
                        "a quiet machine) and add the result to the record")
    p.add_argument("--reproduce", nargs=2, metavar=("ARM", "SEED"),
                   help="train one recorded run again from its recipe and compare its accuracy with the record's")
    p.set_defaults(run=study)
    p = commands.add_parser("demo", help="train, castle and check a CastlingAttention layer (~30 s on a CPU)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--form", choices=FORMS, default="official")
    p.add_argument("--conv", choices=["1d", "2d"], default="1d")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    p = commands.add_parser("bench", help="attention and model speed and memory against SDPA and the softmax twin")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small sizes: seconds, for a smoke test")
    p.add_argument("--out", default="results/bench.json", help="JSON results; the plot goes beside it as .png")
    p.set_defaults(run=bench)
    p = commands.add_parser("assignments", help="write student copies of the tutorials (solutions become stubs), "
                                                "plain or as an nbgrader course")
    p.add_argument("--out", required=True, type=Path, help="folder for the student notebooks, or the nbgrader course")
    p.add_argument("--format", choices=["plain", "nbgrader"], default="plain",
                   help="plain: student notebooks (default); nbgrader: a course folder with nbgrader_config.py and "
                        "one source assignment per tutorial, answers and autograded tests with points")
    p.add_argument("--tutorials", default=Path("tutorials"), type=Path, help="folder with the tutorials (default tutorials)")
    p.set_defaults(run=assignments)
    p = commands.add_parser("doctor", help="versions, device, budget mode and data cache: paste it into a bug report")
    p.set_defaults(run=doctor)
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    keep_freed_memory()  # this process is ours: page faults on freed tensors cost up to a fifth of a cpu run
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
