"""An exponential moving average of a model's weights, the optional last ingredient of the gpu recipe.

After the t-th optimizer step: w̄ ← d_t · w̄ + (1 − d_t) · w with d_t = min(decay, (1 + t)/(10 + t)),
the warm-up of the decay that TensorFlow's and timm's weight averages use: early on the average follows
the weights closely, so that a short run's average is not dominated by the random initial weights
(with a fixed decay of 0.995, 300 steps would leave them a share of 0.995³⁰⁰ ≈ 22 %). The average often
generalises better than the last weights; the run then evaluates, castles and saves the average. Buffers (BatchNorm's
running statistics) are copied, not averaged; castling's α is set on the average by the training loop, with the
model's, so that the average fades its softmax branch exactly when the trained model does.
"""

import copy

import torch
from torch import nn


class WeightAverage:
    """An averaged copy of `model`; update() after each step, `.model` to evaluate or castle."""

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
