"""Tutorial 04 · residual branches and castling: the α schedule, the mask that fires, the DWConv
branch, and the authors' whole layer per head."""

import torch

from .core import CheckFailed, Exercise, _qk_cases, _qkv_cases, _randn, call, compare, describe, exercise, passed, \
    same_number


@exercise("04", 1, "warm-up", "split [0, 1] into the decay window [0, end) and what follows it. Inside the window, "
                              "measure how far the decay has gone as a share of the window, and find the half period "
                              "of a cosine, shifted and scaled, that falls from 1 to 0 over it. What must α be after the "
                              "window, and why exactly that?")
def alpha_at(ex: Exercise, fn) -> None:
    """α(t): alpha0 at t = 0, a half-cosine decay to 0 at t = end, then exactly 0 (AlphaSchedule's default shape)."""
    from ..schedule import AlphaSchedule

    for alpha0, end in [(1.0, 0.75), (0.5, 0.5), (2.0, 0.9)]:
        schedule = AlphaSchedule(alpha0=alpha0, end=end)
        for t in [i / 20 for i in range(21)] + [end]:
            case = {"t": t, "alpha0": alpha0, "end": end}
            phase = "inside the decay window" if t < end else "after the decay window: the branch must be off"
            got = call(ex, fn, case)
            # float32 arithmetic is fine: 1 + cos(·) near the window's end cancels digits, hence the absolute part
            same_number(ex, got, schedule(t), case, rel_tol=1e-6, abs_tol=1e-6 * alpha0, explain=f"t = {t:g} is {phase}.")
            if t >= end and float(got) != 0.0:
                raise CheckFailed(f"{ex.label}: for {describe(case)} you return {float(got)!r}; from t = end on α must "
                                  "be exactly 0, not merely small: castling removes the branch, and only an α of "
                                  "exactly 0 makes that change nothing.")
    passed(ex, "every t on a grid of 3 schedules matches minicastling.AlphaSchedule, exactly 0 from t = end on.")


@exercise("04", 2, "core", "the mask keeps the entries of each softmax row that lie above ε; how much of the row's "
                           "probability do those entries hold together? Rows already sum to 1, so no division is needed.")
def mass_kept(ex: Exercise, fn) -> None:
    """The share of each softmax row's probability that the mask [softmax > ε] keeps: what the branch passes on."""
    from ..attention import attention_weights

    def reference(q, k, threshold):
        probabilities = attention_weights(q, k, "softmax")  # (…, N, M)
        return (probabilities * (probabilities > threshold)).sum(-1)  # (…, N)

    cases = [dict(case, threshold=threshold) for case, threshold in zip(_qk_cases(11, scale=2.0), (0.02, 0.1, 0.5, 0.2))]
    compare(ex, fn, reference, cases, ("q", "k"))
    passed(ex, "4 random cases and thresholds match, in values and in gradients (the softmax's normalisation passes "
               "gradient to the dropped entries' logits too).")


def token_conv_reference(v, weight):
    """minicastling's TokenConv1d with the given (H, K) filters, applied to v (B, H, N, d)."""
    from torch.func import functional_call

    from ..branches import TokenConv1d

    heads, size = weight.shape
    conv = TokenConv1d(heads, size)
    return functional_call(conv, {"conv.weight": weight[:, None, :, None]}, (v,))  # (K, 1) filter per head


@exercise("04", 3, "core", "pad the token axis with K//2 zeros at each end; the output is then a weighted sum of K "
                           "shifted windows of the padded values, one per tap, each weighted by that tap's per-head "
                           "weight (shaped to broadcast over B, N and d). Taps run like nn.Conv1d's: no flip.")
def token_dwconv(ex: Exercise, fn) -> None:
    """The authors' DWConv: a K-tap filter per head along the flattened token axis, zero padded."""
    g = torch.Generator().manual_seed(12)
    cases = [{"v": _randn(*v_shape, generator=g), "weight": _randn(v_shape[1], size, generator=g)}
             for v_shape, size in [((2, 3, 10, 4), 9), ((1, 2, 5, 3), 3), ((2, 1, 4, 2), 9)]]
    compare(ex, fn, token_conv_reference, cases, ("v", "weight"))
    passed(ex, "values and gradients (for v and for the filters) match minicastling.branches.TokenConv1d, "
               "including filters longer than the sequence.")


def official_reference(q, k, v, conv_weight, alpha, threshold):
    """The authors' layer per head with the branch weighted by α, from minicastling's parts (their code adds it with
    weight 1): normalise(½v + q̂ᵀK̂ᵀV/π + α·branch) + DWConv(V)."""
    from ..attention import linear_angular_attention
    from ..branches import masked_softmax_attention

    auxiliary = alpha * masked_softmax_attention(q, k, v, threshold)  # (B, H, N, d)
    return linear_angular_attention(q, k, v, form="official", auxiliary=auxiliary) + token_conv_reference(v, conv_weight)


@exercise("04", 4, "stretch", "where each term enters is the whole exercise. Read LinAngularAttention.forward in the "
                              "authors' attention.py (GATECH-EIC/Castling-ViT; its lines are copied in "
                              "tutorials/sources.md) with sparse_reg on: follow sparse, 0.5 * v, the K̂ᵀV term and "
                              "dconv_v, and note which of them are summed before the division by the norm and which "
                              "after. Their branch has weight 1; weight yours by alpha.")
def official_castling_attention(ex: Exercise, fn) -> None:
    """What the authors' attention computes per head, its branch weighted by α (theirs has weight 1):
    normalise(½v_i + q̂_iᵀK̂ᵀV/π + α·(M ⊙ P)V_i) + DWConv(V)_i."""
    g = torch.Generator().manual_seed(23)
    cases = []
    for case, alpha, threshold in zip(_qkv_cases(24, scale=2.5, cross=False), (0.7, 1.3, 0.0), (0.02, 0.1, 0.02)):
        if case["q"].dim() != 4:  # the DWConv needs (B, H, N, d)
            case = {name: value.reshape(1, 1, *value.shape) for name, value in case.items()}
        heads = case["q"].shape[1]
        cases.append(dict(case, conv_weight=_randn(heads, 3 if case["q"].shape[-2] < 7 else 9, generator=g),
                          alpha=alpha, threshold=threshold))
    compare(ex, fn, official_reference, cases, ("q", "k", "v", "conv_weight"))
    passed(ex, "values and gradients (q, k, v and the filters) match minicastling's official form with its auxiliary "
               "branch plus TokenConv1d, with the branch at α = 0.7, 1.3 and 0.")


