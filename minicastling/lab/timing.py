"""Timing and its yardsticks: medians after warm-up, contestants taking turns, ratios round by round.

Speed claims are ratios against a peer measured in the same run (DESIGN: Budgets), never absolute
goals inside tests; bench.py builds its comparisons from these.
"""

import contextlib
import statistics
import time

import torch


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


def run_once(fn, *inputs, backward: bool = True):
    """A closure running fn(*inputs) once: forward + backward on fresh leaves, or forward under no_grad."""
    if backward:
        leaves = [t.detach().requires_grad_() for t in inputs]
        return lambda: fn(*leaves).sum().backward()

    def forward():
        with torch.no_grad():
            fn(*inputs)

    return forward


def interleaved_times(calls: dict, rounds: int = 12, seconds_per_round: float = 0.05,
                      device=torch.device("cpu")) -> dict:
    """Seconds per call of each contestant in each of `rounds` rounds, the contestants taking turns.

    Taking turns puts a drifting machine's slow and fast moments on every contestant alike; a ratio
    is then taken round by round (ratio_summary), so one noisy round spoils one ratio, not all.
    Each round calls a contestant about `seconds_per_round` worth of times, after one warm-up call.
    """
    counts = {}
    for name, call in calls.items():
        call()  # warm-up, and a first estimate of its duration
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        counts[name] = max(1, round(seconds_per_round / max(time.perf_counter() - start, 1e-6)))
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / counts[name])
    return times


def ratio_summary(times: dict, peer: str, contender: str) -> dict:
    """peer / contender, round by round: median and range, beside each one's median time in ms."""
    ratios = [a / b for a, b in zip(times[peer], times[contender])]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "peer_ms": 1e3 * statistics.median(times[peer]), "contender_ms": 1e3 * statistics.median(times[contender])}


@contextlib.contextmanager
def _threads(count: int):
    """torch's intra-op thread count set to `count` inside the block, restored after it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
