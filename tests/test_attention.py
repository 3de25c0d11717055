"""Linear-angular attention against its explicit forms; modules, numerics and errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from minicastling.attention import SoftmaxAttention, linear_angular_attention, quadratic_attention
from minicastling.branches import masked_softmax_attention
from minicastling.castling import CastlingAttention
from minicastling.model import build_attention


def qkv(*shape, dtype=torch.float64, seed=0, tokens_kv=None):
    g = torch.Generator().manual_seed(seed)
    *lead, n, d = shape
    m = n if tokens_kv is None else tokens_kv
    return (torch.randn(*lead, n, d, generator=g, dtype=dtype),
            torch.randn(*lead, m, d, generator=g, dtype=dtype),
            torch.randn(*lead, m, d, generator=g, dtype=dtype))


@pytest.mark.parametrize("shape,tokens_kv", [((2, 3, 50, 8), None), ((4, 17, 5), 33), ((7, 16), None)])
def test_kernel_form_equals_quadratic_linear_angular(shape, tokens_kv):
    q, k, v = qkv(*shape, tokens_kv=tokens_kv)
    torch.testing.assert_close(
        linear_angular_attention(q, k, v, form="kernel"), quadratic_attention(q, k, v, "angular-linear")
    )


def official_transcription(q, k, v, auxiliary=None):
    """o_i = (½ v_i + (1/π) Σ_j (q̂_i·k̂_j) v_j + a_i) / ‖·‖, one query at a time."""
    out = torch.empty_like(v)
    for index in torch.cartesian_prod(*[torch.arange(s) for s in q.shape[:-1]]).reshape(-1, q.dim() - 1):
        *lead, i = index.tolist()
        q_hat = q[(*lead, i)] / q[(*lead, i)].norm()
        k_hat = k[tuple(lead)] / k[tuple(lead)].norm(dim=-1, keepdim=True)
        row = 0.5 * v[(*lead, i)] + (k_hat @ q_hat) @ v[tuple(lead)] / math.pi
        if auxiliary is not None:
            row = row + auxiliary[(*lead, i)]
        out[(*lead, i)] = row / row.norm()
    return out


def test_official_form_matches_its_formula():
    q, k, v = qkv(2, 2, 12, 4)
    auxiliary = torch.randn_like(v)
    torch.testing.assert_close(linear_angular_attention(q, k, v, form="official"), official_transcription(q, k, v))
    torch.testing.assert_close(
        linear_angular_attention(q, k, v, form="official", auxiliary=auxiliary),
        official_transcription(q, k, v, auxiliary),
    )


def test_forms_differ():
    q, k, v = qkv(1, 2, 12, 4)
    official, kernel = (linear_angular_attention(q, k, v, form=f) for f in ("official", "kernel"))
    assert (official - kernel).abs().max() > 0.1
    assert torch.allclose(official.norm(dim=-1), torch.ones(1, 2, 12, dtype=torch.float64))


def authors_module_transcription(module: CastlingAttention, x):
    """The released LinAngularAttention(sparse_reg=True) written out from its formula."""
    b, n, c = x.shape
    h = module.num_heads
    q, k, v = (module.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4))  # (B, H, N, d) each
    attn = torch.softmax((q @ k.transpose(-2, -1)) * (c // h) ** -0.5, dim=-1)
    sparse = (attn > module.threshold) * attn
    weight = module.conv.conv.weight[:, 0, :, 0]  # (H, 9): one (9, 1) filter per head
    v_padded = F.pad(v, (0, 0, 4, 4))
    conv = sum(weight[:, t, None, None] * v_padded[:, :, t : t + n] for t in range(9))
    q_hat, k_hat = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    out = sparse @ v + 0.5 * v + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi
    out = out / out.norm(dim=-1, keepdim=True) + conv
    return module.proj(out.transpose(1, 2).reshape(b, n, c))


def test_official_castling_attention_reproduces_the_authors_module():
    torch.manual_seed(0)
    module = CastlingAttention(32, 4, form="official", conv="1d", alpha=1.0).double()
    x = torch.randn(2, 49, 32, dtype=torch.float64)
    torch.testing.assert_close(module(x), authors_module_transcription(module, x))


def test_quadratic_softmax_equals_sdpa():
    q, k, v = qkv(2, 3, 40, 8, dtype=torch.float32)
    torch.testing.assert_close(quadratic_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_masked_softmax_keeps_only_weights_above_threshold():
    q, k, v = qkv(1, 1, 30, 8)
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    kept = torch.where(attn > 0.05, attn, torch.zeros_like(attn))
    torch.testing.assert_close(masked_softmax_attention(q, k, v, 0.05), kept @ v)
    q.requires_grad_()
    masked_softmax_attention(q, k, v, threshold=0.999).sum().backward()
    assert q.grad.abs().max() == 0  # everything masked, and the mask itself carries no gradient


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_gradcheck_float64(form):
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 9, 3))
    assert torch.autograd.gradcheck(lambda a, b, c: linear_angular_attention(a, b, c, form=form), (q, k, v))


@pytest.mark.parametrize("conv", ["1d", "2d", None])
def test_gradcheck_castling_module_float64(conv):
    torch.manual_seed(0)
    module = CastlingAttention(8, 2, conv=conv, alpha=0.5).double()
    x = torch.randn(1, 16, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_bf16_autocast_is_close_to_float32(form):
    torch.manual_seed(0)
    module = CastlingAttention(64, 4, form=form, alpha=1.0)
    x = torch.randn(2, 256, 64)
    reference = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - reference).norm() / reference.norm() < 0.03
    half = CastlingAttention(64, 4, form=form, alpha=1.0).to(torch.bfloat16)
    half.load_state_dict(module.state_dict())
    out = half(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and (out.float() - reference).norm() / reference.norm() < 0.03


def test_kv_is_accumulated_in_float32_for_bf16_inputs():
    q, k, v = qkv(1, 1, 16384, 16, dtype=torch.bfloat16, seed=3)
    v = v + 1.0  # a common offset makes the token sums large, where bf16 accumulation loses digits
    exact = linear_angular_attention(q.double(), k.double(), v.double(), form="kernel")
    ours = linear_angular_attention(q, k, v, form="kernel")
    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    kv = torch.zeros(16, 16, dtype=torch.bfloat16)
    k_sum = torch.zeros(16, dtype=torch.bfloat16)
    v_sum = torch.zeros(16, dtype=torch.bfloat16)
    for start in range(0, 16384, 256):  # a bf16 running sum, as a naive kernel would keep it
        kv += k_hat[0, 0, start : start + 256].T @ v[0, 0, start : start + 256]
        k_sum += k_hat[0, 0, start : start + 256].sum(0)
        v_sum += v[0, 0, start : start + 256].sum(0)
    naive = (0.5 * v_sum + q_hat @ kv / math.pi) / (8192 + q_hat @ k_sum[:, None] / math.pi)
    error = lambda out: ((out.double() - exact).norm() / exact.norm()).item()  # noqa: E731
    assert error(ours) < 0.01
    assert error(naive) > 2 * error(ours)


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_zero_vectors_give_finite_outputs_and_gradients(form):
    q, k, v = (torch.zeros(1, 2, 10, 4, requires_grad=True) for _ in range(3))
    out = linear_angular_attention(q, k, v, form=form)
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))
    module = CastlingAttention(8, 2, form=form)
    torch.nn.init.zeros_(module.qkv.weight)
    x = torch.randn(1, 16, 8, requires_grad=True)
    module(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_softmax_twin_shares_the_interface():
    torch.manual_seed(0)
    castling, twin = CastlingAttention(32, 4), SoftmaxAttention(32, 4)
    assert {n for n, _ in twin.named_parameters()} <= {n for n, _ in castling.named_parameters()}
    x = torch.randn(2, 16, 32)
    assert castling(x).shape == twin(x).shape == (2, 16, 32)
    assert isinstance(build_attention("linear-angular", 32, 4), CastlingAttention)
    assert build_attention("linear-angular", 32, 4).conv is None


def test_error_messages():
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by num_heads=4.*\[1, 2, 3, 5, 6, 10, 15\]"):
        CastlingAttention(30, 4)
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by num_heads=4"):
        SoftmaxAttention(30, 4)
    q, k, v = qkv(2, 10, 8)
    with pytest.raises(ValueError, match=r"q and k must share head_dim.*\(2, 10, 8\).*\(2, 10, 7\)"):
        linear_angular_attention(q, k[..., :7], v)
    with pytest.raises(ValueError, match=r"k and v must have the same number of tokens.*\(2, 9, 8\)"):
        linear_angular_attention(q, k, v[:, :9])
    with pytest.raises(ValueError, match=r"leading \(batch, head\) axes"):
        quadratic_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"unknown form 'exact'.*'official'.*'kernel'"):
        linear_angular_attention(q, k, v, form="exact")
    with pytest.raises(ValueError, match=r"unknown form 'fast'"):
        CastlingAttention(8, 2, form="fast")
    with pytest.raises(ValueError, match=r"form='official' adds ½·v_i.*form='kernel'"):
        linear_angular_attention(q, k[:, :5], v[:, :5], form="official")
    with pytest.raises(ValueError, match=r"N=50, which is not a perfect square.*conv='1d'"):
        CastlingAttention(8, 2, conv="2d")(torch.randn(1, 50, 8))
    with pytest.raises(ValueError, match=r"unknown conv '3d'"):
        CastlingAttention(8, 2, conv="3d")
    with pytest.raises(ValueError, match=r"positive odd int.*got 4"):
        CastlingAttention(8, 2, conv="1d", conv_kernel_size=4)
    with pytest.raises(ValueError, match=r"threshold.*\[0, 1\).*1.5"):
        CastlingAttention(8, 2, threshold=1.5)
    with pytest.raises(ValueError, match=r"expects tokens of shape \(batch, tokens, 8\), got \(16, 8\)"):
        CastlingAttention(8, 2)(torch.randn(16, 8))
    with pytest.raises(ValueError, match=r"unknown attention 'flash'"):
        build_attention("flash", 8, 2)
    with pytest.raises(ValueError, match=r"unknown similarity 'cosine'"):
        quadratic_attention(q, k, v, "cosine")
