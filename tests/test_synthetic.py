"""The generated datasets: deterministic, the right shapes, and about what they claim to be about."""

import numpy as np
import pytest
import torch

from minicastling.datasets.synthetic import SHAPES, glyphs, same_different, stand_in


def test_stand_in_is_deterministic_and_cifar_shaped():
    a, b = stand_in(60, 20, seed=3), stand_in(60, 20, seed=3)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (60, 32, 32, 3) and a.x_train.dtype == np.uint8 and a.classes == SHAPES
    assert not np.array_equal(a.x_train, stand_in(60, 20, seed=4).x_train)
    assert stand_in(4, 2, size=48).x_train.shape == (4, 48, 48, 3)


def test_stand_in_cannot_be_told_apart_by_colour():
    """A classifier on each image's colour statistics (per-channel mean and spread) stays near chance."""
    from sklearn.linear_model import LogisticRegression

    dataset = stand_in(4000, 2000)

    def colour(images):
        pixels = images.reshape(len(images), -1, 3) / 255.0
        return np.concatenate([pixels.mean(axis=1), pixels.std(axis=1)], axis=1)  # (N, 6)

    classifier = LogisticRegression(max_iter=2000).fit(colour(dataset.x_train), dataset.y_train)
    assert classifier.score(colour(dataset.x_test), dataset.y_test) < 0.25  # chance is 0.10


def test_stand_in_shapes_differ_in_outline():
    """Every class is drawn: the same tilt, place and size give ten different masks."""
    from minicastling.datasets.synthetic import _inside

    coords = torch.linspace(-1.2, 1.2, 40)
    w, u = torch.meshgrid(coords, coords, indexing="ij")
    masks = torch.stack([_inside(shape, u, w) for shape in range(len(SHAPES))]).flatten(1)
    assert (masks.sum(1) > 40).all()
    differ = (masks[:, None] != masks[None]).sum(-1)  # (10, 10) pixels in which two shapes differ
    assert (differ + 1000 * torch.eye(10)).min() > 40


def test_glyphs_are_distinct_symmetric_and_equally_bright():
    words = glyphs(8, patch=4)
    assert words.shape == (8, 4, 4) and len({tuple(w.flatten().tolist()) for w in words}) == 8
    assert torch.equal(words, words.flip(-1))  # a horizontal flip keeps every glyph itself
    assert (words.sum((1, 2)) == 8).all()


def marked_cells(image: np.ndarray, patch: int = 4):
    """The cells holding a glyph: every pixel exactly black or white (noise almost never is)."""
    grid = image.shape[0] // patch
    cells = image[..., 0].reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3)
    pure = ((cells == 0) | (cells == 255)).all(axis=(2, 3))
    return [(r, c, cells[r, c]) for r, c in zip(*np.nonzero(pure))]


def test_same_different_labels_say_whether_the_two_glyphs_match():
    dataset = same_different(300, 50, seed=1)
    assert dataset.x_train.shape == (300, 24, 24, 1) and dataset.classes == ("different", "same")
    assert 0.4 < dataset.y_train.mean() < 0.6
    for image, label in zip(dataset.x_train, dataset.y_train):
        (r1, c1, a), (r2, c2, b) = marked_cells(image)
        assert abs(r1 - r2) >= 3 and abs(c1 - c2) >= 3  # half the 6 × 6 grid apart on both axes
        assert np.array_equal(a, b) == bool(label)


def test_same_different_is_deterministic_and_checks_its_size():
    a, b = same_different(20, 10, seed=5), same_different(20, 10, seed=5)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert same_different(4, 2, size=48).x_train.shape == (4, 48, 48, 1)
    wide = same_different(100, 10, size=32)  # an 8 × 8 grid: four cells apart
    assert all(abs(a[0] - b[0]) >= 4 and abs(a[1] - b[1]) >= 4 for a, b in (marked_cells(x)[:2] for x in wide.x_train))
    with pytest.raises(ValueError, match="multiple of patch=4"):
        same_different(4, 2, size=30)
