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


def run_once(fn, *inputs, backward: bool = True):
    """A closure running fn(*inputs) once: forward + backward on fresh leaves, or forward under no_grad."""
    if backward:
        leaves = [t.detach().requires_grad_() for t in inputs]
        return lambda: fn(*leaves).sum().backward()

    def forward():
        with torch.no_grad():
            fn(*inputs)

    return forward


def _sweep(contestants: dict, make_inputs, tokens, square_bytes, quadratic=(), backward=False, repeats=5,
           device=torch.device("cpu"), memory=True, give_up_seconds=2.0, max_square_bytes=2**31):
    """Time (and peak memory) of each contestant at each token count: rows {method, tokens, seconds, peak_mib}.

    A contestant is skipped (seconds None) at the counts after one call took over `give_up_seconds`,
    and, if named in `quadratic`, wherever its N×N matrices (square_bytes(n)) would pass max_square_bytes.
    """
    rows, slow = [], set()
    for n in tokens:
        inputs = make_inputs(n)
        for name, fn in contestants.items():
            if name in slow or (name in quadratic and square_bytes(n) > max_square_bytes):
                rows.append({"method": name, "tokens": n, "seconds": None, "peak_mib": None})
                continue
            call = run_once(fn, *inputs, backward=backward)
            seconds = median_time(call, repeats, 1, device)
            peak = peak_memory(call, device) / 2**20 if memory else None
            rows.append({"method": name, "tokens": n, "seconds": seconds, "peak_mib": peak})
            if seconds > give_up_seconds:
                slow.add(name)
    return rows


def scaling_sweep(functions: dict, tokens, batch=1, heads=4, head_dim=32, backward=False, repeats=5,
                  device=torch.device("cpu"), memory=True, give_up_seconds=2.0, max_square_bytes=2**31):
    """Time (and peak memory) of attention functions f(q, k, v) at each token count.

    Returns rows {method, tokens, seconds, peak_mib}. Once a method takes over `give_up_seconds`
    per call, its larger token counts are skipped (seconds None); so is explicit softmax wherever
    its (B, H, N, N) matrices would pass `max_square_bytes`.
    """
    return _sweep(
        functions, lambda n: [torch.randn(batch, heads, n, head_dim, device=device) for _ in range(3)], tokens,
        square_bytes=lambda n: 4 * batch * heads * n * n * 3,
        quadratic={name for name, fn in functions.items() if fn is explicit_softmax},
        backward=backward, repeats=repeats, device=device, memory=memory, give_up_seconds=give_up_seconds,
        max_square_bytes=max_square_bytes,
    )


def speedups(rows, method: str, peer: str, metric: str = "seconds") -> dict:
    """{tokens: peer / method} wherever both were measured (a skipped size has metric None)."""
    by = {(r["method"], r["tokens"]): r[metric] for r in rows}
    counts = sorted({r["tokens"] for r in rows})
    return {n: by[(peer, n)] / by[(method, n)] for n in counts if by.get((peer, n)) and by.get((method, n))}


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
            name: median_time(run_once(ATTENTION_FUNCTIONS[name], q, k, v, backward=backward), repeats, 2, device)
            for name in ("torch SDPA", "linear-angular (official)", "linear-angular (kernel)")
        }
        for name, seconds in times.items():
            rows.append({"setting": setting, "method": name, "ms": 1e3 * seconds,
                         "speedup_vs_sdpa": times["torch SDPA"] / seconds})
    return rows


def castled_module(dim: int, heads: int, **options):
    """A CastlingAttention after castling: what runs at inference."""
    from .attention import CastlingAttention

    module = CastlingAttention(dim, heads, alpha=0.0, **options)
    return module.castle()


def module_ratios(tokens=(64, 256, 1024), batch=8, dim=128, heads=4, repeats=15, device=torch.device("cpu")):
    """Castled CastlingAttention vs its SoftmaxAttention twin, fwd+bwd, measured in one run.

    Returns rows {tokens, twin_ms, castled_ms, training_ms, speedup} (speedup = twin / castled).
    """
    from .attention import CastlingAttention, SoftmaxAttention

    torch.manual_seed(0)
    twin = SoftmaxAttention(dim, heads).to(device)
    castled = castled_module(dim, heads).to(device)
    training = CastlingAttention(dim, heads, alpha=1.0).to(device)
    rows = []
    for n in tokens:
        x = torch.randn(batch, n, dim, device=device)
        times = {}
        for _ in range(2):  # interleave the contestants, keep each one's best median
            for name, module in (("twin", twin), ("castled", castled), ("training", training)):
                t = median_time(run_once(module, x), repeats, 3, device)
                times[name] = min(t, times.get(name, float("inf")))
        rows.append({"tokens": n, "twin_ms": 1e3 * times["twin"], "castled_ms": 1e3 * times["castled"],
                     "training_ms": 1e3 * times["training"], "speedup": times["twin"] / times["castled"]})
    return rows


def machine_limits(device=torch.device("cpu"), repeats=10):
    """This machine's plain float32 matmul GFLOP/s and copy GB/s, the yardsticks for the linear path."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    matmul = median_time(lambda: a @ b, repeats, 2, device)
    big = torch.randn(32 * 2**20 // 4, device=device)  # 32 MiB
    copy = median_time(lambda: big.clone(), repeats, 2, device)
    return {"matmul_gflops": 2 * 1024**3 / matmul / 1e9, "copy_gbs": 2 * big.numel() * 4 / copy / 1e9}


def linear_path_efficiency(tokens=4096, batch=8, heads=4, head_dim=32, repeats=10, device=torch.device("cpu")):
    """Achieved GFLOP/s and GB/s of linear-angular attention's forward, beside machine_limits().

    FLOPs: the two (d × d)-sized matmuls per head, 4·N·d². Bytes: q, k, v read and the output
    written once each, the least any implementation must move.
    """
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device) for _ in range(3))
    seconds = median_time(run_once(linear_kernel, q, k, v, backward=False), repeats, 2, device)
    flops = 4 * batch * heads * tokens * head_dim**2
    moved = 4 * q.numel() * 4
    return {"ms": 1e3 * seconds, "gflops": flops / seconds / 1e9, "gbs": moved / seconds / 1e9,
            **machine_limits(device, repeats)}


def memory_ratio(tokens=4096, heads=4, head_dim=32, device=torch.device("cpu")):
    """Peak memory of fwd+bwd at `tokens`: linear-angular (kernel) and SDPA against explicit softmax."""
    q, k, v = (torch.randn(1, heads, tokens, head_dim, device=device) for _ in range(3))
    peaks = {name: peak_memory(run_once(ATTENTION_FUNCTIONS[name], q, k, v), device)
             for name in ("explicit softmax", "torch SDPA", "linear-angular (kernel)")}
    return {name: {"mib": peak / 2**20, "vs_explicit": peak / peaks["explicit softmax"]} for name, peak in peaks.items()}


def module_sweep(tokens, batch=1, dim=128, heads=4, backward=True, repeats=5, device=torch.device("cpu"),
                 give_up_seconds=2.0, max_square_bytes=2**31):
    """Time and peak memory of the twin, castled and training-mode CastlingAttention against tokens.

    The training-mode module builds the (B, H, N, N) softmax for its auxiliary branch; sizes whose
    matrix would pass `max_square_bytes` are skipped, as are sizes after a call over give_up_seconds.
    """
    from .attention import CastlingAttention, SoftmaxAttention

    torch.manual_seed(0)
    modules = {"SoftmaxAttention (twin)": SoftmaxAttention(dim, heads).to(device),
               "CastlingAttention, castled": castled_module(dim, heads).to(device),
               "CastlingAttention, training (α=1)": CastlingAttention(dim, heads, alpha=1.0).to(device)}
    return _sweep(
        modules, lambda n: [torch.randn(batch, n, dim, device=device)], tokens,
        square_bytes=lambda n: 4 * batch * heads * n * n * 3, quadratic={"CastlingAttention, training (α=1)"},
        backward=backward, repeats=repeats, device=device, give_up_seconds=give_up_seconds,
        max_square_bytes=max_square_bytes,
    )


def model_throughput(image_sizes=(32, 64, 128), preset="smoke", batch=32, repeats=5, device=torch.device("cpu")):
    """Images/s of the castling ViT (training with α=1; castled for inference) against its softmax twin."""
    from .model import ViT, castled_copy, get_config

    rows = []
    for size in image_sizes:
        config = get_config(preset, image_size=size)
        torch.manual_seed(0)
        twin = ViT(config.replace(attention="softmax")).to(device)
        castling = ViT(config).to(device)  # α = 1: the training-time model
        castled = castled_copy(castling)
        images = torch.randn(batch, 3, size, size, device=device)

        def train_step(model):
            return lambda: model(images).sum().backward()

        def infer(model):
            model.eval()
            return lambda: torch.no_grad()(model)(images)

        timing = {
            "twin train": median_time(train_step(twin), repeats, 1, device),
            "castling train": median_time(train_step(castling), repeats, 1, device),
            "twin inference": median_time(infer(twin), repeats, 1, device),
            "castled inference": median_time(infer(castled), repeats, 1, device),
        }
        rows.append({"image_size": size, "tokens": config.tokens,
                     **{f"{k} img/s": batch / v for k, v in timing.items()},
                     "train ratio": timing["twin train"] / timing["castling train"],
                     "inference ratio": timing["twin inference"] / timing["castled inference"]})
    return rows


def full_benchmark(quick: bool = False, device=torch.device("cpu")) -> dict:
    """Everything `python -m minicastling bench` measures, in one run: a dict ready for JSON.

    Token counts 64 … 16,384 (quick: 64, 256). Explicit softmax and the training-mode module stop
    where their N×N matrices stop fitting or a call passes 2 s; those entries are None.
    """
    tokens = [64, 256] if quick else [64, 256, 1024, 4096, 16384]
    repeats = 2 if quick else 5
    return {
        "headline": sdpa_ratios(batch=1 if quick else 8, repeats=repeats, device=device),
        "modules": module_ratios(tokens=(64, 256) if quick else (64, 256, 1024), repeats=repeats, device=device),
        "memory_4096": memory_ratio(tokens=256 if quick else 4096, device=device),
        "efficiency": linear_path_efficiency(tokens=256 if quick else 4096, repeats=repeats, device=device),
        "functions_forward": scaling_sweep(ATTENTION_FUNCTIONS, tokens, repeats=repeats, device=device),
        "functions_fwd_bwd": scaling_sweep(ATTENTION_FUNCTIONS, tokens, backward=True, repeats=repeats, device=device),
        "modules_forward": module_sweep(tokens, backward=False, repeats=repeats, device=device),
        "modules_fwd_bwd": module_sweep(tokens, repeats=repeats, device=device),
        "models": model_throughput((32, 64) if quick else (32, 64, 128), repeats=repeats, device=device),
    }
