"""The compiled CPU kernel (minicastling.fast.cpu_kernel) against the readable forms, in float64; its operator."""

import warnings

import pytest
import test_library_calls as library_test  # its readable reference and gradient helper
import torch

from minicastling.fast import cpu_kernel, library_calls
from minicastling.attention import CastlingAttention
from minicastling.branches import TokenConv1d

# (batch, tokens, heads, head_dim): batch 1, one token, odd counts, every compiled head_dim
SHAPES = [(1, 1, 1, 16), (2, 7, 3, 16), (1, 49, 2, 24), (3, 17, 2, 32), (1, 5, 1, 48), (2, 9, 2, 64)]


@pytest.fixture(autouse=True)
def kernel():
    if cpu_kernel.load() is None:
        pytest.skip("the CPU kernel could not be built here (no C++ compiler or ninja); see the warning")


def readable(qkv, heads, conv=None, form="kernel"):
    """Linear-angular attention plus the token conv, as the readable modules compute it."""
    out, v = library_test.readable(qkv, heads, form)
    return out if conv is None else out + conv(v)


def gradients(output, inputs):
    return library_test.gradients([output], inputs)


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("kernel_size", [9, 3, None])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_the_readable_form_in_values_and_gradients(shape, kernel_size, form):
    b, n, h, d = shape
    torch.manual_seed(0)
    qkv = torch.randn(b, n, 3 * h * d, dtype=torch.float64, requires_grad=True)
    conv = None if kernel_size is None else TokenConv1d(h, kernel_size).double()
    weight = None if conv is None else conv.conv.weight
    inputs = [qkv] + ([weight] if conv is not None else [])
    fast, reference = cpu_kernel.linear_angular_conv(qkv, h, weight, form=form), readable(qkv, h, conv, form)
    torch.testing.assert_close(fast, reference)
    for got, expected in zip(gradients(fast, inputs), gradients(reference, inputs)):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_kernel_passes_gradcheck(form):
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 6, 3 * 2 * 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 1, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: cpu_kernel.linear_angular_conv(x, 2, w, form=form), (qkv, weight))


def test_the_official_form_takes_the_softmax_branch_inside_its_normalisation():
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 11, 3 * 2 * 16, generator=g, dtype=torch.float64, requires_grad=True)
    branch = torch.randn(2, 2, 11, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 9, 1, generator=g, dtype=torch.float64, requires_grad=True)
    conv = TokenConv1d(2, 9).double()
    conv.conv.weight.data.copy_(weight.detach())
    fast = cpu_kernel.linear_angular_conv(qkv, 2, weight, form="official", auxiliary=branch)
    out, v = library_calls.linear_angular(qkv, 2, "official", branch)
    torch.testing.assert_close(fast, out + conv(v))
    assert torch.autograd.gradcheck(lambda x, a, w: cpu_kernel.linear_angular_conv(x, 2, w, form="official", auxiliary=a),
                                    (qkv, branch, weight))


def test_zero_queries_and_keys_take_the_epsilon_branch_as_the_readable_form_does():
    qkv = torch.randn(1, 6, 3 * 16, dtype=torch.float64)
    qkv[:, 2, :32] = 0.0  # token 2's q and k
    qkv.requires_grad_(True)
    fast, reference = cpu_kernel.linear_angular_conv(qkv, 1), readable(qkv, 1)
    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(gradients(fast, [qkv]), gradients(reference, [qkv]))


def test_output_is_token_major_so_merging_heads_is_free():
    out = cpu_kernel.linear_angular_conv(torch.randn(2, 10, 3 * 3 * 16), 3)
    assert out.shape == (2, 3, 10, 16) and out.transpose(1, 2).is_contiguous()


def test_low_precision_inputs_are_computed_in_float32():
    qkv = torch.randn(2, 300, 3 * 4 * 16) + 0.5
    exact = readable(qkv.double(), 4)
    for low in (torch.bfloat16, torch.float16):
        out = cpu_kernel.linear_angular_conv(qkv.to(low), 4)
        assert out.dtype == low
        assert (out.double() - exact).norm() / exact.norm() < 0.01
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_kernel.linear_angular_conv(qkv, 4).dtype == torch.float32  # qkv's dtype, as the readable form


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("conv", ["1d", None])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_module_with_the_kernel_equals_the_library_path(monkeypatch, conv, alpha, form):
    torch.manual_seed(0)
    module = CastlingAttention(32, 2, form=form, conv=conv, alpha=alpha).double()  # head_dim 16: covered
    for batch, tokens in ((1, 49), (2, 17)):
        x = torch.randn(batch, tokens, 32, dtype=torch.float64, requires_grad=True)
        inputs = [x, *module.parameters()]
        fast = module(x)
        fast_grads = gradients(fast, inputs)
        monkeypatch.setenv(cpu_kernel.SWITCH, "0")
        library = module(x)
        torch.testing.assert_close(fast, library)
        for got, expected in zip(fast_grads, gradients(library, inputs)):
            torch.testing.assert_close(got, expected)
        monkeypatch.undo()


def test_module_uses_the_kernel_where_it_covers_the_call(monkeypatch):
    def library_path(*args, **kwargs):
        raise AssertionError("the library-call path ran where the CPU kernel covers the call")

    monkeypatch.setattr(library_calls, "linear_angular", library_path)
    for form in ("kernel", "official"):
        for alpha in (0.0, 0.5):  # the softmax branch off and on
            module = CastlingAttention(64, 2, form=form, alpha=alpha)
            module(torch.randn(2, 10, 64)).sum().backward()
            with torch.no_grad():
                module(torch.randn(1, 3, 64))


@pytest.mark.parametrize("options, dim, heads", [(dict(conv="2d"), 32, 2), ({}, 12, 3)])  # head_dim 4: not compiled
def test_calls_the_kernel_does_not_cover_fall_back_to_the_library_path(options, dim, heads):
    module = CastlingAttention(dim, heads, **options)
    qkv = torch.randn(1, 16, 3 * dim)
    assert not cpu_kernel.covers(qkv, heads, module.form, module.conv)
    assert module(torch.randn(1, 16, dim)).shape == (1, 16, dim)


def test_switch_turns_the_kernel_off_and_rejects_nonsense(monkeypatch):
    module = CastlingAttention(32, 2)
    qkv = torch.randn(1, 4, 96)
    assert cpu_kernel.covers(qkv, 2, "kernel", module.conv)
    monkeypatch.setenv(cpu_kernel.SWITCH, "0")
    assert not cpu_kernel.covers(qkv, 2, "kernel", module.conv)
    monkeypatch.setenv(cpu_kernel.SWITCH, "maybe")
    with pytest.raises(ValueError, match="MINICASTLING_CPU_KERNEL='maybe'.*1.*0"):
        cpu_kernel.enabled()


def test_a_failed_build_warns_once_and_leaves_the_library_path(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension\ng++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    cpu_kernel.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*g\\+\\+: command not found.*library-call path"):
            module = CastlingAttention(32, 2)
            out = module(torch.randn(1, 5, 32))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(module(torch.randn(1, 5, 32)).shape, out.shape)  # no second warning
    finally:
        monkeypatch.undo()
        cpu_kernel.load.cache_clear()
    assert cpu_kernel.load() is not None


def test_the_operator_passes_torch_library_opcheck():
    """Fake (meta) implementation, autograd registration and schema, as torch.library checks them."""
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, 9, 3 * 2 * 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 9, generator=g, dtype=torch.float64, requires_grad=True)
    branch = torch.randn(2, 2, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    for official in (False, True):
        for args in ((qkv, weight, 2, 1e-6, True, official, None), (qkv, None, 2, 1e-6, True, official, None),
                     (qkv.detach(), None, 2, 1e-6, False, official, None)):
            torch.library.opcheck(torch.ops.minicastling.linear_angular_conv.default, args)
    torch.library.opcheck(torch.ops.minicastling.linear_angular_conv.default, (qkv, weight, 2, 1e-6, True, True, branch))


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_flop_counter_counts_the_operator_as_the_library_calls(monkeypatch, form):
    from minicastling.measure import macs

    module = CastlingAttention(64, 2, form=form, alpha=0.0)
    x = torch.randn(2, 16, 64)
    with_kernel = macs(module, x), macs(module, x, backward=True)
    monkeypatch.setenv(cpu_kernel.SWITCH, "0")
    assert (macs(module, x), macs(module, x, backward=True)) == with_kernel


def test_torch_compile_calls_the_operator(monkeypatch):
    calls = []
    built = cpu_kernel.load()

    class Counting:
        def forward(self, *args):
            calls.append("forward")
            return built.forward(*args)

        def backward(self, *args):
            calls.append("backward")
            return built.backward(*args)

    monkeypatch.setattr(cpu_kernel, "load", lambda: Counting())
    torch.manual_seed(0)
    module = CastlingAttention(32, 2, alpha=0.0)
    x = torch.randn(2, 16, 32, requires_grad=True)
    eager = module(x)
    compiled = torch.compile(module, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager)
    compiled.sum().backward()
    assert calls.count("forward") == 2 and calls.count("backward") == 1  # eager once, compiled once; its backward
