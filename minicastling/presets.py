"""Presets: one name (smoke, cpu, gpu) gives the model, the training recipe and the notebook budget.

DESIGN: Budgets. `smoke` runs in seconds (tests, CI), `cpu` in minutes on a laptop, `gpu` is the
full recipe. Recipe's own defaults *are* the cpu preset, and ViTConfig's defaults its model; smoke
and gpu say what they change. Notebooks read the budget from $MINICASTLING_BUDGET (tests set smoke;
the default is gpu with CUDA, else cpu) and size themselves with by_budget. Introduced in tutorial 06.
"""

import dataclasses
import math

from .extras.precision import PRECISIONS
from .extras.runtime import BUDGET_VARIABLE, BUDGETS, budget
from .model import ViTConfig, has_softmax_branch
from .schedule import AlphaSchedule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a training run does, the model included. Defaults: the cpu preset, tuned on Fashion-MNIST's
    first 50,000 training images against the last 10,000 (README, "Training")."""

    model: ViTConfig = ViTConfig()  # the network; image size, channels and classes come from the data
    alpha0: float = 1.0  # the softmax branch's starting weight (0: never on)
    alpha_shape: str = "cosine"  # AlphaSchedule shape: "cosine", "linear" or "step"
    alpha_hold: float = 0.0  # fraction of training during which α stays at alpha0 before it decays
    alpha_end: float = 0.75  # fraction of training at which α reaches exactly 0
    epochs: int = 4
    batch_size: int = 128  # the global batch: under torchrun each process takes its share
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.1
    crop_padding: int = 0  # random crops after this many zero pixels per side (0: none)
    flip: bool = True  # random horizontal flips (wrong for digits or text)
    augment: float = 0.0  # TrivialAugment's strength: 0 off, 1 its full ranges
    mixup: float = 0.0  # mixup's Beta(α, α); 0 off
    cutmix: float = 0.0  # cutmix's Beta(α, α); 0 off (with both on, each takes half the batches)
    ema: float = 0.0  # decay of an average of the weights, evaluated and castled instead; 0 off
    train_images: int | None = None  # the first N training images; None = all
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 on GPUs with native bf16, fp16 below, fp32 on the CPU) or forced
    compile: bool = False
    test_every_epoch: bool = True  # False: the test split only after the last epoch
    epoch_test_images: int | None = None  # the first N test images for each epoch's curves; None: all. The final
    # accuracies, before and after castling, always use the whole test split

    def __post_init__(self):
        problems = [
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "at least 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "at least 1"),
            (_finite(self.lr) and self.lr > 0, "lr", "a finite number above 0"),
            (_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0"),
            (_finite(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs", "a finite number >= 0"),
            (_finite(self.label_smoothing) and 0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
            (isinstance(self.crop_padding, int) and self.crop_padding >= 0, "crop_padding", "an int >= 0"),
            (_finite(self.augment) and self.augment >= 0, "augment", "a finite number >= 0"),
            (_finite(self.mixup) and self.mixup >= 0, "mixup", "a finite number >= 0"),
            (_finite(self.cutmix) and self.cutmix >= 0, "cutmix", "a finite number >= 0"),
            (_finite(self.ema) and 0 <= self.ema < 1, "ema", "in [0, 1)"),
            (self.train_images is None or (isinstance(self.train_images, int) and self.train_images >= 1),
             "train_images", "None (all) or at least 1"),
            (self.epoch_test_images is None or (isinstance(self.epoch_test_images, int) and self.epoch_test_images >= 1),
             "epoch_test_images", "None (all) or at least 1"),
            (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
        ]
        for ok, name, wanted in problems:
            if not ok:
                raise ValueError(f"{name} must be {wanted}; got {getattr(self, name)!r}")
        if self.train_images is not None and self.train_images < self.batch_size:
            raise ValueError(f"train_images must be at least one batch ({self.batch_size} images); got "
                             f"{self.train_images}: lower the batch size or use more images")
        AlphaSchedule(self.alpha0, self.alpha_hold, self.alpha_end, self.alpha_shape)  # raises on a bad schedule

    @property
    def fades_a_branch(self) -> bool:
        """Only an attention with a softmax branch (model.has_softmax_branch), and α₀ > 0, has one to fade."""
        return has_softmax_branch(self.model.attention) and self.alpha0 > 0

    def schedule(self):
        """α(t): the AlphaSchedule of a model with the branch, else 0 throughout."""
        if not self.fades_a_branch:
            return lambda progress: 0.0
        return AlphaSchedule(self.alpha0, self.alpha_hold, self.alpha_end, self.alpha_shape)

    @classmethod
    def from_dict(cls, fields: dict) -> "Recipe":
        """The recipe that dataclasses.asdict(recipe) wrote (a checkpoint's, a study record's)."""
        return cls(**{**fields, "model": ViTConfig(**fields["model"])})

    def replace(self, **changes) -> "Recipe":
        """A copy with fields changed; the model's fields (form, attention, dim, …) may be named directly."""
        model_fields = {field.name for field in dataclasses.fields(ViTConfig)}
        model_changes = {key: changes.pop(key) for key in list(changes) if key in model_fields}
        return dataclasses.replace(self, model=self.model.replace(**model_changes), **changes)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


PRESETS = {
    "smoke": Recipe(model=ViTConfig(dim=32, depth=2, num_heads=2), epochs=2, batch_size=64, lr=2e-3,
                    warmup_epochs=1.0, crop_padding=4, train_images=512),
    "cpu": Recipe(),
    # batch 256: a step's float32 estimate fits a 16 GiB T4 (memory.py); 100 epochs as SL-ViT's anchor
    "gpu": Recipe(model=ViTConfig(dim=256, depth=6, num_heads=8, patch_size=2, mlp_ratio=3.0, drop_path=0.1),
                  epochs=100, batch_size=256, lr=2e-3, warmup_epochs=5, crop_padding=4, augment=1.0, mixup=0.8,
                  cutmix=1.0, ema=0.9995, compile=True),
}


def get_recipe(preset: str, **changes) -> Recipe:
    """A preset's recipe with any field changed: get_recipe("cpu", form="official", epochs=2)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {list(PRESETS)}")
    return PRESETS[preset].replace(**changes)


def get_config(preset: str, **changes) -> ViTConfig:
    """A preset's model with any field changed: get_config("cpu", attention="softmax")."""
    return get_recipe(preset).model.replace(**changes)


def by_budget(smoke, cpu, gpu):
    """The value for the current budget: `n = by_budget(smoke=2, cpu=20, gpu=200)`."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[budget()]
