"""Measuring attention: median time after warm-up, peak memory, sweeps over token count.

Speed claims are ratios against a peer measured in the same run (DESIGN: Budgets), never
absolute goals inside tests. `python -m minicastling bench` prints the headline comparison.
"""

import contextlib
import os
import statistics
import time

import torch
import torch.nn.functional as F

from .attention import linear_angular_attention, quadratic_attention


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int = 10, warmup: int = 2, device=torch.device("cpu")) -> float:
    """Median wall time of fn() in seconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ profiler's start/stop lines, which bypass Python's logging."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory(fn, device=torch.device("cpu")) -> int:
    """Peak bytes allocated while fn() runs, above what was allocated before.

    CUDA: the caching allocator's peak. CPU: the profiler's allocation events, summed in order,
    so tensors freed inside fn (the N×N scores, say) count while they were alive.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def explicit_softmax(q, k, v):
    return quadratic_attention(q, k, v, "softmax")


def linear_official(q, k, v):
    return linear_angular_attention(q, k, v, form="official")


def linear_kernel(q, k, v):
    return linear_angular_attention(q, k, v, form="kernel")


ATTENTION_FUNCTIONS = {
    "explicit softmax": explicit_softmax,
    "torch SDPA": sdpa,
    "linear-angular (official)": linear_official,
    "linear-angular (kernel)": linear_kernel,
}


def attention_step(fn, q, k, v, backward: bool):
    """A closure running fn once: forward under no_grad, or forward + backward."""
    if backward:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        return lambda: fn(*leaves).sum().backward()

    def forward():
        with torch.no_grad():
            fn(q, k, v)

    return forward


def scaling_sweep(
    functions: dict, tokens, batch=1, heads=4, head_dim=32, backward=False, repeats=5,
    device=torch.device("cpu"), memory=True, give_up_seconds=2.0, progress=None,
):
    """Time (and peak memory) of each attention function at each token count.

    Returns rows {method, tokens, seconds, peak_mib}. Once a method takes over
    `give_up_seconds` per call, its larger token counts are skipped (seconds None).
    """
    rows, slow = [], set()
    for n in tokens:
        q, k, v = (torch.randn(batch, heads, n, head_dim, device=device) for _ in range(3))
        for name, fn in functions.items():
            if name in slow:
                rows.append({"method": name, "tokens": n, "seconds": None, "peak_mib": None})
                continue
            step = attention_step(fn, q, k, v, backward)
            seconds = median_time(step, repeats=repeats, warmup=1, device=device)
            peak = peak_memory(step, device) / 2**20 if memory else None
            rows.append({"method": name, "tokens": n, "seconds": seconds, "peak_mib": peak})
            if seconds > give_up_seconds:
                slow.add(name)
            if progress is not None:
                progress.update(1)
    return rows


def crossover(rows, fast: str, slow: str, metric: str = "seconds"):
    """The smallest token count from which `fast` beats `slow` at every larger count, or None."""
    by = {(r["method"], r["tokens"]): r[metric] for r in rows}
    counts = sorted({r["tokens"] for r in rows})
    answer = None
    for n in reversed(counts):
        a, b = by.get((fast, n)), by.get((slow, n))
        if a is None or b is None:
            continue
        if a >= b:
            break
        answer = n
    return answer


def sdpa_ratios(batch=8, heads=4, head_dim=32, repeats=10, device=torch.device("cpu")):
    """Linear-angular vs torch SDPA, measured in one run: fwd+bwd at 1,024 and fwd at 4,096 tokens.

    Returns rows {setting, method, ms, speedup_vs_sdpa}.
    """
    rows = []
    for tokens, backward in [(1024, True), (4096, False)]:
        setting = f"{'fwd+bwd' if backward else 'forward'} @ {tokens} tokens"
        q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device) for _ in range(3))
        times = {
            name: median_time(attention_step(ATTENTION_FUNCTIONS[name], q, k, v, backward), repeats, 2, device)
            for name in ("torch SDPA", "linear-angular (official)", "linear-angular (kernel)")
        }
        for name, seconds in times.items():
            rows.append({"setting": setting, "method": name, "ms": 1e3 * seconds,
                         "speedup_vs_sdpa": times["torch SDPA"] / seconds})
    return rows
