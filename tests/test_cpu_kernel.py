"""The compiled CPU kernel (minicastling.fast.cpu_kernel) against the readable forms, in float64; its operator;
the path choice (castling.choose_path) and the one step that builds it."""

import math
import os
import threading
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minicastling.attention import linear_angular_attention
from minicastling.branches import masked_softmax_attention
from minicastling.castling import CastlingAttention, build_fast_path, choose_path, paths_run
from minicastling.fast import cpu_kernel, library_calls
from minicastling.model import ViT, ViTConfig

# (batch, tokens, heads, head_dim): batch 1, one token, odd counts, every compiled head_dim, a block boundary
SHAPES = [(1, 1, 1, 16), (2, 7, 3, 16), (1, 49, 2, 24), (3, 17, 2, 32), (1, 5, 1, 48), (2, 9, 2, 64), (1, 50, 1, 16)]


@pytest.fixture(autouse=True)
def kernel():
    line = cpu_kernel.build()
    if not cpu_kernel.ready():
        pytest.skip(f"the CPU kernel could not be built here (no C++ compiler or ninja): {line}")


def readable(qkv, heads, weight=None, form="kernel", alpha=None, threshold=0.02):
    """Linear-angular attention, the token conv with `weight` (H, 1, k, 1) and α · the masked softmax branch,
    as the readable functions compute them."""
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
    auxiliary = None if alpha is None else alpha * masked_softmax_attention(q, k, v, threshold)
    out = linear_angular_attention(q, k, v, form=form, auxiliary=auxiliary)
    if weight is None:
        return out
    b, h, n, d = v.shape  # the authors' conv: each head's filter over the flattened tokens, as TokenConv1d runs it
    tokens = rearrange(v, "b h n d -> b (h d) n 1")
    filters = weight.expand(h, d, weight.shape[2], 1).reshape(h * d, 1, weight.shape[2], 1)
    conv = F.conv2d(tokens, filters, padding=(weight.shape[2] // 2, 0), groups=h * d)
    return out + rearrange(conv, "b (h d) n 1 -> b h n d", h=h)


def inputs_for(shape, kernel_size, seed=0, spread=1.0):
    b, n, h, d = shape
    g = torch.Generator().manual_seed(seed)
    qkv = (spread * torch.randn(b, n, 3 * h * d, generator=g, dtype=torch.float64)).requires_grad_()
    weight = None if kernel_size is None else torch.randn(h, 1, kernel_size, 1, generator=g, dtype=torch.float64,
                                                          requires_grad=True)
    return qkv, weight, [qkv] + ([weight] if weight is not None else [])


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("kernel_size", [9, 3, None])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_the_readable_form_in_values_and_gradients(shape, kernel_size, form, same_values_and_gradients):
    qkv, weight, inputs = inputs_for(shape, kernel_size)
    same_values_and_gradients(cpu_kernel.linear_angular_conv(qkv, shape[2], weight, form=form),
                              readable(qkv, shape[2], weight, form), inputs)


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("spread", [0.3, 1.0, 4.0])  # near-uniform rows, a dense mask, a sparse one
@pytest.mark.parametrize("shape", [(2, 7, 3, 16), (1, 49, 2, 24), (2, 196, 1, 32), (1, 61, 2, 64)])
def test_the_softmax_branch_inside_the_kernel_equals_the_readable_branch(shape, spread, form, same_values_and_gradients):
    qkv, weight, inputs = inputs_for(shape, 9, seed=3, spread=spread)
    alpha = torch.tensor(0.7, dtype=torch.float64)
    same_values_and_gradients(cpu_kernel.linear_angular_conv(qkv, shape[2], weight, form=form, alpha=alpha),
                              readable(qkv, shape[2], weight, form, alpha), inputs)


def test_the_branch_runs_dense_and_sparse_rows_alike():
    """Rows whose mask keeps many weights run dense products, rows that keep few run loops over the kept ones:
    both give the readable branch's numbers, in float32 too."""
    b, n, h, d = 2, 196, 2, 32
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(b, n, 3 * h * d, generator=g)
    qkv[0, :, : h * d] *= 8.0  # image 0: sharp rows, few weights above the threshold; image 1: many
    qkv[1, :, : h * d] *= 0.2
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=h)
    threshold = 0.004
    kept = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) > threshold).double().mean(dim=(1, 2, 3))
    assert kept[0] < 1 / 32 and kept[1] > 1 / 2  # one image on each side of the kernel's switch at 1/16
    for dtype, tolerance in ((torch.float64, {}), (torch.float32, dict(rtol=1e-4, atol=1e-5))):
        x = qkv.to(dtype).requires_grad_()
        alpha = torch.tensor(1.0, dtype=dtype)
        fast = cpu_kernel.linear_angular_conv(x, h, form="official", alpha=alpha, threshold=threshold)
        reference = readable(x, h, form="official", alpha=alpha, threshold=threshold)
        torch.testing.assert_close(fast, reference, **tolerance)
        for got, expected in zip(torch.autograd.grad(fast.sum(), x), torch.autograd.grad(reference.sum(), x)):
            torch.testing.assert_close(got, expected, **tolerance)


def test_the_mask_keeps_weights_strictly_above_the_threshold():
    """Zero queries make every weight exactly 1/N: a threshold of exactly 1/N keeps none, one just below keeps all."""
    n, h, d = 16, 1, 16
    qkv = torch.randn(1, n, 3 * h * d, dtype=torch.float64)
    qkv[..., :d] = 0.0
    qkv.requires_grad_()
    alpha = torch.tensor(1.0, dtype=torch.float64)
    for threshold in (1 / n, 1 / n - 1e-12):
        fast = cpu_kernel.linear_angular_conv(qkv, h, form="kernel", alpha=alpha, threshold=threshold)
        reference = readable(qkv, h, form="kernel", alpha=alpha, threshold=threshold)
        torch.testing.assert_close(fast, reference)
        for got, expected in zip(torch.autograd.grad(fast.sum(), qkv), torch.autograd.grad(reference.sum(), qkv)):
            torch.testing.assert_close(got, expected)
    without = cpu_kernel.linear_angular_conv(qkv, h, form="kernel")
    torch.testing.assert_close(cpu_kernel.linear_angular_conv(qkv, h, form="kernel", alpha=alpha, threshold=1 / n),
                               without)  # nothing kept: the branch adds exactly nothing


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_kernel_passes_gradcheck_with_and_without_the_branch(form):
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 6, 3 * 2 * 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 1, generator=g, dtype=torch.float64, requires_grad=True)
    for alpha in (None, torch.tensor(0.6, dtype=torch.float64)):
        assert torch.autograd.gradcheck(
            lambda x, w: cpu_kernel.linear_angular_conv(x, 2, w, form=form, alpha=alpha, threshold=0.1), (qkv, weight))


def test_zero_queries_and_keys_take_the_epsilon_branch_as_the_readable_form_does(same_values_and_gradients):
    qkv = torch.randn(1, 6, 3 * 16, dtype=torch.float64)
    qkv[:, 2, :32] = 0.0  # token 2's q and k
    qkv.requires_grad_(True)
    same_values_and_gradients(cpu_kernel.linear_angular_conv(qkv, 1), readable(qkv, 1), [qkv])


def test_output_is_token_major_so_merging_heads_is_free():
    out = cpu_kernel.linear_angular_conv(torch.randn(2, 10, 3 * 3 * 16), 3, alpha=torch.tensor(0.5))
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
def test_every_path_of_the_module_gives_the_readable_numbers(conv, alpha, form, gradients):
    torch.manual_seed(0)
    modules = {path: CastlingAttention(32, 2, form=form, conv=conv, alpha=alpha, path=path).double()
               for path in ("readable", "library", "cpu-kernel", "auto")}  # head_dim 16: covered
    for module in modules.values():
        module.load_state_dict(modules["readable"].state_dict())
    for batch, tokens in ((1, 49), (2, 17)):
        x = torch.randn(batch, tokens, 32, dtype=torch.float64, requires_grad=True)
        outputs = {path: module(x) for path, module in modules.items()}
        grads = {path: gradients(out, [x, *modules[path].parameters()]) for path, out in outputs.items()}
        for path in ("library", "cpu-kernel", "auto"):
            torch.testing.assert_close(outputs[path], outputs["readable"])
            for got, expected in zip(grads[path], grads["readable"]):
                torch.testing.assert_close(got, expected)


def test_auto_takes_the_kernel_once_built_and_the_readable_form_runs_when_asked(monkeypatch):
    def nothing(*args, **kwargs):
        raise AssertionError("a path other than the chosen one ran")

    monkeypatch.setattr(library_calls, "linear_angular", nothing)
    for form in ("kernel", "official"):
        for alpha in (0.0, 0.5):  # the softmax branch off and on
            module = CastlingAttention(64, 2, form=form, alpha=alpha)
            module(torch.randn(2, 10, 64)).sum().backward()
            assert paths_run(module, "cpu") == ["cpu-kernel"]
    monkeypatch.setattr(cpu_kernel, "linear_angular_conv", nothing)
    module = CastlingAttention(64, 2, alpha=0.5, path="readable")
    module(torch.randn(2, 10, 64)).sum().backward()
    assert "path='readable'" in repr(module)


@pytest.mark.parametrize("options, dim, heads", [(dict(conv="2d"), 32, 2), ({}, 12, 3)])  # head_dim 4: not compiled
def test_calls_the_kernel_does_not_cover_take_library_calls_or_say_why_not(options, dim, heads):
    module = CastlingAttention(dim, heads, **options)
    qkv = torch.randn(1, 16, 3 * dim)
    assert choose_path("auto", qkv, dim // heads, module.conv) == "library"
    assert module(torch.randn(1, 16, dim)).shape == (1, 16, dim)
    with pytest.raises(RuntimeError, match="path='cpu-kernel' cannot compute this call: it covers CPU tensors"):
        CastlingAttention(dim, heads, path="cpu-kernel", **options)(torch.randn(1, 16, dim))


def test_nothing_builds_the_kernel_but_build(monkeypatch):
    """Before build() a process runs library calls, and asking for the kernel says what to call."""
    monkeypatch.setattr(cpu_kernel, "_built", {"module": None, "tried": False})
    from torch.utils import cpp_extension

    def no_building(**kwargs):
        raise AssertionError("something other than build() compiled the kernel")

    monkeypatch.setattr(cpp_extension, "load", no_building)
    module = CastlingAttention(32, 2, alpha=0.5)
    module(torch.randn(1, 5, 32)).sum().backward()
    assert not cpu_kernel.ready() and paths_run(module, "cpu") == ["library"]
    with pytest.raises(RuntimeError, match=r"call minicastling.fast.cpu_kernel.build\(\) first"):
        CastlingAttention(32, 2, path="cpu-kernel")(torch.randn(1, 5, 32))


def test_switch_turns_the_kernel_off_and_rejects_nonsense(monkeypatch):
    module = CastlingAttention(32, 2)
    assert paths_run(module, "cpu") == ["cpu-kernel"]
    monkeypatch.setenv(cpu_kernel.SWITCH, "0")
    assert paths_run(module, "cpu") == ["library"]
    assert cpu_kernel.build() == "CPU kernel: off ($MINICASTLING_CPU_KERNEL=0)"
    monkeypatch.setenv(cpu_kernel.SWITCH, "maybe")
    with pytest.raises(ValueError, match="MINICASTLING_CPU_KERNEL='maybe'.*1.*0"):
        cpu_kernel.enabled()


def test_a_failed_build_warns_once_and_leaves_the_library_path(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension\ng++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(cpu_kernel, "_built", {"module": None, "tried": False})
    with pytest.warns(RuntimeWarning, match="could not be built .*g\\+\\+: command not found.*library-call path"):
        line = cpu_kernel.build()
    assert line.startswith("CPU kernel: could not be built")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernel.build() == line  # no second warning, no second try
        module = CastlingAttention(32, 2)
        assert module(torch.randn(1, 5, 32)).shape == (1, 5, 32) and paths_run(module, "cpu") == ["library"]


def test_a_build_in_another_process_is_waited_for_and_a_stopped_one_is_an_error_that_says_what_to_delete(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernel, "_built", {"module": None, "tried": False})
    folder = tmp_path / cpu_kernel.build_name()
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()  # a build in progress in another process: waited for until it ends, not refused
    threading.Timer(0.3, lock.unlink).start()
    started = time.perf_counter()
    cpu_kernel.wait_for_another_build(poll=0.05)
    assert 0.25 < time.perf_counter() - started < 5 and not lock.exists()
    old = time.time() - cpu_kernel.STALE_LOCK_SECONDS - 60
    lock.touch()
    threading.Timer(0.2, lambda: os.utime(lock, (old, old))).start()  # a build that stops while it is waited for
    with pytest.raises(RuntimeError, match="stopped half-way"):
        cpu_kernel.wait_for_another_build(poll=0.05)
    os.utime(lock, (old, old))
    with pytest.raises(RuntimeError, match=f"stopped half-way.*delete the folder {folder}"):
        cpu_kernel.build()
    assert cpu_kernel._built == {"module": None, "tried": False}  # nothing given up: a rerun after the delete builds


def test_build_fast_path_builds_only_for_models_that_could_use_it():
    castling = ViT(ViTConfig(image_size=8, channels=1, patch_size=2, dim=32, num_heads=2, depth=1))
    assert build_fast_path(castling, torch.device("cpu")) == "CPU kernel: ready"
    for config in (dict(attention="softmax"), dict(path="library"), dict(conv="2d")):
        model = ViT(ViTConfig(image_size=8, channels=1, patch_size=2, dim=32, num_heads=2, depth=1, **config))
        assert build_fast_path(model, torch.device("cpu")) is None


def test_the_operator_passes_torch_library_opcheck():
    """Fake (meta) implementation, autograd registration and schema, as torch.library checks them."""
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, 9, 3 * 2 * 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 9, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64)
    operator = torch.ops.minicastling.linear_angular_conv.default
    for official in (False, True):
        for args in ((qkv, weight, 2, 1e-6, True, official, None, 0.02), (qkv, None, 2, 1e-6, True, official, alpha, 0.02),
                     (qkv, weight, 2, 1e-6, True, official, alpha, 0.05),
                     (qkv.detach(), None, 2, 1e-6, False, official, alpha, 0.02)):
            torch.library.opcheck(operator, args)


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_flop_counter_counts_the_operator_as_the_library_calls(monkeypatch, form, alpha):
    from minicastling.measure import macs

    module = CastlingAttention(64, 2, form=form, alpha=alpha)
    x = torch.randn(2, 16, 64)
    with_kernel = macs(module, x), macs(module, x, backward=True)
    module.path = "library"
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
    module = CastlingAttention(32, 2, alpha=0.5)
    x = torch.randn(2, 16, 32, requires_grad=True)
    eager = module(x)
    compiled = torch.compile(module, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager)
    compiled.sum().backward()
    assert calls.count("forward") == 2 and calls.count("backward") == 1  # eager once, compiled once; its backward
