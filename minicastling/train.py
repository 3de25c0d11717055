"""Training: AdamW with warm-up and cosine decay, the α schedule, castling at the end.

Castling-ViT's recipe made explicit: train with the auxiliary softmax branch weighted by α(t),
α reaches 0 before the end, then castle() and evaluate the O(N) model. Checkpoints are written
atomically every epoch and a run resumes where it stopped, ending exactly where an uninterrupted
run with the same seed ends. The precision fits the device (precision.py); the gpu recipe adds the
ingredients small ViTs need on small data (augment.py, stochastic depth, the weight average below); under
torchrun each process trains on its share of every batch (distributed.py). What a run measures of its model
(accuracy, the branch's use, MACs) is measure.py's. Introduced in tutorial 06.
"""

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .castling import build_fast_path, castle, paths_run, set_alpha
from .datasets import ImageDataset, load_dataset
from .datasets.batches import DeviceData
from .extras import distributed
from .extras.augment import mix
from .extras.files import InputError, atomic_write, save_json, shown
from .extras.precision import Precision, training_precision
from .extras.runtime import describe
from .measure import castled_measures, count_parameters, epoch_tests, evaluate
from .model import ViT
from .presets import Recipe


def learning_rate(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up over warmup_epochs, then cosine decay to 0."""
    warmup = max(1, round(recipe.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


def training_step(model, optimizer, precision: Precision, images, targets, label_smoothing: float = 0.0):
    """One optimizer step: forward under the precision's autocast, cross-entropy on labels or class
    probabilities (mixup/cutmix), backward through the gradient scaler, step. Returns (loss, logits)."""
    with precision.autocast():
        logits = model(images)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss.detach(), logits.detach()


def decay_groups(model, weight_decay: float):
    """AdamW's parameter groups: weight decay on matrices and conv kernels only, not on norms, biases or
    positions (tutorial 06 writes them out)."""
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and p is not model.pos else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class WeightAverage:
    """An exponential moving average of a model's weights, the optional last ingredient of the gpu recipe:
    update() after each step, `.model` to evaluate or castle.

    After the t-th optimizer step: w̄ ← d_t · w̄ + (1 − d_t) · w with d_t = min(decay, (1 + t)/(10 + t)),
    the warm-up of the decay that TensorFlow's and timm's weight averages use: early on the average follows
    the weights closely, so that a short run's average is not dominated by the random initial weights
    (with a fixed decay of 0.995, 300 steps would leave them a share of 0.995³⁰⁰ ≈ 22 %). The average often
    generalises better than the last weights; the run then evaluates, castles and saves the average. Buffers (BatchNorm's
    running statistics) are copied, not averaged; castling's α is set on the average by the training loop, with the
    model's, so that the average fades its softmax branch exactly when the trained model does.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), e.g. 0.999; got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """d_t for the next update: min(decay, (1 + t)/(10 + t))."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        averaged = dict(self.model.named_parameters())
        for name, weight in model.named_parameters():
            averaged[name].lerp_(weight.detach(), 1.0 - decay)
        own_buffers = dict(self.model.named_buffers())
        for name, buffer in model.named_buffers():
            own_buffers[name].copy_(buffer)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


@dataclasses.dataclass
class Run:
    """Everything one training run keeps between epochs."""

    recipe: Recipe
    out: Path
    dataset: ImageDataset
    device: torch.device
    process: distributed.Process
    precision: Precision
    model: torch.nn.Module  # the ViT itself: α, state dicts and castling act on it
    net: torch.nn.Module  # what a step calls: the model, wrapped for DistributedDataParallel, compiled
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    train_data: DeviceData
    test: list  # the test split's batches, normalised once: [(images, labels), …]
    epoch_test: list  # what each epoch's curves are measured on: those batches, or the first images' batches
    probe: torch.Tensor  # a fixed batch of 256 test images on which the branch's use is logged
    schedule: object
    steps_per_epoch: int
    identity: dict
    history: list
    say: object
    description: str  # the device and versions, one line (runtime.describe)
    paths: list  # the code each castling layer runs (castling.choose_path); [] without one

    def set_alpha(self, alpha: float) -> None:
        """α on the trained model and on the weights that are evaluated (the average, if any)."""
        set_alpha(self.model, alpha)
        if self.average is not None:
            set_alpha(self.average.model, alpha)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights a run reports and ships: the average if there is one."""
        return self.average.model if self.average is not None else self.model


def prepare(recipe: Recipe, out: Path, dataset, device, restart: bool, progress: bool, say) -> Run:
    """Data, model, optimizer and schedule for a run, resumed from out/checkpoint.pt when it is this run's."""
    process, device = distributed.start(device)
    if not process.main:
        say = _silent
    description = describe(device)
    say(description)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, progress=progress and process.main)
    say(f"dataset: {dataset}")
    config = recipe.model.replace(image_size=dataset.image_size, channels=dataset.channels,
                                  num_classes=dataset.num_classes)
    torch.manual_seed(recipe.seed)  # the initial weights depend on the seed alone (all devices)
    model = ViT(config).to(device)
    built, paths = build_fast_path(model, device), paths_run(model, device)
    if built:
        say(built)
    if recipe.compile and config.path == "auto":  # under torch.compile "auto" means the compiled readable form
        paths = ["readable (compiled)" if path == "library" else path for path in paths]
    optimizer = torch.optim.AdamW(decay_groups(model, recipe.weight_decay), lr=recipe.lr)
    average = WeightAverage(model, recipe.ema) if recipe.ema else None
    precision = training_precision(device, recipe.precision)
    if device.type == "cuda":
        from .memory import check_fits

        say(check_fits(config, recipe.batch_size // process.world_size, device, precision.name))
    train_data = DeviceData(dataset.x_train[: recipe.train_images], dataset.y_train[: recipe.train_images], device)
    test_data = DeviceData(dataset.x_test, dataset.y_test, device, train_data.mean, train_data.std)
    test = test_data.split(1000, shard=process)
    epoch_test = test if recipe.epoch_test_images is None else test_data.split(1000, process, recipe.epoch_test_images)
    probe = test_data.split(256)[0][0]
    steps_per_epoch = len(train_data) // recipe.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"{dataset.name} has {len(train_data)} training images, fewer than one batch of "
                         f"{recipe.batch_size}; lower --batch-size")
    if recipe.batch_size % process.world_size:
        raise InputError(f"--batch-size {recipe.batch_size} does not split evenly over {process.world_size} processes; "
                         f"pick a multiple of {process.world_size}")
    identity = {"recipe": dataclasses.asdict(recipe), "dataset": dataset.name, "train_images": len(train_data),
                "world_size": process.world_size}
    history = []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not restart:
        state = read_checkpoint(checkpoint, identity, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None:
            average.load_state_dict(state["average"])
        precision.scaler.load_state_dict(state["scaler"])
        history = state["history"]
        say(f"resuming from {checkpoint.name} after epoch {len(history)} of {recipe.epochs}")
    net = distributed.wrap(model, process, device)
    net = torch.compile(net) if recipe.compile else net
    say(f"model: dim {config.dim}, depth {config.depth}, {config.num_heads} heads, {config.attention} attention"
        + (f" ({config.form} form, path {config.path})" if paths else "")
        + f", {count_parameters(model):,} parameters, "
        f"{config.tokens} tokens; {len(train_data):,} training images, {recipe.epochs} epochs; precision {precision.name}"
        + (f"; {process.world_size} processes" if process.world_size > 1 else ""))
    return Run(recipe, out, dataset, device, process, precision, model, net, optimizer, average, train_data, test,
               epoch_test, probe, recipe.schedule(), steps_per_epoch, identity, history, say, description, paths)


def read_checkpoint(path: Path, identity: dict, device) -> dict:
    """The state saved in `path` if it is this run's; else InputError saying what to do. The file is kept."""
    keep = "it is kept as it is; run again with --restart to start over (which replaces it), or choose another --out"
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # a damaged zip, a truncated pickle, a file of something else: all unreadable
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{shown(path)} is damaged and cannot be read ({reason}); {keep}") from None
    if not isinstance(state, dict) or "identity" not in state:
        raise InputError(f"{shown(path)} is not a minicastling checkpoint; {keep}")
    differences = differing(state["identity"], identity)
    if differences:
        name, (theirs, ours) = differences[0]
        more = f" (and {len(differences) - 1} more settings)" if len(differences) > 1 else ""
        raise InputError(f"{shown(path)} belongs to another run: {name} is {theirs!r} there and {ours!r} now{more}; "
                         f"{keep}")
    return state


def differing(saved: dict, now: dict, prefix: str = "") -> list:
    """[(setting, (saved value, value now))] for every leaf where two nested dicts differ, "model.dim" style."""
    found = []
    for key in list(now) + [k for k in saved if k not in now]:
        a, b = saved.get(key), now.get(key)
        name = f"{prefix}{key}" if prefix not in ("", "recipe.") else key
        if isinstance(a, dict) and isinstance(b, dict):
            found += differing(a, b, f"{name}.")
        elif a != b:
            found.append((name, (a, b)))
    return found


def _silent(*args, **kwargs) -> None:
    pass


def run_epoch(run: Run, epoch: int, progress: bool) -> dict:
    """One pass over the training split; returns the epoch's row of metrics.jsonl."""
    recipe, started = run.recipe, time.perf_counter()
    total_steps = recipe.epochs * run.steps_per_epoch
    torch.manual_seed(recipe.seed * 100_003 + epoch)  # an epoch's randomness depends on (seed, epoch) only
    generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
    run.model.train()
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    batches = run.train_data.batches(recipe.batch_size, shuffle=True, augment=True, generator=generator,
                                     drop_last=True, crop_padding=recipe.crop_padding, flip=recipe.flip,
                                     strength=recipe.augment, shard=run.process)
    bar = tqdm(batches, total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs}",
               disable=not (progress and run.process.main), leave=False)
    for i, (images, labels) in enumerate(bar):
        step = epoch * run.steps_per_epoch + i
        run.set_alpha(run.schedule(step / total_steps))
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step, total_steps, run.steps_per_epoch)
        targets = labels
        if recipe.mixup or recipe.cutmix:
            one_hot = F.one_hot(labels, run.dataset.num_classes).float()
            images, targets = mix(images, one_hot, generator, recipe.mixup, recipe.cutmix)
        loss, logits = training_step(run.net, run.optimizer, run.precision, images, targets, recipe.label_smoothing)
        if run.average is not None:
            run.average.update(run.model)
        loss_sum += loss
        correct += (logits.argmax(-1) == labels).sum()
    alpha = run.schedule((epoch + 1) / recipe.epochs)  # epoch_tests sets it: the model ends the epoch with it
    row = {"epoch": epoch + 1,
           "train_loss": run.process.sum(loss_sum).item() / run.process.world_size / run.steps_per_epoch,
           "train_acc": 100.0 * run.process.sum(correct).item() / (run.steps_per_epoch * recipe.batch_size),
           "alpha_end_of_epoch": alpha, **epoch_tests(run, alpha, recipe.test_every_epoch or epoch + 1 == recipe.epochs),
           "lr_end_of_epoch": run.optimizer.param_groups[0]["lr"]}
    return {**row, "seconds": time.perf_counter() - started}


def train(recipe: Recipe, out: str | Path, dataset: ImageDataset | str = "auto", device: str = "auto",
          restart: bool = False, progress: bool = True, on_epoch_end=None, quiet: bool = False) -> dict:
    """Train, castle, evaluate; write out/checkpoint.pt, out/metrics.jsonl, out/metrics.json, out/model.pt.

    Resumes from out/checkpoint.pt when it holds the same recipe (restart=True starts over).
    on_epoch_end(epoch, history) is called after each epoch's checkpoint (tests use it to interrupt).
    Returns the metrics written to metrics.json. quiet=True prints nothing (the study's workers).
    Under torchrun, every process runs this; rank 0 alone prints and writes.
    """
    started = time.perf_counter()
    run = prepare(recipe, Path(out), dataset, device, restart, progress, _silent if quiet else print)
    resumed_from = len(run.history)
    earlier = sum(row["seconds"] for row in run.history)  # a resumed run's time is its epochs' time, all of it
    try:
        for epoch in range(len(run.history), recipe.epochs):
            run.history.append(run_epoch(run, epoch, progress))
            report(run)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, run.history)
        return finish(run, earlier + time.perf_counter() - started, resumed_from)
    finally:
        distributed.stop(run.process)


def read_history(out: str | Path) -> list:
    """The per-epoch rows a run wrote to out/metrics.jsonl."""
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def report(run: Run) -> None:
    """Print the epoch's line and, on rank 0, write metrics.jsonl and the checkpoint atomically."""
    row, recipe = run.history[-1], run.recipe
    branch = f"α {row['alpha_end_of_epoch']:.3f}, mask kept {row['mask_density']:.1%}, " if recipe.fades_a_branch else ""
    test = "" if row["test_acc"] is None else f"test {row['test_acc']:.1f}%, "
    run.say(f"epoch {row['epoch']:>3}/{recipe.epochs}: loss {row['train_loss']:.3f}, train {row['train_acc']:.1f}%, "
            f"{test}{branch}{row['seconds']:.1f} s")
    if run.process.main:
        atomic_write(run.out / "metrics.jsonl",
                     lambda f: f.write("".join(json.dumps(r) + "\n" for r in run.history).encode()))
        state = {"identity": run.identity, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "history": run.history, "epoch": len(run.history),
                 "average": None if run.average is None else run.average.state_dict(),
                 "scaler": run.precision.scaler.state_dict()}
        atomic_write(run.out / "checkpoint.pt", lambda f: torch.save(state, f))
    run.process.wait_for_all()


def finish(run: Run, seconds: float, resumed_from: int = 0) -> dict:
    """Evaluate, castle, evaluate again, count MACs and how sharp the castled model's attention is;
    write metrics.json and the castled model (rank 0)."""
    recipe, model = run.recipe, run.evaluated
    accuracy_before = evaluate(model, run.test, run.precision, run.process)
    measured = castled_measures(model, run.probe, recipe.alpha0 if recipe.fades_a_branch else 0.0)
    castle(model)
    accuracy_after = evaluate(model, run.test, run.precision, run.process)
    metrics = {
        "dataset": run.dataset.name, "model": dataclasses.asdict(model.config), "attention": model.config.attention,
        "epochs": recipe.epochs, "train_images": len(run.train_data), "device": run.description,
        "precision": run.precision.name, "world_size": run.process.world_size, "parameters": count_parameters(model),
        "test_acc_before_castling": accuracy_before, "test_acc_after_castling": accuracy_after, **measured,
        "weights": "average" if run.average is not None else "last",
        "attention_path": {"asked": recipe.model.path, "ran": run.paths},
        "wall_time_s": seconds, "resumed_from_epoch": resumed_from, "recipe": dataclasses.asdict(recipe),
        "history": "metrics.jsonl",
    }
    if run.process.main:
        config = dataclasses.asdict(model.config)
        atomic_write(run.out / "model.pt", lambda f: torch.save({"config": config, "model": model.state_dict()}, f))
        save_json(run.out / "metrics.json", metrics)
    run.process.wait_for_all()
    before, after = measured["macs_before_castling"], measured["macs_after_castling"]
    run.say(f"test accuracy before castling {accuracy_before:.2f}%, after castling {accuracy_after:.2f}%")
    run.say(f"MACs per image: {before / 1e6:.1f}M while training (softmax branch on), {after / 1e6:.1f}M castled "
            f"(inference), {after / before:.2f}× the training-time model's" if before != after else
            f"MACs per image: {after / 1e6:.1f}M (no softmax branch to castle)")
    run.say(f"wall time {seconds:.0f} s; metrics in {shown(run.out / 'metrics.json')}")
    return metrics
