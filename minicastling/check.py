"""Exercise checkers: your function beside minicastling's reference, on random cases, in plain words.

Every tutorial ends with exercises that each ask for one function; `check.NAME(your_function)` runs
it on random inputs next to the reference and says what differs: the type, the shape, the values
(and where), the gradient, an input changed in place, or an N × N matrix where O(N) was asked for.
A pass prints one line. A failure raises CheckFailed, whose message is the whole story; notebooks
show it without a traceback. `EXERCISES` lists them all with their hints (which the student copies
of `python -m minicastling assignments` put into their stubs).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


class CheckFailed(Exception):
    """A checker's verdict: what was wrong, where, and what to try."""

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback
        return ["CheckFailed: " + str(self)]


@dataclass(frozen=True)
class Exercise:
    tutorial: str
    number: int
    name: str
    hint: str

    @property
    def label(self) -> str:
        return f"Exercise {self.tutorial}.{self.number} ({self.name})"


EXERCISES: dict[str, Exercise] = {}  # by the name of the function the student writes


def exercise(tutorial: str, number: int, hint: str):
    """Register a checker under its own name, which is also the name of the function it checks.

    The checker is written as checker(ex, fn) and called as check.NAME(fn): ex is its Exercise.
    """
    def register(checker):
        entry = Exercise(tutorial, number, checker.__name__, hint)
        EXERCISES[entry.name] = entry

        def run(fn) -> None:
            checker(entry, fn)

        run.__name__, run.__qualname__, run.__doc__ = checker.__name__, checker.__qualname__, checker.__doc__
        return run
    return register


def for_tutorial(tutorial: str) -> list:
    return sorted((e for e in EXERCISES.values() if e.tutorial == tutorial), key=lambda e: e.number)


# ---------------------------------------------------------------------------------------------
# The machinery every checker shares

def describe(case: dict) -> str:
    """The inputs of a case as a person reads them: `q (2, 3, 5, 4), threshold=0.1`."""
    parts = []
    for name, value in case.items():
        if isinstance(value, torch.Tensor):
            parts.append(f"{name} {tuple(value.shape)}")
        elif callable(value):
            parts.append(f"{name}={getattr(value, '__name__', 'a function')}")
        elif isinstance(value, list):
            parts.append(f"{name} (a list of {len(value)})")
        else:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


def call(ex: Exercise, fn, case: dict):
    """fn(**case), with everything that can go wrong on the way said in words."""
    if not callable(fn):
        raise CheckFailed(f"{ex.label}: pass your function itself, as in check.{ex.name}({ex.name}); "
                          f"got a {type(fn).__name__}")
    originals = {k: v.detach().clone() for k, v in case.items() if isinstance(v, torch.Tensor)}
    try:
        out = fn(**case)
    except NotImplementedError:
        raise CheckFailed(f"{ex.label} is not written yet: replace the `raise NotImplementedError` line "
                          f"with your code, run that cell, then this one.\nHint: {ex.hint}") from None
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug, reported with the inputs that triggered it
        advice = ""
        if isinstance(error, TypeError) and "argument" in str(error):
            advice = f"\nKeep the parameter names of the exercise's stub: the checker calls {ex.name}({', '.join(case)})."
        raise CheckFailed(f"{ex.label}: your function raised {type(error).__name__}: {error}\n"
                          f"It was called with {describe(case)}.{advice}") from None
    for name, before in originals.items():
        if not torch.equal(case[name].detach(), before) and not _same_nan(case[name].detach(), before):
            raise CheckFailed(f"{ex.label}: your function changed its input `{name}` in place "
                              f"(called with {describe(case)}). Work on new tensors (x = x / n, not x /= n): "
                              "the caller still needs its input.")
    return out


def _same_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.is_floating_point() and torch.equal(torch.nan_to_num(a, 1.0), torch.nan_to_num(b, 1.0))


def _index(flat_index: int, shape) -> tuple:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), tuple(shape)))


def same_tensor(ex: Exercise, got, expected: torch.Tensor, case: dict, rtol: float, atol: float,
                what: str = "your output") -> None:
    """got ≈ expected, or CheckFailed saying how it is not: type, shape, dtype, NaN, values."""
    where = f"for {describe(case)}"
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{ex.label}: {what} should be a torch.Tensor of shape {tuple(expected.shape)}; "
                          f"got a {type(got).__name__} {where}.")
    if got.shape != expected.shape:
        advice = ""
        if got.numel() == expected.numel():
            advice = " It has the right number of entries in another arrangement: check the order of your axes (a transpose?)."
        elif got.dim() != expected.dim():
            advice = (" It has a different number of axes: keep every leading (batch, head) axis, and write the "
                      "function for any number of them (index from the end: dim=-1, -2).")
        raise CheckFailed(f"{ex.label}: {what} has the wrong shape {where}: expected {tuple(expected.shape)}, "
                          f"got {tuple(got.shape)}.{advice}")
    if expected.is_floating_point() and got.dtype != expected.dtype:
        raise CheckFailed(f"{ex.label}: {what} is {got.dtype} but should be {expected.dtype} like the inputs "
                          f"({where}). A tensor you created has another dtype: make it with dtype=x.dtype.")
    if expected.is_floating_point():
        broken = ~torch.isfinite(got) & torch.isfinite(expected)
        if broken.any():
            first = _index(int(broken.flatten().nonzero()[0]), got.shape)
            raise CheckFailed(
                f"{ex.label}: {what} has {int(broken.sum())} NaN or infinite entries {where}, the first at index "
                f"{first} (expected {expected[first].item():.6g}). Usual causes: dividing by a zero norm or sum, "
                "log(0), 0 · log(0), or arccos of a value a rounding error above 1 (clamp it).")
        close = torch.isclose(got.double(), expected.double(), rtol=rtol, atol=atol)
    else:
        close = got == expected
    if not close.all():
        difference = (got.double() - expected.double()).abs()
        worst = _index(int(difference.flatten().argmax()), got.shape)
        message = (f"{ex.label}: {what} has the right shape but wrong values {where}: {int((~close).sum())} of "
                   f"{close.numel()} entries are off; the largest difference is at index {worst}: expected "
                   f"{expected[worst].item():.6g}, got {got[worst].item():.6g}.")
        factor = _constant_factor(got, expected)
        if factor is not None:
            message += (f" Everywhere, yours is the reference times {factor:.4g}: a scale factor is missing or "
                        "extra (√d, π, ½, a count?).")
        raise CheckFailed(message)


def _constant_factor(got: torch.Tensor, expected: torch.Tensor):
    if not expected.is_floating_point() or not got.is_floating_point():
        return None
    e, g = expected.double().flatten(), got.double().flatten()
    if e.norm() == 0:
        return None
    factor = float((g @ e) / (e @ e))
    if abs(factor - 1) > 1e-3 and torch.allclose(g, factor * e, rtol=1e-4, atol=1e-6):
        return factor
    return None


def same_gradients(ex: Exercise, fn, reference, case: dict, differentiable, rtol: float, atol: float) -> None:
    """The gradients of Σ w · output with respect to each differentiable input match the reference's."""
    def gradients(function, is_student):
        inputs = {k: (v.detach().clone().requires_grad_(k in differentiable) if isinstance(v, torch.Tensor) else v)
                  for k, v in case.items()}
        out = call(ex, function, inputs) if is_student else function(**inputs)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return None
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
        (out * weight).sum().backward()
        return {k: inputs[k].grad for k in differentiable}

    expected, got = gradients(reference, False), gradients(fn, True)
    if got is None:
        raise CheckFailed(f"{ex.label}: your values are right, but no gradient flows through your function "
                          f"(for {describe(case)}): somewhere the computation left autograd — .detach(), .item(), "
                          ".numpy(), torch.tensor(...) of a tensor, or torch.no_grad(). Training needs it.")
    for name in differentiable:
        if got[name] is None:
            raise CheckFailed(f"{ex.label}: your values are right, but no gradient reaches `{name}` "
                              f"(for {describe(case)}): part of the computation on `{name}` was detached.")
        same_tensor(ex, got[name], expected[name], case, rtol, atol, what=f"the gradient with respect to `{name}`")


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates."""

    def __init__(self):
        super().__init__()
        self.shape, self.numel = (), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.numel:
                self.shape, self.numel = tuple(tensor.shape), tensor.numel()
        return out


def linear_in_tokens(ex: Exercise, fn, tokens: int = 2048, head_dim: int = 4) -> None:
    """Fails if fn builds any tensor with N² entries for N tokens: the thing O(N) attention avoids."""
    g = torch.Generator().manual_seed(3)
    case = {name: torch.randn(1, 1, tokens, head_dim, generator=g) for name in ("q", "k", "v")}
    with torch.no_grad(), _LargestTensor() as largest:
        call(ex, fn, case)
    if largest.numel >= tokens * tokens:
        raise CheckFailed(f"{ex.label}: your values are right, but for N = {tokens} tokens your function built a "
                          f"tensor of shape {largest.shape} ({largest.numel:,} entries, N² = {tokens * tokens:,}): "
                          "that is the O(N²) matrix this exercise avoids. Multiply keys with values first "
                          "(associativity), so no tensor has a token axis twice.")


def compare(ex: Exercise, fn, reference, cases, differentiable=(), rtol=1e-4, atol=1e-5) -> None:
    """Values on every case, then gradients on every case that has differentiable inputs."""
    for case in cases:
        same_tensor(ex, call(ex, fn, case), reference(**case), case, rtol, atol)
    for case in cases:
        if differentiable and all(case[name].is_floating_point() for name in differentiable):
            same_gradients(ex, fn, reference, case, differentiable, rtol * 10, atol * 10)


def passed(ex: Exercise, what: str) -> None:
    print(f"✓ {ex.label} passed: {what}")


def _randn(*shape, generator, scale=1.0):
    return torch.randn(*shape, generator=generator) * scale


def _qk_cases(seed: int, scale: float = 1.0) -> list:
    """The q, k of _qkv_cases, for exercises on attention weights rather than outputs."""
    return [{"q": case["q"], "k": case["k"]} for case in _qkv_cases(seed, scale)]


def _qkv_cases(seed: int, scale: float = 1.0, cross: bool = True) -> list:
    """Random q, k, v with batch and head axes, without them, and with more keys than queries."""
    g = torch.Generator().manual_seed(seed)
    shapes = [((2, 3, 6, 4), (2, 3, 6, 4), 4), ((7, 5), (7, 5), 3), ((1, 1, 1, 4), (1, 1, 1, 4), 4)]
    if cross:
        shapes.append(((2, 2, 5, 3), (2, 2, 9, 3), 6))
    cases = []
    for q_shape, k_shape, dv in shapes:
        v_shape = (*k_shape[:-1], dv)
        cases.append({"q": _randn(*q_shape, generator=g, scale=scale), "k": _randn(*k_shape, generator=g, scale=scale),
                      "v": _randn(*v_shape, generator=g)})
    return cases


# ---------------------------------------------------------------------------------------------
# Tutorial 01 · attention is kernel smoothing

@exercise("01", 1, "weights = softmax(q @ kᵀ / √d) over the last axis (the keys), with d = q.shape[-1]; "
                   "then return weights @ v. Use k.transpose(-2, -1) so any leading axes work.")
def softmax_attention(ex: Exercise, fn) -> None:
    """softmax(QKᵀ/√d)V for any leading axes, values and gradients (Eq. 1)."""
    from .attention import quadratic_attention

    compare(ex, fn, lambda q, k, v: quadratic_attention(q, k, v, "softmax"), _qkv_cases(1, scale=2.0), ("q", "k", "v"))
    passed(ex, "4 random cases (with and without batch axes, more keys than queries) match "
               "minicastling.quadratic_attention in values and gradients.")


def gaussian_kernel(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """exp(−‖q − k‖² / 2): a kernel whose weights depend on distance, not on the dot product."""
    return torch.exp(-torch.cdist(q, k).pow(2) / 2)


@exercise("01", 2, "w = kernel(q, k) has shape (…, N, M); divide each row by its sum over the keys "
                   "(keepdim=True, so it broadcasts), then return w @ v.")
def kernel_smoothing(ex: Exercise, fn) -> None:
    """Nadaraya–Watson with any kernel: o_i = Σ_j κ(q_i, k_j) v_j / Σ_j κ(q_i, k_j)."""
    from .attention import quadratic_attention
    from .kernels import angular_similarity, softmax_similarity

    cases = [dict(case, kernel=kernel) for case, kernel in
             zip(_qkv_cases(2, cross=True), (softmax_similarity, angular_similarity, gaussian_kernel, softmax_similarity))]
    compare(ex, fn, lambda q, k, v, kernel: quadratic_attention(q, k, v, kernel), cases, ("q", "k", "v"))
    passed(ex, "the softmax, angular and Gaussian kernels all match minicastling.quadratic_attention "
               "in values and gradients.")


@exercise("01", 3, "−Σ p·log p over the last axis. Where p = 0 the term is 0 (its limit), but log(0) = −inf "
                   "and 0 · (−inf) = nan: use torch.where(p > 0, …, 0) or torch.special.entr.")
def row_entropy(ex: Exercise, fn) -> None:
    """The entropy of each row of attention weights, rows with exact zeros included."""
    g = torch.Generator().manual_seed(3)
    dense = torch.softmax(_randn(2, 3, 5, 7, generator=g, scale=2.0), dim=-1)
    sparse = torch.softmax(_randn(4, 6, generator=g), dim=-1) * (torch.rand(4, 6, generator=g) > 0.5)
    sparse[:, 0] += 1e-3  # no row all zeros
    sparse = sparse / sparse.sum(-1, keepdim=True)
    one_hot = torch.eye(5)
    reference = lambda weights: torch.special.entr(weights).sum(-1)  # noqa: E731
    compare(ex, fn, reference, [{"weights": dense}], ("weights",))
    compare(ex, fn, reference, [{"weights": sparse}, {"weights": one_hot}])
    passed(ex, "dense rows (values and gradients), rows with zeros and one-hot rows (entropy 0) all match.")


# ---------------------------------------------------------------------------------------------
# Tutorial 02 · angular kernels

@exercise("02", 1, "normalise q and k to unit length along the last axis (F.normalize), take q̂ @ k̂ᵀ, "
                   "clamp it to [−1, 1] (rounding can push it past 1), then torch.arccos.")
def spectral_angle(ex: Exercise, fn) -> None:
    """θ_ij = arccos(q̂_i · k̂_j) ∈ [0, π] for every pair, safe for zero and parallel vectors (Eq. 3)."""
    from .kernels import angular_similarity

    reference = lambda q, k: math.pi * (1.0 - angular_similarity(q, k))  # noqa: E731
    compare(ex, fn, reference, _qk_cases(4), ("q", "k"))
    g = torch.Generator().manual_seed(5)
    q = _randn(3, 4, generator=g)
    awkward = torch.cat([q, 2.5 * q, -q, torch.zeros(1, 4)])  # parallel, opposite and zero vectors
    compare(ex, fn, reference, [{"q": q, "k": awkward}], atol=2e-3)
    passed(ex, "random pairs (values and gradients) and parallel, opposite and zero vectors all match "
               "π·(1 − angular_similarity).")


@exercise("02", 2, "signs: sq = (q @ normals.T > 0) has shape (…, N, P), sk likewise (…, M, P). Compare every "
                   "pair with broadcasting, sq[..., :, None, :] == sk[..., None, :, :], and average over P.")
def hyperplane_agreement(ex: Exercise, fn) -> None:
    """The share of random hyperplanes that put q_i and k_j on the same side: ≈ 1 − θ/π."""
    from .kernels import angular_similarity

    g = torch.Generator().manual_seed(6)
    planes = 8000
    for q_shape, k_shape in [((5, 4), (6, 4)), ((2, 3, 4, 3), (2, 3, 2, 3))]:
        case = {"q": _randn(*q_shape, generator=g), "k": _randn(*k_shape, generator=g),
                "normals": _randn(planes, q_shape[-1], generator=g)}
        expected = angular_similarity(case["q"], case["k"])
        got = call(ex, fn, case)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
            counts = got.double() * planes
            if not torch.allclose(counts, counts.round(), atol=1e-3):
                raise CheckFailed(f"{ex.label}: every answer should be a count of hyperplanes divided by P = {planes}, "
                                  f"but yours are not (for {describe(case)}): average booleans over the P axis only.")
            got = got.to(expected.dtype)
        # 4.5 standard deviations of a mean of P coin flips: a right answer fails about once in 10⁵ entries
        same_tensor(ex, got, expected, case, rtol=0.0, atol=4.5 * math.sqrt(0.25 / planes))
    passed(ex, f"with {planes} random hyperplanes your agreement is within Monte Carlo error of 1 − θ/π everywhere.")


@exercise("02", 3, "sim = 1 − θ/π for every pair (minicastling.angular_similarity(q, k)); divide each row by "
                   "its sum over the keys.")
def angular_weights(ex: Exercise, fn) -> None:
    """Row-normalised angular kernel: the attention weights linear-angular attention approximates."""
    from .attention import attention_weights

    compare(ex, fn, lambda q, k: attention_weights(q, k, "angular"), _qk_cases(7), ("q", "k"))
    passed(ex, "4 random cases match attention_weights(q, k, 'angular') in values and gradients.")


# ---------------------------------------------------------------------------------------------
# Tutorial 03 · the linear decomposition

@exercise("03", 1, "c = minicastling.arccos_taylor_coefficients(order + 1) gives c_0 … c_order; return "
                   "π/2 − Σ_m c_m · x^(2m+1). Convert each c_m with float(c[m]) so x keeps its dtype.")
def arccos_series(ex: Exercise, fn) -> None:
    """arccos(x) ≈ π/2 − Σ_{m≤order} c_m x^(2m+1), the series behind the decomposition (Eq. 4)."""
    from .kernels import truncated_arccos

    g = torch.Generator().manual_seed(8)
    cases = [{"x": torch.rand(*shape, generator=g) * 2 - 1, "order": order}
             for shape, order in [((7,), 0), ((3, 5), 1), ((2, 2, 4), 3), ((6,), 8)]]
    compare(ex, fn, truncated_arccos, cases, ("x",))
    passed(ex, "orders 0, 1, 3 and 8 match minicastling.kernels.truncated_arccos in values and gradients.")


def _angular_order1(q, k):
    from .kernels import angular_similarity

    return angular_similarity(q, k, order=1)


@exercise("03", 2, "with x = q̂·k̂, sim = ½ + (x + x³/6)/π, and x³ = φ(q̂)·φ(k̂) for φ = polynomial_features(·, 3). "
                   "So the features [√½, q̂/√π, φ(q̂)/√(6π)] (torch.cat on the last axis) give sim as one dot "
                   "product: then compute (featuresᵀ of k) @ v first, as linear attention does.")
def angular_attention_order1(ex: Exercise, fn) -> None:
    """Attention with the order-1 truncated angular kernel, in O(N): the cubic term through features."""
    from .attention import quadratic_attention

    compare(ex, fn, lambda q, k, v: quadratic_attention(q, k, v, _angular_order1), _qkv_cases(9), ("q", "k", "v"))
    linear_in_tokens(ex, fn)
    passed(ex, "values and gradients match the explicit O(N²) form, and no N × N tensor is built.")


def causal_reference(q, k, v):
    """Explicit O(N²) causal attention with the linear angular kernel ½ + q̂·k̂/π: keys j ≤ i only."""
    from .kernels import angular_similarity

    n = q.shape[-2]
    similarity = angular_similarity(q, k, order=0) * torch.ones(n, n).tril()  # (…, N, N)
    return similarity / similarity.sum(-1, keepdim=True) @ v


@exercise("03", 3, "running sums over the token axis (torch.cumsum(…, dim=-2 or -3)): S_i = Σ_{j≤i} k̂_j v_jᵀ "
                   "(cumsum of k̂[..., :, :, None] * v[..., :, None, :]), z_i = Σ_{j≤i} k̂_j and Σ_{j≤i} v_j. Then "
                   "o_i = (½ Σ_{j≤i} v_j + q̂_i S_i / π) / (i/2 + q̂_i · z_i / π), with i counted from 1.")
def causal_linear_angular(ex: Exercise, fn) -> None:
    """Autoregressive linear-angular attention (query i sees keys j ≤ i) in O(N) with running sums."""
    compare(ex, fn, causal_reference, _qkv_cases(10, cross=False), ("q", "k", "v"))
    linear_in_tokens(ex, fn, tokens=1024)
    passed(ex, "values and gradients match the explicit triangular-masked form, with no N × N tensor.")


# ---------------------------------------------------------------------------------------------
# Tutorial 04 · residual branches and castling

@exercise("04", 1, "p = softmax(q kᵀ/√d) (minicastling.branches.attention_probabilities); the mask keeps p > threshold. "
                   "Return the share it drops, averaged over the last two axes: shape q.shape[:-2].")
def fraction_masked(ex: Exercise, fn) -> None:
    """The share of softmax entries the auxiliary branch's mask zeroes, per (batch, head)."""
    from .branches import attention_probabilities

    reference = lambda q, k, threshold: (attention_probabilities(q, k) <= threshold).float().mean((-2, -1))  # noqa: E731
    cases = [dict(case, threshold=threshold) for case, threshold in zip(_qk_cases(11, scale=2.0), (0.02, 0.1, 0.5, 0.2))]
    compare(ex, fn, reference, cases)
    passed(ex, "4 random cases and thresholds match the mask of the auxiliary branch.")


def _token_conv_reference(v, weight):
    from torch.func import functional_call

    from .branches import TokenConv1d

    heads, size = weight.shape
    conv = TokenConv1d(heads, size)
    return functional_call(conv, {"conv.weight": weight[:, None, :, None]}, (v,))  # (K, 1) filter per head


@exercise("04", 2, "pad the token axis (dim −2) with K//2 zeros at each end: F.pad(v, (0, 0, K//2, K//2)). Then "
                   "out = Σ_t weight[:, t] · padded[..., t : t + N, :] for t in range(K), where weight[:, t] needs "
                   "shape (H, 1, 1) to broadcast over (B, H, N, d).")
def token_dwconv(ex: Exercise, fn) -> None:
    """The authors' DWConv: a K-tap filter per head along the flattened token axis, zero padded."""
    g = torch.Generator().manual_seed(12)
    cases = [{"v": _randn(*v_shape, generator=g), "weight": _randn(v_shape[1], size, generator=g)}
             for v_shape, size in [((2, 3, 10, 4), 9), ((1, 2, 5, 3), 3), ((2, 1, 4, 2), 9)]]
    compare(ex, fn, _token_conv_reference, cases, ("v", "weight"))
    passed(ex, "values and gradients (for v and for the filters) match minicastling.branches.TokenConv1d, "
               "including filters longer than the sequence.")


@exercise("04", 3, "p = softmax(q kᵀ/√d); keep p where p > threshold and put 0 elsewhere ((p > threshold) is a "
                   "boolean mask: no gradient through it, and no renormalisation), then return that @ v.")
def masked_softmax_branch(ex: Exercise, fn) -> None:
    """M ⊙ softmax(QKᵀ/√d) V with M = [softmax > ε]: the auxiliary branch of Fig. 3."""
    from .branches import masked_softmax_attention

    cases = _qkv_cases(13, scale=2.5)
    for case, threshold in zip(cases, (0.02, 0.1, 0.3, 0.15)):
        case["threshold"] = threshold
    compare(ex, fn, masked_softmax_attention, cases, ("q", "k", "v"))
    passed(ex, "values and gradients match minicastling.branches.masked_softmax_attention at 4 thresholds.")


# ---------------------------------------------------------------------------------------------
# Tutorial 05 · the model

@exercise("05", 1, "count the matrix products for N tokens, width C, h heads (d = C/h): the q, k, v projection "
                   "(N × C times C × 3C), per head Q Kᵀ and weights @ V (N × d times d × N, N × N times N × d), and the "
                   "output projection (N × C times C × C). An (a × b) by (b × c) product costs a·b·c MACs.")
def softmax_attention_macs(ex: Exercise, fn) -> None:
    """The MACs of one SoftmaxAttention layer, as torch's flop counter measures them."""
    from .attention import SoftmaxAttention
    from .model import macs

    for tokens, width, heads in [(64, 128, 4), (16, 64, 2), (196, 96, 3), (1, 32, 1), (1024, 256, 8)]:
        case = {"tokens": tokens, "width": width, "heads": heads}
        expected = macs(SoftmaxAttention(width, heads), torch.zeros(1, tokens, width))
        got = call(ex, fn, case)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise CheckFailed(f"{ex.label}: return a number (an int); got a {type(got).__name__} for {describe(case)}.")
        if got != expected:
            difference = expected - got
            units = {"N·C²": tokens * width * width, "N²·C": tokens * tokens * width, "N·C": tokens * width}
            explained = [f"{difference / size:g} × {name}" for name, size in units.items()
                         if difference % size == 0 and abs(difference / size) <= 4]
            advice = f" The difference is {explained[0]}: a term of that size is missing or extra." if explained else ""
            raise CheckFailed(f"{ex.label}: for {describe(case)} you count {got:,} MACs; the flop counter measures "
                              f"{expected:,} (you are {'under' if difference > 0 else 'over'} by {abs(difference):,}).{advice}")
    passed(ex, "your formula matches torch's flop counter on 5 layer sizes, from 1 to 1,024 tokens.")


@exercise("05", 2, "split H into (H/p, p) and W into (W/p, p), then bring the two grid axes together as tokens and "
                   "(C, p, p) together as features: einops.rearrange does it in one line.")
def patchify(ex: Exercise, fn) -> None:
    """Images (B, C, H, W) → tokens (B, H/p · W/p, C·p·p), row-major: what the patch stem sees."""
    g = torch.Generator().manual_seed(14)
    cases = [{"images": _randn(*shape, generator=g), "patch": patch}
             for shape, patch in [((2, 3, 8, 8), 4), ((1, 1, 6, 4), 2), ((3, 2, 5, 5), 5)]]
    compare(ex, fn, lambda images, patch: F.unfold(images, patch, stride=patch).transpose(1, 2), cases, ("images",))
    passed(ex, "3 image and patch sizes match torch's F.unfold(images, p, stride=p).transpose(1, 2).")


def _castling_model():
    from .model import ViT, get_config

    torch.manual_seed(0)
    return ViT(get_config("smoke", attention="castling")).eval()


@exercise("05", 3, "collect layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]; first look at "
                   "every layer.alpha and raise RuntimeError if any is above 0; only then call layer.castle() on "
                   "each, and return the model.")
def castle_model(ex: Exercise, fn) -> None:
    """Castle every layer or none: refuse (RuntimeError) while any α > 0, before touching a layer."""
    from .attention import CastlingAttention, set_alpha

    model = _castling_model()
    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]
    set_alpha(model, 0.0)
    layers[-1].set_alpha(0.25)
    try:
        call(ex, fn, {"model": model})
    except CheckFailed as failure:
        said = str(failure)
        if "is not written yet" in said:
            raise
        if "raised RuntimeError" not in said:
            raise CheckFailed(f"{ex.label}: with the last layer's alpha at 0.25 your function should raise "
                              f"RuntimeError, but {said.split(': ', 1)[1]}") from None
    else:
        raise CheckFailed(f"{ex.label}: the last of {len(layers)} layers still has alpha = 0.25, so castling would change "
                          "the model, but your function did not raise RuntimeError.")
    done = [i for i, layer in enumerate(layers) if layer.castled]
    if done:
        raise CheckFailed(f"{ex.label}: you raised, but only after castling layer(s) {done}: the model is left half "
                          "castled. Check every alpha first, then castle.")
    layers[-1].set_alpha(0.0)
    images = torch.randn(4, 3, model.config.image_size, model.config.image_size, generator=torch.Generator().manual_seed(15))
    before = model(images)
    returned = call(ex, fn, {"model": model})
    left = [i for i, layer in enumerate(layers) if not layer.castled]
    if left:
        raise CheckFailed(f"{ex.label}: with every alpha at 0, layer(s) {left} of {len(layers)} were not castled.")
    if returned is not model:
        raise CheckFailed(f"{ex.label}: return the model you castled (got a {type(returned).__name__}).")
    if not torch.equal(model(images), before):
        raise CheckFailed(f"{ex.label}: after castling at alpha = 0 the outputs changed: only layer.castle() should run.")
    passed(ex, "refuses while one layer's alpha > 0 without castling any layer, and castles all at alpha = 0 "
               "with outputs bit-for-bit unchanged.")


# ---------------------------------------------------------------------------------------------
# Tutorial 06 · training

@exercise("06", 1, "steps 0 … warmup_steps − 1 rise linearly: peak · (step + 1) / warmup_steps. After that, cosine "
                   "from peak down to 0 over the remaining steps: peak · ½ · (1 + cos(π · (step − warmup_steps) / "
                   "(total_steps − warmup_steps))).")
def warmup_cosine(ex: Exercise, fn) -> None:
    """Linear warm-up then cosine decay to 0, step by step, as minicastling.train.learning_rate does."""
    import dataclasses

    from .train import get_recipe, learning_rate

    for total, warmup, peak in [(100, 10, 1e-3), (7, 1, 0.5), (50, 20, 3e-4), (3, 3, 1.0)]:
        recipe = dataclasses.replace(get_recipe("smoke"), lr=peak, warmup_epochs=warmup)
        for step in range(total):
            case = {"step": step, "total_steps": total, "warmup_steps": warmup, "peak": peak}
            expected = learning_rate(recipe, step, total, steps_per_epoch=1)
            got = call(ex, fn, case)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if not isinstance(got, (int, float)):
                raise CheckFailed(f"{ex.label}: return a float; got a {type(got).__name__} for {describe(case)}.")
            if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12):
                phase = "warm-up" if step < warmup else "cosine decay"
                raise CheckFailed(f"{ex.label}: at step {step} of {total} (warm-up {warmup} steps, peak {peak:g}, so "
                                  f"this is the {phase}) the learning rate should be {expected:.6g}; yours is {got:.6g}.")
    passed(ex, "every step of 4 schedules matches minicastling.train.learning_rate.")


@exercise("06", 2, "with K classes the target puts (1 − smoothing) + smoothing/K on the true class and smoothing/K on "
                   "every other; loss = −Σ target · log_softmax(logits), summed over classes, averaged over the batch.")
def smoothed_cross_entropy(ex: Exercise, fn) -> None:
    """Cross-entropy with label smoothing, the loss the recipe trains with."""
    g = torch.Generator().manual_seed(16)
    cases = [{"logits": _randn(b, c, generator=g, scale=3.0), "labels": torch.randint(0, c, (b,), generator=g),
              "smoothing": s} for b, c, s in [(8, 10, 0.1), (5, 3, 0.0), (16, 100, 0.3), (1, 2, 0.5)]]
    reference = lambda logits, labels, smoothing: F.cross_entropy(logits, labels, label_smoothing=smoothing)  # noqa: E731
    compare(ex, fn, reference, cases, ("logits",))
    passed(ex, "4 batches and smoothing levels match F.cross_entropy(..., label_smoothing=...) in value and gradient.")


@exercise("06", 3, "padded = F.pad(images, (padding,) * 4); image b is padded[b, :, r : r + H, c : c + W] with "
                   "(r, c) = offsets[b]; where flips[b] is True, mirror that crop left-right (torch.flip on the last "
                   "axis). A loop over the batch is fine; torch.stack the results.")
def crop_flip(ex: Exercise, fn) -> None:
    """Crop after zero padding, at given offsets, then flip the marked images: the training augmentation."""
    from .data import crop_flip as reference

    g = torch.Generator().manual_seed(17)
    cases = []
    for b, c, h, w, padding in [(5, 3, 8, 8, 2), (3, 1, 4, 6, 1), (2, 3, 5, 5, 0)]:
        cases.append({"images": torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8),
                      "offsets": torch.randint(0, 2 * padding + 1, (b, 2), generator=g),
                      "flips": torch.rand(b, generator=g) < 0.5, "padding": padding})
    compare(ex, fn, reference, cases)
    passed(ex, "3 batches of uint8 images match minicastling.data.crop_flip pixel for pixel.")


# ---------------------------------------------------------------------------------------------
# Tutorial 07 · measuring

def _bench_rows(seed: int) -> list:
    """Benchmark-like rows: a quadratic and a linear method, a few sizes, some not measured (None)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in (64, 128, 256, 512, 1024):
        jitter = 1 + 0.2 * torch.rand(2, generator=g)
        rows.append({"method": "quadratic", "tokens": n, "seconds": float(1e-8 * n * n * jitter[0])})
        rows.append({"method": "linear", "tokens": n, "seconds": float(2e-6 * n * jitter[1])})
    rows.append({"method": "quadratic", "tokens": 2048, "seconds": None})  # skipped: too big
    rows.append({"method": "linear", "tokens": 2048, "seconds": 0.004})
    rows.append({"method": "other", "tokens": 64, "seconds": 1.0})
    return rows


@exercise("07", 1, "index the rows: by = {(r['method'], r['tokens']): r['seconds'] for r in rows}. For every token "
                   "count where both are measured (neither missing nor None), the ratio is the peer's seconds "
                   "divided by the method's: above 1 means the method is faster.")
def speedups(ex: Exercise, fn) -> None:
    """{tokens: peer seconds / method seconds} from benchmark rows, skipping sizes not measured."""
    from .bench import speedups as reference

    for seed, (method, peer) in enumerate([("linear", "quadratic"), ("quadratic", "linear"), ("linear", "other")]):
        case = {"rows": _bench_rows(seed), "method": method, "peer": peer}
        expected, got = reference(**case), call(ex, fn, case)
        if not isinstance(got, dict):
            raise CheckFailed(f"{ex.label}: return a dict {{tokens: ratio}}; got a {type(got).__name__}.")
        if set(got) != set(expected):
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            raise CheckFailed(f"{ex.label}: for method={method!r}, peer={peer!r} the token counts should be "
                              f"{sorted(expected)}; missing {missing}, extra {extra}. Skip sizes where either "
                              "time is missing or None.")
        for n in expected:
            if not math.isclose(float(got[n]), expected[n], rel_tol=1e-9):
                raise CheckFailed(f"{ex.label}: at {n} tokens (method={method!r}, peer={peer!r}) the speedup is "
                                  f"{expected[n]:.4g}, yours {float(got[n]):.4g}" +
                                  (": upside down, it is peer / method." if math.isclose(float(got[n]) * expected[n], 1, rel_tol=1e-9) else "."))
    passed(ex, "3 method/peer pairs match minicastling.bench.speedups, skipped sizes included.")


@exercise("07", 2, "walk the token counts from the largest down: while `fast` is measured, faster than `slow` (fewer "
                   "seconds) at that count, remember the count; stop at the first count where it is not. Return the "
                   "last count remembered, or None.")
def crossover_tokens(ex: Exercise, fn) -> None:
    """The smallest token count from which `fast` beats `slow` at every larger count, else None."""
    from .bench import crossover

    rows = _bench_rows(0)
    flip_flop = [{"method": m, "tokens": n, "seconds": s} for n, a, b in
                 [(64, 1.0, 2.0), (128, 3.0, 2.0), (256, 1.0, 2.0), (512, 1.0, 4.0)] for m, s in (("a", a), ("b", b))]
    cases = [{"rows": rows, "fast": "linear", "slow": "quadratic"},
             {"rows": rows, "fast": "quadratic", "slow": "linear"},
             {"rows": flip_flop, "fast": "a", "slow": "b"},
             {"rows": flip_flop, "fast": "b", "slow": "a"}]
    for case in cases:
        expected, got = crossover(case["rows"], case["fast"], case["slow"]), call(ex, fn, case)
        if got != expected:
            raise CheckFailed(f"{ex.label}: for fast={case['fast']!r}, slow={case['slow']!r} the crossover is "
                              f"{expected}, yours {got!r}. It is the smallest count from which `fast` wins at every "
                              "larger measured count (None if it does not win at the largest).")
    passed(ex, "4 cases match minicastling.bench.crossover, including a method that wins, loses, then wins again.")


@exercise("07", 3, "φ(x) = F.elu(x) + 1 for q and k; kv = φ(k)ᵀ @ v, shape (…, d, dv); normaliser_i = φ(q_i) · "
                   "Σ_j φ(k_j); o = (φ(q) @ kv) / normaliser (with keepdim, or [..., None]). No N × N matrix.")
def elu_linear_attention(ex: Exercise, fn) -> None:
    """Linear attention with φ = ELU + 1 ("Transformers are RNNs"), in O(N)."""
    from .zoo import elu_features, linear_attention

    compare(ex, fn, lambda q, k, v: linear_attention(q, k, v, elu_features), _qkv_cases(18), ("q", "k", "v"))
    linear_in_tokens(ex, fn)
    passed(ex, "values and gradients match minicastling.zoo.linear_attention with ELU + 1, and no N × N tensor is built.")
