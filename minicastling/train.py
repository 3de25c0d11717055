"""Training: AdamW with warm-up and cosine decay, the α schedule, castling at the end.

Castling-ViT's recipe made explicit: train with the auxiliary softmax branch weighted by α(t),
α reaches 0 before the end, then castle() and evaluate the O(N) model. Checkpoints are written
atomically every epoch and a run resumes where it stopped, ending exactly where an uninterrupted
run with the same seed ends. Introduced in tutorial 06.
"""

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attention import set_alpha
from .data import DeviceData, ImageDataset, load_dataset
from .files import atomic_write, save_json, shown
from .model import ViT, castle, count_macs, count_parameters, get_config, mask_density
from .runtime import describe, pick_device, seed_everything
from .schedule import AlphaSchedule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a training run does. Presets in RECIPES; `python -m minicastling train` overrides fields."""

    model: str = "cpu"  # a model preset of minicastling.model.PRESETS
    attention: str = "castling"  # "castling", "linear-angular", "softmax" (the twin) or a zoo kind
    form: str = "kernel"  # linear-angular form: "kernel" or "official"
    conv: str | None = "1d"  # DWConv branch: "1d", "2d" or None
    alpha0: float = 1.0  # the softmax branch's starting weight (0: never on)
    alpha_shape: str = "cosine"  # AlphaSchedule shape: "cosine", "linear" or "step"
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    alpha_end: float = 0.75  # fraction of training at which α reaches exactly 0
    crop_padding: int = 4  # random crops after this many zero pixels per side
    flip: bool = True  # random horizontal flips (wrong for digits or text)
    train_images: int | None = 10000  # a subset keeps CPU runs short; None = all
    seed: int = 0
    compile: bool = False


RECIPES = {
    "smoke": Recipe(model="smoke", epochs=2, batch_size=64, train_images=512),
    "cpu": Recipe(model="cpu", epochs=6, batch_size=128, train_images=10000),
    "gpu": Recipe(model="gpu", epochs=60, batch_size=512, lr=3e-3, warmup_epochs=3, train_images=None, compile=True),
}


def get_recipe(preset: str, **overrides) -> Recipe:
    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(RECIPES)}")
    return dataclasses.replace(RECIPES[preset], **overrides)


def learning_rate(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up over warmup_epochs, then cosine decay to 0."""
    warmup = max(1, round(recipe.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


@torch.no_grad()
def evaluate(model, data: DeviceData, batch_size: int = 1000) -> float:
    """Top-1 accuracy (%) on a split."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=data.labels.device)
    for images, labels in data.batches(batch_size):
        with _autocast(images.device):
            correct += (model(images).argmax(dim=-1) == labels).sum()
    model.train(was_training)
    return 100.0 * correct.item() / len(data)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _decay_groups(model, weight_decay: float):
    """Weight decay on matrices and conv kernels only, not on norms, biases or positions."""
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and p is not model.pos else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train(recipe: Recipe, out: str | Path, dataset: ImageDataset | str = "auto", device: str = "auto",
          restart: bool = False, progress: bool = True, on_epoch_end=None) -> dict:
    """Train, castle, evaluate; write out/checkpoint.pt, out/metrics.jsonl, out/metrics.json, out/model.pt.

    Resumes from out/checkpoint.pt when it holds the same recipe (restart=True starts over).
    on_epoch_end(epoch, history) is called after each epoch's checkpoint (tests use it to interrupt).
    Returns the metrics written to metrics.json.
    """
    started = time.perf_counter()
    out, device = Path(out), pick_device(device)
    print(describe(device))
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, progress=progress)
    print(f"dataset: {dataset}")
    config = get_config(recipe.model, attention=recipe.attention, form=recipe.form, conv=recipe.conv,
                        image_size=dataset.image_size, channels=dataset.channels, num_classes=dataset.num_classes)
    seed_everything(recipe.seed)
    model = ViT(config).to(device)
    optimizer = torch.optim.AdamW(_decay_groups(model, recipe.weight_decay), lr=recipe.lr)
    subset = slice(0, recipe.train_images)
    train_data = DeviceData(dataset.x_train[subset], dataset.y_train[subset], device)
    test_data = DeviceData(dataset.x_test, dataset.y_test, device, train_data.mean, train_data.std)
    steps_per_epoch = len(train_data) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_data)} training images are fewer than one batch of {recipe.batch_size}; "
                         "lower --batch-size")
    total_steps = recipe.epochs * steps_per_epoch
    castling = recipe.attention == "castling" and recipe.alpha0 > 0  # only then is there a branch to fade
    schedule = (AlphaSchedule(alpha0=recipe.alpha0, end=recipe.alpha_end, shape=recipe.alpha_shape) if castling
                else (lambda progress: 0.0))
    history, first_epoch = [], 0
    checkpoint = out / "checkpoint.pt"
    identity = {"recipe": dataclasses.asdict(recipe), "dataset": dataset.name, "train_images": len(train_data)}
    if checkpoint.exists() and not restart:
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["identity"] != identity:
            raise RuntimeError(f"{shown(checkpoint)} belongs to a different run ({state['identity']}); "
                               "use another --out, or --restart to overwrite it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, first_epoch = state["history"], state["epoch"]
        print(f"resuming from {checkpoint.name} after epoch {first_epoch} of {recipe.epochs}")
    print(f"model: {recipe.model} preset, {recipe.attention} attention, {count_parameters(model):,} parameters, "
          f"{config.tokens} tokens; {len(train_data):,} training images, {recipe.epochs} epochs")
    step_model = torch.compile(model) if recipe.compile else model
    probe = next(test_data.batches(256))[0]  # a fixed batch on which the mask's density is logged

    for epoch in range(first_epoch, recipe.epochs):
        epoch_start = time.perf_counter()
        seed_everything(recipe.seed * 100_003 + epoch)  # an epoch's randomness depends on (seed, epoch) only
        generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        batches = train_data.batches(recipe.batch_size, shuffle=True, augment=True, generator=generator,
                                     drop_last=True, crop_padding=recipe.crop_padding, flip=recipe.flip)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not progress,
                   leave=False)
        for i, (images, labels) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            set_alpha(model, schedule(step / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step, total_steps, steps_per_epoch)
            with _autocast(device):
                logits = step_model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(-1) == labels).sum()
        alpha = schedule((epoch + 1) / recipe.epochs)
        set_alpha(model, alpha)
        seen = steps_per_epoch * recipe.batch_size
        history.append({"epoch": epoch + 1, "train_loss": loss_sum.item() / steps_per_epoch,
                        "train_acc": 100.0 * correct.item() / seen, "test_acc": evaluate(model, test_data),
                        "alpha_end_of_epoch": alpha,
                        "mask_density": mask_density(model, probe) if castling else None,
                        "lr_end_of_epoch": optimizer.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - epoch_start})
        row = history[-1]
        branch = f"α {row['alpha_end_of_epoch']:.3f}, mask kept {row['mask_density']:.1%}, " if castling else ""
        print(f"epoch {row['epoch']:>3}/{recipe.epochs}: loss {row['train_loss']:.3f}, train {row['train_acc']:.1f}%, "
              f"test {row['test_acc']:.1f}%, {branch}{row['seconds']:.1f} s")
        atomic_write(out / "metrics.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in history).encode()))
        state = {"identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "history": history, "epoch": epoch + 1}
        atomic_write(checkpoint, lambda f: torch.save(state, f))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)

    set_alpha(model, schedule(1.0))  # 0: the branch is gone before castling
    return finish(model, config, recipe, dataset, test_data, len(train_data), out, device,
                  time.perf_counter() - started)


def finish(model, config, recipe, dataset, test_data, train_images, out, device, seconds) -> dict:
    """Evaluate, castle, evaluate again, count MACs, write metrics.json and the castled model."""
    accuracy_before = evaluate(model, test_data)
    with_branch = copy.deepcopy(model).cpu()  # the training-time model: softmax branch on
    set_alpha(with_branch, recipe.alpha0 if recipe.attention == "castling" else 0.0)
    macs_before = count_macs(with_branch)
    castle(model)
    accuracy_after = evaluate(model, test_data)
    macs_after = count_macs(copy.deepcopy(model).cpu())
    metrics = {
        "dataset": dataset.name, "preset": recipe.model, "attention": recipe.attention, "epochs": recipe.epochs,
        "train_images": train_images, "device": describe(device),
        "parameters": count_parameters(model),
        "test_acc_before_castling": accuracy_before, "test_acc_after_castling": accuracy_after,
        "macs_before_castling": macs_before, "macs_after_castling": macs_after,
        "mac_reduction": macs_before / macs_after, "wall_time_s": seconds, "recipe": dataclasses.asdict(recipe),
        "history": "metrics.jsonl",
    }
    atomic_write(out / "model.pt", lambda f: torch.save({"config": dataclasses.asdict(config),
                                                          "model": model.state_dict()}, f))
    save_json(out / "metrics.json", metrics)
    print(f"test accuracy before castling {accuracy_before:.2f}%, after castling {accuracy_after:.2f}%")
    if macs_before != macs_after:
        print(f"MACs per image: {macs_before / 1e6:.1f}M with the softmax branch (training), "
              f"{macs_after / 1e6:.1f}M castled (inference): {macs_before / macs_after:.2f}× fewer")
    else:
        print(f"MACs per image: {macs_after / 1e6:.1f}M (no softmax branch to castle)")
    print(f"wall time {seconds:.0f} s; metrics in {shown(out / 'metrics.json')}")
    return metrics
