"""What every checker shares: calling the student's function safely, comparing tensors and numbers,
and saying in words what differs.

A checker is written as checker(ex, fn) in its tutorial's module (tutorial01.py … tutorial07.py) and
registered with @exercise; a pass prints one line, a failure raises CheckFailed, whose message is the
whole story (notebooks show it without a traceback).
"""

import contextlib
import inspect
import math
import signal
import threading
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class CheckFailed(Exception):
    """A checker's verdict: what was wrong, where, and what to try."""

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback
        return ["CheckFailed: " + str(self)]


@dataclass(frozen=True)
class Exercise:
    tutorial: str
    number: int
    level: str  # "warm-up", "core" or "stretch"
    name: str
    hint: str

    @property
    def label(self) -> str:
        return f"Exercise {self.tutorial}.{self.number} ({self.name})"


EXERCISES: dict[str, Exercise] = {}  # by the name of the function the student writes


LEVELS = ("warm-up", "core", "stretch")


def exercise(tutorial: str, number: int, level: str, hint: str):
    """Register a checker under its own name, which is also the name of the function it checks.

    The checker is written as checker(ex, fn) and called as check.NAME(fn): ex is its Exercise.
    The hint says where to start, never the code: student copies raise it from their stubs.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")

    def register(checker):
        entry = Exercise(tutorial, number, level, checker.__name__, hint)
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
        elif isinstance(value, torch.nn.Module):
            parts.append(f"{name}=a {type(value).__name__}")
        elif callable(value):
            parts.append(f"{name}={getattr(value, '__name__', 'a function')}")
        elif isinstance(value, list):
            parts.append(f"{name} (a list of {len(value)})")
        else:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


SECONDS_PER_CALL = 120  # far beyond what any exercise's answer needs on a laptop CPU


@contextlib.contextmanager
def time_limit(ex: Exercise, case: dict, seconds: int = SECONDS_PER_CALL):
    """Stop a call that runs for minutes (a loop that never ends, say) with words instead of a hung cell.

    Uses SIGALRM, so only in the main thread of a Unix process (a notebook's kernel is one); elsewhere the
    call simply runs.
    """
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise CheckFailed(f"{ex.label}: your function ran for over {seconds} s on {describe(case)} and was "
                          "stopped. Look for a loop whose condition is never met (in a search for a count, "
                          "does the quantity you test ever reach its target?).")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def call(ex: Exercise, fn, case: dict):
    """fn(**case), with everything that can go wrong on the way said in words."""
    if not callable(fn):
        raise CheckFailed(f"{ex.label}: pass your function itself, as in check.{ex.name}({ex.name}); "
                          f"got a {type(fn).__name__}")
    originals = {k: v.detach().clone() for k, v in case.items() if isinstance(v, torch.Tensor)}
    args, kwargs = _arguments(fn, case)
    try:
        with time_limit(ex, case):
            out = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{ex.label} is not written yet: replace the `raise NotImplementedError` line "
                          f"with your code, run that cell, then this one.\nHint: {ex.hint}") from None
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug, reported with the inputs that triggered it
        advice = ""
        if isinstance(error, TypeError) and "argument" in str(error):
            advice = (f"\nKeep the parameters of the exercise's stub, in its order: the checker calls "
                      f"{ex.name}({', '.join(case)}).")
        raise CheckFailed(f"{ex.label}: your function raised {type(error).__name__}: {error}\n"
                          f"It was called with {describe(case)}.{advice}") from None
    for name, before in originals.items():
        if not torch.equal(case[name].detach(), before) and not _same_nan(case[name].detach(), before):
            raise CheckFailed(f"{ex.label}: your function changed its input `{name}` in place "
                              f"(called with {describe(case)}). Work on new tensors (x = x / n, not x /= n): "
                              "the caller still needs its input.")
    return out


def _arguments(fn, case: dict) -> tuple:
    """(args, kwargs) for calling fn on case: by the stub's parameter names, or, where the student renamed them
    and kept their order and number, by position."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: by name
        return (), case
    try:
        signature.bind(**case)
    except TypeError:
        try:
            signature.bind(*case.values())
        except TypeError:
            return (), case  # neither fits: the call fails and says which names the checker passes
        return tuple(case.values()), {}
    return (), case


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
        try:
            (out * weight).sum().backward()
        except RuntimeError as error:
            if not is_student:
                raise
            inplace = "modified by an inplace operation" in str(error)
            raise CheckFailed(f"{ex.label}: your values are right, but autograd cannot differentiate your function "
                              f"(for {describe(case)}): " + ("a tensor the gradient needs was changed in place "
                              "(x /= y, x += y, x[...] = …): compute a new tensor instead, x = x / y." if inplace
                              else str(error).splitlines()[0])) from None
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


def _stored_entries(tensor: torch.Tensor) -> int:
    """How many entries a tensor really holds: an expanded view (stride 0) holds far fewer than it shows."""
    try:
        return min(tensor.numel(), tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1))
    except (RuntimeError, NotImplementedError):  # a tensor without ordinary storage
        return tensor.numel()


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates, by the entries it stores."""

    def __init__(self):
        super().__init__()
        self.shape, self.numel, self.paused = (), 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in () if self.paused else out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and _stored_entries(tensor) > self.numel:
                self.shape, self.numel = tuple(tensor.shape), _stored_entries(tensor)
        return out


class _Uncounted(TorchFunctionMode):
    """Pauses a _LargestTensor while any of `functions` runs: what torch builds inside its own attention call
    is not the student's. Torch functions are seen here however the student imported them."""

    def __init__(self, largest: _LargestTensor, functions):
        super().__init__()
        self.largest, self.functions = largest, tuple(functions)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in self.functions:
            return func(*args, **(kwargs or {}))
        self.largest.paused = True
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.largest.paused = False


class _Work(TorchDispatchMode):
    """Counts the numbers every operation reads and writes (views, which move nothing, are free): a measure
    of time that a loop cannot hide, since every step of a loop is counted."""

    def __init__(self):
        super().__init__()
        self.numbers = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            tensors = [a for a in [*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else (out,))]
                       if isinstance(a, torch.Tensor)]
            self.numbers += sum(t.numel() for t in tensors)
        return out


def _inputs(tokens: int, head_dim: int, extra) -> dict:
    g = torch.Generator().manual_seed(3)
    case = {name: torch.randn(1, 1, tokens, head_dim, generator=g) for name in ("q", "k", "v")}
    case.update(extra(tokens, head_dim) if extra else {})
    return case


def largest_tensor(ex: Exercise, fn, case: dict, uncounted=()) -> "_LargestTensor":
    """fn(**case) without gradients, recording the largest tensor it builds (.numel, .shape); what the functions in
    `uncounted` build inside themselves (torch's attention call, say) is not counted."""
    with torch.no_grad(), _LargestTensor() as largest, _Uncounted(largest, uncounted):
        call(ex, fn, case)
    return largest


def linear_in_tokens(ex: Exercise, fn, tokens: int = 2048, head_dim: int = 4, extra=None) -> None:
    """Fails if fn builds any tensor with N² entries for N tokens, or if its work grows faster than N (a loop
    over queries that meets every key at each step): the two ways to be O(N²) that O(N) attention avoids.

    extra(tokens, head_dim) gives the function's other inputs, if it has any.
    """
    largest = largest_tensor(ex, fn, _inputs(tokens, head_dim, extra))
    if largest.numel >= tokens * tokens:
        raise CheckFailed(f"{ex.label}: your values are right, but for N = {tokens} tokens your function built a "
                          f"tensor of shape {largest.shape} ({largest.numel:,} entries, N² = {tokens * tokens:,}): "
                          "that is the O(N²) matrix this exercise avoids. Multiply keys with values first "
                          "(associativity), so no tensor has a token axis twice.")
    linear_in_time(ex, fn, head_dim, extra)


def linear_in_time(ex: Exercise, fn, head_dim: int = 4, extra=None, sizes=(128, 1024)) -> None:
    """Fails if the numbers fn's operations read and write grow faster than N^1.5 from sizes[0] to sizes[1] tokens."""
    work = []
    for tokens in sizes:
        with torch.no_grad(), _Work() as counted:
            call(ex, fn, _inputs(tokens, head_dim, extra))
        work.append(max(counted.numbers, 1))
    growth = math.log(work[1] / work[0]) / math.log(sizes[1] / sizes[0])
    if growth > 1.5:
        raise CheckFailed(f"{ex.label}: your values are right and no tensor has N² entries, but your function's work "
                          f"grows like N^{growth:.1f}: from N = {sizes[0]:,} to {sizes[1]:,} tokens ({sizes[1] // sizes[0]}× "
                          f"as many) its operations read and wrote {work[0]:,} and then {work[1]:,} numbers "
                          f"({work[1] / work[0]:.0f}× as many). A loop over the queries (or the keys) in which every "
                          "step meets every key costs N² time without ever holding an N × N matrix. Let the keys meet "
                          "the values once, before any work per query, so each query costs the same at any N.")


def compare(ex: Exercise, fn, reference, cases, differentiable=(), rtol=1e-4, atol=1e-5) -> None:
    """Values on every case, then gradients on every case that has differentiable inputs."""
    for case in cases:
        same_tensor(ex, call(ex, fn, case), reference(**case), case, rtol, atol)
    for case in cases:
        if differentiable and all(case[name].is_floating_point() for name in differentiable):
            same_gradients(ex, fn, reference, case, differentiable, rtol * 10, atol * 10)


FLOAT32 = 1e-4  # float32 holds accuracies near 86 points to about 1e-5 each; every slip the checkers name is 1e-2 or more off


def plain_number(got):
    """A one-element tensor or a numpy scalar (np.float32, say) as the Python number it holds; anything else as is."""
    if (isinstance(got, torch.Tensor) and got.numel() == 1) or type(got).__module__ == "numpy":
        return got.item()
    return got


def same_number(ex: Exercise, got, expected: float, case: dict, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                explain: str = "", what: str = "the answer") -> None:
    """A function that returns one number: a Python number (or a one-element tensor) close to expected.
    `what` names the number in the message ("the interval's lower end", say)."""
    got = plain_number(got)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise CheckFailed(f"{ex.label}: return a number; got a {type(got).__name__} for {describe(case)}.")
    if not math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        digits = next(d for d in range(6, 18) if f"{got:.{d}g}" != f"{expected:.{d}g}" or d == 17)
        raise CheckFailed(f"{ex.label}: for {describe(case)} {what} is {expected:.{digits}g}; yours is "
                          f"{got:.{digits}g}." + (f" {explain}" if explain else ""))


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


def numbers_in(value) -> list:
    """The numbers in a value, in order: nested tuples, lists, numpy arrays and tensors are opened."""
    if hasattr(value, "tolist"):  # a numpy array or scalar, a tensor
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        return [number for item in value for number in numbers_in(item)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    raise TypeError(type(value).__name__)


def interval_answer(ex: Exercise, got, case: dict) -> tuple:
    """(difference, (low, high)) from any sequence of those three numbers: (d, (low, high)), (d, low, high), an array."""
    if isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], (tuple, list)) and len(got[0]) == 2:
        raise CheckFailed(f"{ex.label}: return the difference first, then its interval: (difference, (low, high)); "
                          f"got {got!r} for {describe(case)}, the interval first.")
    try:
        numbers = numbers_in(got)
    except TypeError as what:
        numbers = f"a {what}"
    if not isinstance(numbers, list) or len(numbers) != 3:
        found = numbers if isinstance(numbers, str) else f"{len(numbers)} numbers"
        raise CheckFailed(f"{ex.label}: return the difference and its interval, (difference, (low, high)) or any "
                          f"sequence of those three numbers; got {got!r} ({found}) for {describe(case)}.")
    return numbers[0], (numbers[1], numbers[2])


def swapped_ends(low: float, high: float) -> dict:
    """The mistake of returning an interval's ends in the wrong order, for known_mistake."""
    return {"The two ends are swapped: return (low, high), the lower end first.": (high, low)}


def known_mistake(got: tuple, mistakes: dict) -> str:
    """The explanation of the first wrong answer in `mistakes` ({explanation: numbers}, an interval's (low, high) or
    a single (value,)) that `got` matches, or an empty string when it matches none (to 0.1 %, so that 1.96 matches
    z_0.975): feedback that names the slip a student made."""
    for explanation, theirs in mistakes.items():
        if len(got) == len(theirs) and all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6) for a, b in zip(got, theirs)):
            return explanation
    return ""
