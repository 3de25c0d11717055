"""The speed benchmark's measurements: attention and whole models against SDPA and the softmax twin, in one run.

`python -m minicastling bench` measures every comparison below, the two sides interleaved round by
round (timing.py), prints each ratio beside its goal (bench_report.py) and writes results/bench.json,
which the README and tutorial 07 read. Speed claims are ratios against a peer measured in the same run.
"""

import math
import statistics

import torch
import torch.nn.functional as F

from ..attention import SoftmaxAttention, linear_angular_attention, quadratic_attention
from ..castling import CastlingAttention, castled_copy, set_alpha
from ..branches import TokenConv1d
from ..memory import peak_memory
from ..fast import cpu_kernel, library_calls
from ..measure import macs
from ..model import ViT
from ..presets import get_config
from .timing import _threads, interleaved_times, median_time, ratio_summary, run_once


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


def growth_exponent(rows, method: str, metric: str = "seconds", sizes=None) -> float:
    """How `metric` grows with tokens: the least-squares slope of log(metric) against log(N), over the given
    sizes (default: every size measured). 1 is linear growth, 2 quadratic."""
    points = [(math.log(r["tokens"]), math.log(r[metric])) for r in rows
              if r["method"] == method and r[metric] and (sizes is None or r["tokens"] in sizes)]
    mean_x, mean_y = (sum(v) / len(points) for v in zip(*points))
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def speedups(rows, method: str, peer: str, metric: str = "seconds") -> dict:
    """{tokens: peer / method} wherever both were measured (a skipped size has metric None)."""
    by = {(r["method"], r["tokens"]): r[metric] for r in rows}
    counts = sorted({r["tokens"] for r in rows})
    return {n: by[(peer, n)] / by[(method, n)] for n in counts if by.get((peer, n)) and by.get((method, n))}


def crossover(rows, fast: str, slow: str, metric: str = "seconds", margin: float = 1.1):
    """The smallest token count from which `fast` beats `slow` by at least `margin` (10 %) at every larger
    count, or None: a lead of a few percent in one measurement is not a crossover."""
    by = {(r["method"], r["tokens"]): r[metric] for r in rows}
    counts = sorted({r["tokens"] for r in rows})
    answer = None
    for n in reversed(counts):
        a, b = by.get((fast, n)), by.get((slow, n))
        if a is None or b is None:
            continue
        if a * margin > b:
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
    module = CastlingAttention(dim, heads, alpha=0.0, **options)
    return module.castle()


def compiler_problem() -> str | None:
    """None if torch.compile works on this machine, else why not (on a CPU it needs a C++ compiler)."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as error:  # whatever the backend raised: the benchmark reports it and goes on
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {first_line}"
    return None


def module_ratios(tokens=(64, 256, 1024), batch=8, dim=128, heads=4, rounds=12, device=torch.device("cpu"),
                  compiled: bool = False):
    """Castled CastlingAttention against its SoftmaxAttention twin, forward and fwd+bwd, in one run.

    Also the training-time module (α = 1, with the masked-softmax branch) up to 256 tokens, and each
    module's multiply–accumulates, so the speed-up can be set against the arithmetic it saves.
    compiled=True: both sides under torch.compile (on the CPU the castled module's attention is then
    the CPU kernel's operator, called from the compiled graph), without the training-time module.
    Returns rows {tokens, mode, speedup (+ _min, _max over rounds), twin_ms, castled_ms, training_ms,
    twin_macs, castled_macs}.
    """
    torch.manual_seed(0)
    modules = {"twin": SoftmaxAttention(dim, heads), "castled": castled_module(dim, heads)}
    if not compiled:
        modules["training"] = CastlingAttention(dim, heads, alpha=1.0)
    modules = {name: module.to(device) for name, module in modules.items()}
    timed = {name: torch.compile(m, dynamic=False) if compiled else m for name, m in modules.items()}
    rows = []
    for n in tokens:
        x = torch.randn(batch, n, dim, device=device)
        for mode, backward in (("forward", False), ("fwd+bwd", True)):
            chosen = {k: m for k, m in timed.items() if k != "training" or n <= 256}
            times = interleaved_times({name: run_once(m, x, backward=backward) for name, m in chosen.items()},
                                      rounds, device=device)
            summary = ratio_summary(times, "twin", "castled")
            counts = {name: macs(modules[name], x, backward=backward) for name in ("twin", "castled")}
            rows.append({"tokens": n, "mode": mode, "speedup": summary["ratio"], "speedup_min": summary["ratio_min"],
                         "speedup_max": summary["ratio_max"], "twin_ms": summary["peer_ms"],
                         "castled_ms": summary["contender_ms"],
                         "training_ms": 1e3 * statistics.median(times["training"]) if "training" in times else None,
                         "twin_macs": counts["twin"], "castled_macs": counts["castled"]})
    return rows


def machine_limits(device=torch.device("cpu"), repeats=10):
    """This machine's plain float32 matmul GFLOP/s and copy GB/s, the yardsticks for the linear path.

    On a CPU with several threads the matmul is also timed on one thread: what the threads add. Two
    "cores" that are one physical core's hyperthreads, or a busy host, add little; a run on such a
    machine measures about one core, and its times are not comparable with the README's.
    """
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    matmul = median_time(lambda: a @ b, repeats, 2, device)
    big = torch.randn(32 * 2**20 // 4, device=device)  # 32 MiB
    target = torch.empty_like(big)  # written in place: a fresh tensor would time the page faults of new memory
    copy = median_time(lambda: target.copy_(big), repeats, 2, device)
    limits = {"matmul_gflops": 2 * 1024**3 / matmul / 1e9, "copy_gbs": 2 * big.numel() * 4 / copy / 1e9,
              "threads": torch.get_num_threads() if device.type == "cpu" else None}
    if device.type == "cpu" and limits["threads"] > 1:
        with _threads(1):
            limits["matmul_gflops_one_thread"] = 2 * 1024**3 / median_time(lambda: a @ b, repeats, 2, device) / 1e9
    return limits


def linear_path_efficiency(tokens=4096, batch=8, heads=4, head_dim=32, repeats=10, device=torch.device("cpu")):
    """Achieved GFLOP/s and GB/s of linear-angular attention's forward, beside machine_limits().

    FLOPs: the two (d × d)-sized matmuls per head, 4·N·d². Bytes: q, k, v read and the output
    written once each, the least any implementation must move.
    """
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device) for _ in range(3))
    seconds = median_time(run_once(linear_kernel, q, k, v, backward=False), repeats, 2, device)
    flops = 4 * batch * heads * tokens * head_dim**2
    moved = 4 * q.numel() * 4
    result = {"ms": 1e3 * seconds, "gflops": flops / seconds / 1e9, "gbs": moved / seconds / 1e9}
    qkv = torch.randn(batch, tokens, 3 * heads * head_dim, device=device)
    if cpu_kernel.ready() and cpu_kernel.covers(device, head_dim, True):  # the same arithmetic in the CPU kernel
        with torch.no_grad():
            kernel = median_time(lambda: cpu_kernel.linear_angular_conv(qkv, heads), repeats, 2, device)
        result.update(kernel_ms=1e3 * kernel, kernel_gflops=flops / kernel / 1e9, kernel_gbs=moved / kernel / 1e9)
    return {**result, **machine_limits(device, repeats)}


def attention_floor(tokens=(64, 256), batch=8, dim=128, heads=4, repeats=50, device=torch.device("cpu")):
    """What stands between the castled module and its twin: each one's attention alone, forward.

    The twin's attention is one call, SDPA. Built from library calls, the castled module's needs at
    least two batched matmuls (K̂ᵀ[V | 1], then the queries against it) and the depthwise convolution,
    whatever else is fused away; those three are timed alone, at the module's shapes, beside the whole
    library-call path + conv, and beside the compiled CPU kernel that does it all in one call (where
    it covers the call: kernel_ms, else None).
    Returns rows {tokens, sdpa_ms, matmuls_ms, conv_ms, floor_ms, castled_ms, kernel_ms}.
    """
    rows, d = [], dim // heads
    conv = TokenConv1d(heads).to(device)
    for n in tokens:
        q, k, v = (torch.randn(batch, heads, n, d, device=device) for _ in range(3))
        keys, values = torch.randn(batch * heads, n, d, device=device), torch.randn(batch * heads, n, d + 1, device=device)
        kv = torch.randn(batch * heads, d, d + 1, device=device)
        qkv = torch.randn(batch, n, 3 * dim, device=device)
        token_major = torch.randn(batch, n, heads, d, device=device).transpose(1, 2)

        def castled():
            out, values = library_calls.linear_angular(qkv, heads, "kernel")
            return out + conv(values)

        calls = {
            "sdpa_ms": lambda: F.scaled_dot_product_attention(q, k, v),
            "kv_ms": lambda: keys.transpose(1, 2) @ values,
            "queries_ms": lambda: keys @ kv,
            "conv_ms": lambda: conv(token_major),
            "castled_ms": castled,
        }
        if cpu_kernel.ready() and cpu_kernel.covers(device, d, True):
            calls["kernel_ms"] = lambda: cpu_kernel.linear_angular_conv(qkv, heads, conv.conv.weight)
        with torch.no_grad():
            times = {name: 1e3 * median_time(fn, repeats, 5, device) for name, fn in calls.items()}
        times.setdefault("kernel_ms", None)
        matmuls = times.pop("kv_ms") + times.pop("queries_ms")
        rows.append({"tokens": n, **times, "matmuls_ms": matmuls, "floor_ms": matmuls + times["conv_ms"]})
    return rows


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


MODEL_SHAPES = {64: dict(patch_size=4), 256: dict(patch_size=2)}  # 32×32 images, as the gpu preset gets 256
# the whole model the benchmark times: fixed here, so that results stay comparable when a training
# preset is retuned (head_dim 24, the shape of the cpu preset when the committed results were measured)
BENCH_MODEL = dict(dim=96, depth=4, num_heads=4, mlp_ratio=2.0)


def bench_models(preset: str, shape: dict, tokens: int, device=torch.device("cpu")):
    """The benchmark's models at `tokens` (64 or 256) on 32×32 images: config, the softmax twin, a castling
    model with its softmax branch on (α = 1), and that model castled (α set to 0 first)."""
    config = get_config(preset, image_size=32, **shape, **MODEL_SHAPES[tokens])
    torch.manual_seed(0)
    twin = ViT(config.replace(attention="softmax")).to(device)
    castling = ViT(config).to(device)
    set_alpha(castling, 1.0)
    return config, twin, castling, castled_copy(castling)


def model_ratios(preset="cpu", shape=BENCH_MODEL, batch=32, tokens=(64, 256), rounds=8, device=torch.device("cpu"),
                 compiled: bool = False):
    """Whole models (a preset with `shape`'s fields overriding it) on 32×32 images: castled inference
    against the twin's, and a training step with the softmax branch on (α = 1) against the twin's, in one run.

    Returns rows {tokens, patch_size, inference_speedup (+ _min, _max), training_cost (+ _min, _max),
    and each median in ms}. training_cost = castling step / twin step: above 1 the branch costs time.
    compiled=True: inference only, both models under torch.compile.
    """
    rows = []
    for n in tokens:
        config, twin, castling, castled = bench_models(preset, shape, n, device)
        images = torch.randn(batch, 3, 32, 32, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)

        def train_step(model):
            return lambda: F.cross_entropy(model.train()(images), labels).backward()

        def infer(model):
            model = torch.compile(model.eval(), dynamic=False) if compiled else model.eval()
            return lambda: torch.no_grad()(model)(images)

        calls = {"twin inference": infer(twin), "castled inference": infer(castled)}
        if not compiled:
            calls.update({"twin train": train_step(twin), "castling train": train_step(castling)})
        times = interleaved_times(calls, rounds, seconds_per_round=0.2, device=device)
        inference = ratio_summary(times, "twin inference", "castled inference")
        row = {"tokens": n, "patch_size": config.patch_size, "inference_speedup": inference["ratio"],
               "inference_speedup_min": inference["ratio_min"], "inference_speedup_max": inference["ratio_max"],
               "twin_inference_ms": inference["peer_ms"], "castled_inference_ms": inference["contender_ms"]}
        if not compiled:
            training = ratio_summary(times, "castling train", "twin train")
            row.update({"training_cost": training["ratio"], "training_cost_min": training["ratio_min"],
                        "training_cost_max": training["ratio_max"], "castling_train_ms": training["peer_ms"],
                        "twin_train_ms": training["contender_ms"]})
        rows.append(row)
    return rows


STEP_MODEL = dict(image_size=28, channels=1, num_classes=10)  # the cpu preset on Fashion-MNIST's images
STEP_PATCHES = {49: 4, 196: 2}


def step_model(tokens: int, attention: str = "castling") -> ViT:
    """The model whose training step `training_steps` times at `tokens` (49 or 196), freshly built as it builds it."""
    torch.manual_seed(0)
    return ViT(get_config("cpu", **STEP_MODEL, patch_size=STEP_PATCHES[tokens]).replace(attention=attention))


def training_steps(tokens=(49, 196), batch=128, rounds=8, threads=1, device=torch.device("cpu")) -> list:
    """A training step of the cpu preset's model on Fashion-MNIST-shaped images (forward, backward, AdamW)
    with the softmax branch on (α = 1), with it off (α = 0) and of the softmax twin, taking turns, on
    `threads` threads (one: what each of the study's two runs gets on a 2-core machine).

    Returns rows {tokens, cost (branch on / twin, median over rounds, + _min, _max), cost_off (branch off
    / twin), and each median in ms}.
    """
    rows = []
    with _threads(threads):
        for n in tokens:
            images = torch.randn(batch, 1, 28, 28, device=device)
            labels = torch.randint(0, 10, (batch,), device=device)
            calls = {}
            for name, attention, alpha in (("branch on", "castling", 1.0), ("branch off", "castling", 0.0),
                                           ("twin", "softmax", 0.0)):
                model = step_model(n, attention).to(device).train()
                set_alpha(model, alpha)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

                def step(model=model, optimizer=optimizer):
                    loss = F.cross_entropy(model(images), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                calls[name] = step
            times = interleaved_times(calls, rounds, seconds_per_round=0.5, device=device)
            on, off = ratio_summary(times, "branch on", "twin"), ratio_summary(times, "branch off", "twin")
            rows.append({"tokens": n, "patch_size": STEP_PATCHES[n], "batch": batch, "threads": threads,
                         "cost": on["ratio"], "cost_min": on["ratio_min"], "cost_max": on["ratio_max"],
                         "cost_off": off["ratio"], "branch_on_ms": on["peer_ms"], "branch_off_ms": off["peer_ms"],
                         "twin_ms": on["contender_ms"]})
    return rows


GOALS = [  # (what, section of the results, key in its row, mode, tokens, goal, "at least" or "at most")
    ("castled module vs twin, forward", "modules", "speedup", "forward", 64, 1.0, "at least"),
    ("castled module vs twin, forward", "modules", "speedup", "forward", 256, 1.5, "at least"),
    ("castled module vs twin, forward", "modules", "speedup", "forward", 1024, 3.0, "at least"),
    ("castled module vs twin, fwd+bwd", "modules", "speedup", "fwd+bwd", 64, 1.0, "at least"),
    ("castled module vs twin, fwd+bwd", "modules", "speedup", "fwd+bwd", 256, 1.5, "at least"),
    ("castled module vs twin, fwd+bwd", "modules", "speedup", "fwd+bwd", 1024, 2.5, "at least"),
    ("castled model vs twin, inference", "model_ratios", "inference_speedup", None, 64, 1.0, "at least"),
    ("castled model vs twin, inference", "model_ratios", "inference_speedup", None, 256, 1.3, "at least"),
    ("training step with the branch, cost vs twin", "model_ratios", "training_cost", None, 64, 1.5, "at most"),
    ("cpu preset's training step, branch on vs twin", "training_steps", "cost", None, 49, 1.10, "at most"),
    ("cpu preset's training step, branch on vs twin", "training_steps", "cost", None, 196, 1.15, "at most"),
]


def goal_rows(results: dict) -> list:
    """Each goal beside the ratio measured for it (median and range over rounds) and a verdict."""
    rows = []
    for what, section, key, mode, tokens, goal, direction in GOALS:
        found = [r for r in results.get(section, []) if r["tokens"] == tokens and mode in (None, r.get("mode"))]
        if not found or key not in found[0]:  # a compiled run times no training step
            continue
        row = found[0]
        value = row[key]
        met = value >= goal if direction == "at least" else value <= goal
        rows.append({"what": what, "tokens": tokens, "value": value, "min": row[f"{key}_min"],
                     "max": row[f"{key}_max"], "goal": goal, "direction": direction, "met": met})
    return rows


def compiled_benchmark(quick: bool = False, device=torch.device("cpu")) -> dict:
    """The module and whole-model inference comparisons with both sides under torch.compile.

    The compiler fuses the small operations whose per-call cost holds the eager castled module back;
    the twin is compiled too, so the ratio stays like for like. Skipped in a quick run (compiling takes
    about a minute), and where torch.compile does not work (the reason is kept).
    """
    if quick:
        return {"skipped": "quick run"}
    problem = compiler_problem()
    if problem:
        return {"skipped": f"torch.compile unavailable ({problem})"}
    return {"modules": module_ratios(tokens=(64, 256), compiled=True, device=device),
            "model_ratios": model_ratios("cpu", tokens=(64, 256), compiled=True, device=device)}


def full_benchmark(quick: bool = False, device=torch.device("cpu")) -> dict:
    """Everything `python -m minicastling bench` measures, in one run: a dict ready for JSON.

    Token counts 64 … 16,384 (quick: 64, 256). Explicit softmax and the training-mode module stop
    where their N×N matrices stop fitting or a call passes 2 s; those entries are None.
    """
    tokens = [64, 256] if quick else [64, 256, 1024, 4096, 16384]
    repeats = 2 if quick else 5
    return {
        "cpu_kernel": cpu_kernel.build() if device.type == "cpu" else "not used on this device",
        "training_steps": training_steps(batch=8 if quick else 128, rounds=2 if quick else 8, device=device),
        "headline": sdpa_ratios(batch=1 if quick else 8, repeats=repeats, device=device),
        "modules": module_ratios(tokens=(64, 256) if quick else (64, 256, 1024), rounds=3 if quick else 12,
                                 device=device),
        "model_ratios": model_ratios("smoke" if quick else "cpu", shape={} if quick else BENCH_MODEL,
                                     tokens=(64,) if quick else (64, 256),
                                     rounds=2 if quick else 8, device=device),
        "compiled": compiled_benchmark(quick, device),
        "floor": attention_floor(repeats=10 if quick else 50, device=device),
        "memory_4096": memory_ratio(tokens=256 if quick else 4096, device=device),
        "efficiency": linear_path_efficiency(tokens=256 if quick else 4096, repeats=repeats, device=device),
        "functions_forward": scaling_sweep(ATTENTION_FUNCTIONS, tokens, repeats=repeats, device=device),
        "functions_fwd_bwd": scaling_sweep(ATTENTION_FUNCTIONS, tokens, backward=True, repeats=repeats, device=device),
        "modules_forward": module_sweep(tokens, backward=False, repeats=repeats, device=device),
        "modules_fwd_bwd": module_sweep(tokens, repeats=repeats, device=device),
    }


