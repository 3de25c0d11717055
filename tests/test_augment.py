"""The gpu recipe's ingredients on the CPU: augmentations, mixup/cutmix, stochastic depth, the weight average."""

import pytest
import torch

from minicastling.extras.augment import OPERATIONS, apply_operation, mix, trivial_augment
from minicastling.train import WeightAverage
from minicastling.model import DropPath, ViT
from minicastling.presets import get_config


def batch(b=16, c=3, size=8, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_keeps_shape_and_range_and_does_nothing_at_zero_strength(name):
    images = batch()
    for magnitude in (0.3, -0.3, OPERATIONS[name]):
        out = apply_operation(name, images, torch.full((16,), magnitude))
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    if name not in ("autocontrast", "solarize", "posterize"):  # these three have no neutral magnitude 0
        torch.testing.assert_close(apply_operation(name, images, torch.zeros(16)), images, atol=1e-5, rtol=0)


def test_operations_do_what_their_names_say():
    images = batch()
    assert apply_operation("brightness", images, torch.full((16,), -0.5)).mean() < images.mean()
    grey = apply_operation("saturation", images, torch.full((16,), -1.0))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6)  # no colour left
    shifted = apply_operation("translate_x", images, torch.full((16,), 0.25))  # a quarter of 8 pixels: 2
    torch.testing.assert_close(shifted[..., 2:], images[..., :-2], atol=1e-5, rtol=0)
    assert (shifted[..., :2] == 0).all()
    assert torch.equal(apply_operation("solarize", images, torch.ones(16)), 1 - images)


def test_trivial_augment_repeats_under_a_seed_and_works_on_one_channel():
    images = batch(c=1)
    first = trivial_augment(images, torch.Generator().manual_seed(3))
    again = trivial_augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and not torch.equal(first, trivial_augment(images, torch.Generator().manual_seed(4)))
    assert first.shape == images.shape and not torch.equal(first, images)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_targets_sum_to_one_and_match_the_pixels(mixup, cutmix):
    images = batch(b=8)
    targets = torch.nn.functional.one_hot(torch.arange(8) % 4, 4).float()
    for seed in range(6):
        mixed, soft = mix(images, targets, torch.Generator().manual_seed(seed), mixup, cutmix)
        assert mixed.shape == images.shape and soft.shape == targets.shape
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        own = soft[torch.arange(8), torch.arange(8) % 4]  # the weight left on each image's own class
        from_self = (mixed - images.roll(1, 0)) / (images - images.roll(1, 0))  # λ per pixel where defined
        assert ((own >= 0) & (own <= 1)).all()
        if cutmix and not mixup:  # cutmix: the share of pixels kept is the weight on the own class
            kept = (mixed == images).float().mean((1, 2, 3))
            torch.testing.assert_close(kept, own, atol=0.02, rtol=0)
        elif mixup and not cutmix:
            torch.testing.assert_close(from_self.median(), own[0], atol=1e-4, rtol=0)


def test_no_mixing_returns_the_inputs_untouched():
    images, targets = batch(), torch.eye(16)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out, soft = mix(images, targets, generator, 0.0, 0.0)
    assert out is images and soft is targets and torch.equal(generator.get_state(), state)  # no draw at all


def test_drop_path_off_is_the_identity_and_on_drops_whole_images():
    x = torch.randn(64, 5, 3)
    assert DropPath(0.0).train()(x) is x and DropPath(0.5).eval()(x) is x
    torch.manual_seed(0)
    out = DropPath(0.5).train()(x)
    dropped = (out == 0).all(dim=(1, 2))
    assert 10 < dropped.sum() < 54  # about half the images
    torch.testing.assert_close(out[~dropped], 2 * x[~dropped])


def test_models_without_the_ingredients_draw_no_extra_random_numbers():
    torch.manual_seed(0)
    model = ViT(get_config("smoke")).train()
    state = torch.random.get_rng_state()
    model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_weight_average_follows_the_weights():
    torch.manual_seed(0)
    model = ViT(get_config("smoke"))
    average = WeightAverage(model, decay=0.5)
    before = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert average.current_decay() == 2 / 11  # the warm-up: min(0.5, (1 + 1)/(10 + 1))
    average.update(model)
    torch.testing.assert_close(average.model.head.weight, before + 9 / 11)
    for _ in range(100):
        average.update(model)
    assert average.current_decay() == 0.5 and average.updates == 101
    torch.testing.assert_close(average.model.head.weight, before + 1.0)  # the initial weights are forgotten
    restored = WeightAverage(ViT(get_config("smoke")), decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 101 and torch.equal(restored.model.head.weight, average.model.head.weight)
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(model, decay=1.0)
