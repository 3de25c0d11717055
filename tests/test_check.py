"""Exercise checkers: each accepts the tutorial's solution and rejects its stub and a wrong answer,
with feedback in words; the student copies stay in sync with the tutorials."""

import ast
import inspect
import re
from pathlib import Path

import pytest

import minicastling
from minicastling import check
from minicastling.course.assignments import is_solution, read_notebook, source_of, student_copy, write_assignments

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))


def exercise_sections(notebook):
    """[(heading, solution cell, check cell)] after the '## Exercises' cell, plus its imports cell."""
    cells = notebook["cells"]
    start = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and source_of(c).startswith("## Exercises"))
    imports = source_of(cells[start + 1])
    sections = []
    for i in range(start + 2, len(cells)):
        if cells[i]["cell_type"] == "markdown" and source_of(cells[i]).startswith("### Exercise"):
            sections.append((source_of(cells[i]).splitlines()[0], cells[i + 1], cells[i + 2]))
    return imports, sections


def namespace_of(imports: str, source: str) -> dict:
    scope = {"mc": minicastling}
    exec(imports, scope)
    exec(source, scope)
    return scope


def solutions():
    """{exercise name: (setup, solution source)} read from the tutorials themselves; the setup is the
    exercises' imports cell and the solutions above it, which a later exercise may use (04.4 uses 04.3)."""
    found = {}
    for path in TUTORIALS:
        setup, sections = exercise_sections(read_notebook(path))
        for _, solution, _ in sections:
            name = ast.parse(source_of(solution)).body[-1].name
            found[name] = (setup, source_of(solution))
            setup += "\n" + source_of(solution)
    return found


SOLUTIONS = solutions()

# Plausible mistakes for every exercise, each with words its feedback must contain; then right answers
# written differently from the tutorial's (another library, another order, float32), which must pass.
WRONG = {
    "kernel_smoothing": [
        ("def kernel_smoothing(q, k, v, similarity):\n    return similarity(q, k) @ v", "wrong values"),
        ("def kernel_smoothing(q, k, v, similarity):\n    w = similarity(q, k)\n    return w / w.sum(-2, keepdim=True) @ v",
         "wrong values"),
        ("def kernel_smoothing(q, k, v, similarity):\n    return torch.softmax(similarity(q, k), dim=-1) @ v", "wrong values"),
        ("def kernel_smoothing(q, k, v, similarity):\n    s = similarity(q, k)\n    s /= s.sum(-1, keepdim=True)\n"
         "    return s @ v", "changed in place"),
    ],
    "gaussian_attention": [
        ("def gaussian_attention(q, k, v):\n    return torch.softmax(-torch.cdist(q, k) ** 2 / 2, dim=-1) @ v", "built a tensor"),
        ("def gaussian_attention(q, k, v):\n    w = torch.exp(-torch.cdist(q, k) ** 2 / 2)\n    return w / w.sum(-1, keepdim=True) @ v",
         "NaN"),
        ("def gaussian_attention(q, k, v):\n    ones = torch.ones_like(q[..., :1])\n"
         "    return F.scaled_dot_product_attention(torch.cat([q, ones], -1), torch.cat([k, -0.5 * (k * k).sum(-1, keepdim=True)], -1), v)",
         "wrong values"),
        ("def gaussian_attention(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v, scale=1.0)", "wrong values"),
    ],
    "row_entropy": [
        ("def row_entropy(weights):\n    return -(weights * weights.log()).sum(-1)", "NaN"),
        ("def row_entropy(weights):\n    return -torch.where(weights > 0, weights * weights.log(), torch.zeros_like(weights)).sum(-1)",
         "NaN or infinite"),
        ("def row_entropy(weights):\n    return torch.special.entr(weights).sum(-1)", "NaN or infinite"),
        ("def row_entropy(weights):\n    return -torch.xlogy(weights, weights).sum(-1)", "NaN or infinite"),
        ("def row_entropy(weights):\n    safe = torch.where(weights > 0, weights, torch.ones_like(weights))\n"
         "    return -(weights * torch.log2(safe)).sum(-1)", "times 1.443"),
    ],
    "angular_weights": [
        ("def angular_weights(q, k):\n    return mc.angular_similarity(q, k)", "wrong values"),
        ("def angular_weights(q, k):\n    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)\n"
         "    s = 1 - torch.arccos(cos) / math.pi\n    return s / s.sum(-1, keepdim=True)", "NaN"),
        ("def angular_weights(q, k):\n    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)\n"
         "    s = 1 - torch.arccos(cos.clamp(-1, 1))\n    return s / s.sum(-1, keepdim=True)", "wrong values"),
    ],
    "hyperplane_agreement": [
        ("def hyperplane_agreement(q, k, normals):\n    a, b = (q @ normals.T > 0).float(), (k @ normals.T > 0).float()\n"
         "    return a @ b.transpose(-2, -1) / len(normals)", "wrong values"),
        ("def hyperplane_agreement(q, k, normals):\n    a, b = torch.sign(q @ normals.T), torch.sign(k @ normals.T)\n"
         "    return a @ b.transpose(-2, -1) / len(normals)", "wrong values"),
        ("def hyperplane_agreement(q, k, normals):\n    planes = torch.randn_like(normals)\n"
         "    same = (q @ planes.T > 0).unsqueeze(-2) == (k @ planes.T > 0).unsqueeze(-3)\n"
         "    return same.to(q.dtype).mean(-1)", "exactly the given hyperplanes"),
        ("def hyperplane_agreement(q, k, normals):\n    planes = normals[::2]\n"
         "    same = (q @ planes.T > 0).unsqueeze(-2) == (k @ planes.T > 0).unsqueeze(-3)\n"
         "    return same.to(q.dtype).mean(-1)", "exactly the given hyperplanes"),
    ],
    "hashed_angular_attention": [
        ("def hashed_angular_attention(q, k, v, normals):\n"
         "    s = lambda x: torch.where(x @ normals.T > 0, 1.0, -1.0)\n"
         "    sq, sk = s(q), s(k)\n"
         "    return sq @ (sk.transpose(-2, -1) @ v) / (sq @ sk.sum(-2).unsqueeze(-1))", "wrong values"),
        ("def hashed_angular_attention(q, k, v, normals):\n"
         "    a = ((q @ normals.T > 0).unsqueeze(-2) == (k @ normals.T > 0).unsqueeze(-3)).to(q.dtype).mean(-1)\n"
         "    return a / a.sum(-1, keepdim=True) @ v", "N² ="),
        ("def hashed_angular_attention(q, k, v, normals):\n"  # one query at a time: N² time, no N × N tensor
         "    side_q, side_k = q @ normals.T > 0, k @ normals.T > 0\n"
         "    rows = []\n"
         "    for i in range(q.shape[-2]):\n"
         "        a = (side_q[..., i:i + 1, None, :] == side_k[..., None, :, :]).to(q.dtype).mean(-1)\n"
         "        rows.append(a / a.sum(-1, keepdim=True) @ v)\n"
         "    return torch.cat(rows, dim=-2)", "grows like N^2"),
    ],
    "arccos_series": [
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 1)\n"
         "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m) for m in range(order + 1))", "wrong values"),
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order)\n"
         "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m + 1) for m in range(order))", "stops one term short"),
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 2)\n"
         "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m + 1) for m in range(order + 2))", "one term too many"),
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(max(order, 1))\n"
         "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m + 1) for m in range(max(order, 1)))", "one term short"),
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 1)\n"
         "    return -sum(float(c[m]) * x ** (2 * m + 1) for m in range(order + 1))", "wrong values"),
        ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 1)\n"
         "    powers = 2 * torch.arange(order + 1) + 1\n"
         "    return math.pi / 2 - (c * x[..., None] ** powers).sum(-1)", "should be torch.float32"),
    ],
    "padded_linear_angular": [
        ("def padded_linear_angular(q, k, v, key_mask):\n"
         "    keep = key_mask.unsqueeze(-1).to(v.dtype)\n"
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1) * keep\n"
         "    v = v * keep\n"
         "    numerator = 0.5 * v.sum(-2, keepdim=True) + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi\n"
         "    return numerator / (0.5 * k.shape[-2] + q_hat @ k_hat.sum(-2).unsqueeze(-1) / math.pi)", "wrong values"),
        ("def padded_linear_angular(q, k, v, key_mask):\n"
         "    keep = key_mask.unsqueeze(-1).to(v.dtype)\n"
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1) * keep\n"
         "    numerator = 0.5 * v.sum(-2, keepdim=True) + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi\n"
         "    return numerator / (0.5 * keep.sum(-2, keepdim=True) + q_hat @ k_hat.sum(-2).unsqueeze(-1) / math.pi)",
         "wrong values"),
        ("def padded_linear_angular(q, k, v, key_mask):\n"
         "    w = (0.5 + F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) / math.pi) * key_mask.unsqueeze(-2)\n"
         "    return w / w.sum(-1, keepdim=True) @ v", "N² ="),
        ("def padded_linear_angular(q, k, v, key_mask):\n"  # one query at a time: N² time, no N × N tensor
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
         "    rows = []\n"
         "    for i in range(q.shape[-2]):\n"
         "        w = (0.5 + q_hat[..., i:i + 1, :] @ k_hat.transpose(-2, -1) / math.pi) * key_mask.unsqueeze(-2)\n"
         "        rows.append(w / w.sum(-1, keepdim=True) @ v)\n"
         "    return torch.cat(rows, dim=-2)", "grows like N^2"),
    ],
    "angular_attention_order1": [
        ("def angular_attention_order1(q, k, v):\n"
         "    return mc.quadratic_attention(q, k, v, lambda a, b: mc.angular_similarity(a, b, order=1))", "N² ="),
        ("def angular_attention_order1(q, k, v):\n"
         "    def features(x):\n"
         "        x_hat = F.normalize(x, dim=-1)\n"
         "        half = torch.full_like(x_hat[..., :1], math.sqrt(0.5))\n"
         "        return torch.cat([half, x_hat / math.sqrt(math.pi), polynomial_features(x_hat, 3) / math.sqrt(math.pi)], -1)\n"
         "    phi_q, phi_k = features(q), features(k)\n"
         "    return phi_q @ (phi_k.transpose(-2, -1) @ v) / (phi_q @ phi_k.sum(-2).unsqueeze(-1))", "wrong values"),
        ("def angular_attention_order1(q, k, v):\n"  # one query at a time: N² time, no N × N tensor
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
         "    rows = []\n"
         "    for i in range(q.shape[-2]):\n"
         "        x = q_hat[..., i:i + 1, :] @ k_hat.transpose(-2, -1)\n"
         "        w = 0.5 + (x + x ** 3 / 6) / math.pi\n"
         "        rows.append(w / w.sum(-1, keepdim=True) @ v)\n"
         "    return torch.cat(rows, dim=-2)", "grows like N^2"),
    ],
    "alpha_at": [
        ("def alpha_at(t, alpha0, end):\n    return alpha0 * 0.5 * (1 + math.cos(math.pi * t / end))", "after the decay window"),
        ("def alpha_at(t, alpha0, end):\n    return max(0.0, alpha0 * (1 - t / end))", "the answer is"),
        ("def alpha_at(t, alpha0, end):\n    return 0.0 if t >= end else alpha0 * 0.5 * (1 + math.cos(math.pi * t))",
         "inside the decay window"),
        ("def alpha_at(t, alpha0, end):\n    return 1e-12 if t >= end else alpha0 * 0.5 * (1 + math.cos(math.pi * t / end))",
         "exactly 0"),
    ],
    "mass_kept": [
        ("def mass_kept(q, k, threshold):\n    p = attention_weights(q, k, \"softmax\")\n    return (p > threshold).float().mean(-1)",
         "wrong values"),
        ("def mass_kept(q, k, threshold):\n    p = attention_weights(q, k, \"softmax\")\n    kept = p * (p > threshold)\n"
         "    return kept.sum(-1) / kept.sum(-1)", "wrong values"),
        ("def mass_kept(q, k, threshold):\n    p = attention_weights(q, k, \"softmax\")\n    return (p * (p > threshold)).sum(-2)",
         "wrong values"),
    ],
    "token_dwconv": [
        ("def token_dwconv(v, weight):\n    size, n = weight.shape[1], v.shape[-2]\n"
         "    padded = F.pad(v, (0, 0, size // 2, size // 2))\n"
         "    return sum(weight[:, size - 1 - t, None, None] * padded[..., t:t + n, :] for t in range(size))", "wrong values"),
        ("def token_dwconv(v, weight):\n    size, n = weight.shape[1], v.shape[-2]\n"
         "    return sum(weight[:, t, None, None] * v[..., t:n - size + 1 + t, :] for t in range(size))", "wrong shape"),
    ],
    "official_castling_attention": [
        ("def official_castling_attention(q, k, v, conv_weight, alpha, threshold):\n"
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
         "    linear = F.normalize(0.5 * v + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi, dim=-1)\n"
         "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "    return linear + alpha * (p * (p > threshold)) @ v + token_dwconv(v, conv_weight)", "wrong values"),
        ("def official_castling_attention(q, k, v, conv_weight, alpha, threshold):\n"
         "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
         "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "    raw = 0.5 * v + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi + alpha * (p * (p > threshold)) @ v\n"
         "    return F.normalize(raw + token_dwconv(v, conv_weight), dim=-1)", "wrong values"),
        ("def official_castling_attention(q, k, v, conv_weight, alpha, threshold):\n"
         "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "    return mc.linear_angular_attention(q, k, v, form='kernel', auxiliary=alpha * (p * (p > threshold)) @ v) \\\n"
         "        + token_dwconv(v, conv_weight)", "wrong values"),
    ],
    "patchify": [
        ("def patchify(images, patch):\n    return rearrange(images, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p1=patch, p2=patch)",
         "wrong values"),
        ("def patchify(images, patch):\n    return rearrange(images, 'b c (h p1) (w p2) -> b (w h) (c p1 p2)', p1=patch, p2=patch)",
         "wrong values"),
    ],
    "softmax_attention_macs": [
        ("def softmax_attention_macs(tokens, width, heads):\n"
         "    return 3 * tokens * width * width + 2 * tokens * tokens * width", "1 × N·C²"),
        ("def softmax_attention_macs(tokens, width, heads):\n"
         "    return 4 * tokens * width * width + tokens * tokens * width", "1 × N²·C"),
        ("def softmax_attention_macs(tokens, width, heads):\n"
         "    return 4 * tokens * width * width + 2 * tokens * tokens * width // heads", "you count"),
        ("def softmax_attention_macs(tokens, width, heads):\n"  # heads counted twice: a term, not the projections
         "    return 4 * tokens * width ** 2 + 2 * heads * tokens ** 2 * width", "-4 × N²·C"),
    ],
    "castle_model": [
        ("def castle_model(model):\n    for m in model.modules():\n        if isinstance(m, CastlingAttention):\n"
         "            m.castle()\n    return model", "half"),
        ("def castle_model(model):\n    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    for layer in reversed(layers):\n        layer.castle()\n    return model", "half"),
        ("def castle_model(model):\n    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    if layers[-1].alpha > 0:\n        raise RuntimeError('alpha > 0')\n"
         "    for layer in layers:\n        layer.castle(force=True)\n    return model", "did not raise"),
        ("def castle_model(model):\n    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    for layer in layers:\n        layer.set_alpha(0.0)\n        layer.castle()\n    return model", "did not raise"),
        ("def castle_model(model):\n    return mc.castle(model)", "calls minicastling's castle()"),
    ],
    "accuracy_without_branch": [
        ("def accuracy_without_branch(model, images, labels):\n    model.eval()\n    with torch.no_grad():\n"
         "        correct = (model(images).argmax(-1) == labels).sum().item()\n    model.train()\n"
         "    return 100.0 * correct / len(labels)", "branch still on"),
        ("def accuracy_without_branch(model, images, labels):\n"
         "    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    alphas = [layer.alpha for layer in layers]\n    set_alpha(model, 0.0)\n    with torch.no_grad():\n"
         "        correct = (model(images).argmax(-1) == labels).sum().item()\n"
         "    for layer, alpha in zip(layers, alphas):\n        layer.set_alpha(alpha)\n"
         "    return 100.0 * correct / len(labels)", "BatchNorm"),
        ("def accuracy_without_branch(model, images, labels):\n"
         "    first = next(m for m in model.modules() if isinstance(m, CastlingAttention)).alpha\n"
         "    was = model.training\n    model.eval()\n    set_alpha(model, 0.0)\n    with torch.no_grad():\n"
         "        correct = (model(images).argmax(-1) == labels).sum().item()\n"
         "    set_alpha(model, first)\n    model.train(was)\n    return 100.0 * correct / len(labels)", "own α"),
        ("def accuracy_without_branch(model, images, labels):\n    was = model.training\n    model.eval()\n"
         "    set_alpha(model, 0.0)\n    mc.castle(model)\n    with torch.no_grad():\n"
         "        correct = (model(images).argmax(-1) == labels).sum().item()\n    model.train(was)\n"
         "    return 100.0 * correct / len(labels)", "castled the model"),
        ("def accuracy_without_branch(model, images, labels):\n"
         "    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    alphas = [layer.alpha for layer in layers]\n    model.eval()\n    set_alpha(model, 0.0)\n"
         "    with torch.no_grad():\n        correct = (model(images).argmax(-1) == labels).sum().item()\n"
         "    for layer, alpha in zip(layers, alphas):\n        layer.set_alpha(alpha)\n    model.train()\n"
         "    return 100.0 * correct / len(labels)", "mode it had"),
        ("def accuracy_without_branch(model, images, labels):\n    copy_ = copy.deepcopy(model).eval()\n"
         "    set_alpha(copy_, 0.0)\n    with torch.no_grad():\n"
         "        return (copy_(images).argmax(-1) == labels).float().mean().item()", "not a fraction"),
        ("def accuracy_without_branch(model, images, labels):\n    return 100.0", "exactly 75 %"),
    ],
    "model_mask_density": [
        ("def model_mask_density(model, images):\n"
         "    densities = []\n"
         "    def measure(layer, inputs):\n"
         "        q, k, _ = layer.split_qkv(inputs[0])\n"
         "        p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "        densities.append((p > layer.mask_threshold(k.shape[-2])).float().mean().item())\n"
         "    for m in model.modules():\n"
         "        if isinstance(m, CastlingAttention):\n"
         "            m.register_forward_pre_hook(measure)\n"
         "    model.eval()\n"
         "    model(images)\n"
         "    return sum(densities) / len(densities)", "training mode"),
        ("def model_mask_density(model, images):\n"
         "    densities, was = [], model.training\n"
         "    def measure(layer, inputs):\n"
         "        q, k, _ = layer.split_qkv(inputs[0])\n"
         "        p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "        densities.append((p > layer.mask_threshold(k.shape[-2])).float().mean().item())\n"
         "    for m in model.modules():\n"
         "        if isinstance(m, CastlingAttention):\n"
         "            m.register_forward_pre_hook(measure)\n"
         "    model.eval()\n    model(images)\n    model.train(was)\n"
         "    return sum(densities) / len(densities)", "hooks are still registered"),
        ("def model_mask_density(model, images):\n"
         "    densities, was = [], model.training\n"
         "    def measure(layer, inputs):\n"
         "        q, k, _ = layer.split_qkv(inputs[0])\n"
         "        p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "        densities.append((p > layer.threshold).float().mean().item())\n"
         "    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    model.eval()\n    model(images)\n    model.train(was)\n"
         "    for hook in hooks:\n        hook.remove()\n"
         "    return sum(densities) / len(densities)", "mask='relative'"),
        ("def model_mask_density(model, images):\n"  # measured in training mode: the stem's BatchNorm moves
         "    densities = []\n"
         "    def measure(layer, inputs):\n"
         "        q, k, _ = layer.split_qkv(inputs[0])\n"
         "        p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "        densities.append((p > layer.mask_threshold(k.shape[-2])).float().mean().item())\n"
         "    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    with torch.no_grad():\n        model(images)\n"
         "    for hook in hooks:\n        hook.remove()\n"
         "    return sum(densities) / len(densities)", "BatchNorm statistics"),
        # right on a nearly uniform model, whose absolute masks keep nothing: every absolute case must catch it
        ("def model_mask_density(model, images):\n    return 0.0", "threshold=0.02, mask='absolute'"),
        ("def model_mask_density(model, images):\n"  # logits without 1/√d, so the softmax is too sharp
         "    densities, was = [], model.training\n"
         "    def measure(layer, inputs):\n"
         "        q, k, _ = layer.split_qkv(inputs[0])\n"
         "        p = torch.softmax(q @ k.transpose(-2, -1), dim=-1)\n"
         "        densities.append((p > layer.mask_threshold(k.shape[-2])).float().mean().item())\n"
         "    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, CastlingAttention)]\n"
         "    model.eval()\n    with torch.no_grad():\n        model(images)\n    model.train(was)\n"
         "    for hook in hooks:\n        hook.remove()\n"
         "    return sum(densities) / len(densities)", "threshold=0.02, mask='absolute', on 64 tokens. That is the density"),
    ],
    "layer_sharpness": [
        ("def layer_sharpness(layer, x):\n"
         "    q, k, _ = layer.split_qkv(x)\n"
         "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
         "    return p.amax(-1).mean().item() * p.shape[-1]", "the answer is"),
        ("def layer_sharpness(layer, x):\n"
         "    q, k, _ = layer.split_qkv(x)\n"
         "    s = 0.5 + F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) / math.pi\n"
         "    return (s / s.sum(-1, keepdim=True)).amax(-1).mean().item()", "1 means uniform"),
        ("def layer_sharpness(layer, x):\n"  # the official form's mix, whose rows are not weights
         "    q, k, _ = layer.split_qkv(x)\n"
         "    mix = 0.5 * torch.eye(q.shape[-2]) + F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) / math.pi\n"
         "    return mix.amax(-1).mean().item() * mix.shape[-1]", "official form's mix"),
    ],
    "smallest_weight_bound": [
        ("def smallest_weight_bound(tokens):\n    return (0.5 - 1 / math.pi) / (0.5 + 1 / math.pi)", "For one token it must be 1"),
        ("def smallest_weight_bound(tokens):\n    high, low = 0.5 + 1 / math.pi, 0.5 - 1 / math.pi\n"
         "    return tokens * high / (high + (tokens - 1) * low)", "largest weight's bound"),
        ("def smallest_weight_bound(tokens):\n    high, low = 0.5 + 1 / math.pi, 0.5 - 1 / math.pi\n"
         "    return low / (low + (tokens - 1) * high)", "w_min itself"),
    ],
    "paired_interval": [
        ("def paired_interval(a, b):\n    from scipy import stats\n"  # two-sample degrees of freedom
         "    d = [x - y for x, y in zip(a, b)]\n    n = len(d)\n"
         "    h = stats.t.ppf(0.975, 2 * n - 2) * statistics.stdev(d) / math.sqrt(n)\n"
         "    return statistics.mean(d), (statistics.mean(d) - h, statistics.mean(d) + h)", "2n − 2"),
        ("def paired_interval(a, b):\n    d = statistics.mean(a) - statistics.mean(b)\n    return d, (d - 1, d + 1)",
         "the interval's lower end"),
        ("def paired_interval(a, b):\n    from scipy import stats\n"
         "    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)\n"
         "    return statistics.mean(a) - statistics.mean(b), (ci.low, ci.high)", "unpaired (Welch)"),
        ("def paired_interval(a, b):\n    d = [x - y for x, y in zip(a, b)]\n"
         "    half = 1.96 * statistics.stdev(d) / math.sqrt(len(d))\n"
         "    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)", "normal quantile z = 1.96"),
        ("def paired_interval(a, b):\n    from scipy import stats\n    d = [x - y for x, y in zip(a, b)]\n"
         "    half = stats.t.ppf(0.975, len(d) - 1) * statistics.pstdev(d) / math.sqrt(len(d))\n"
         "    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)", "divides by n:"),
        ("def paired_interval(a, b):\n    import numpy as np\n    d = np.subtract(a, b)\n"
         "    half = 1.96 * d.std() / np.sqrt(len(d))\n    return d.mean(), d.mean() - half, d.mean() + half",
         "both shortcuts"),
        ("def paired_interval(a, b):\n    from scipy import stats\n    d = [x - y for x, y in zip(a, b)]\n"
         "    half = stats.t.ppf(0.95, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))\n"
         "    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)", "one-sided quantile"),
        ("def paired_interval(a, b):\n    from scipy import stats\n    d = [x - y for x, y in zip(a, b)]\n"
         "    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d)\n"
         "    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)", "over √n"),
        ("def paired_interval(a, b):\n    from scipy import stats\n    d = [x - y for x, y in zip(a, b)]\n"
         "    half = stats.t.ppf(0.975, len(d)) * statistics.stdev(d) / math.sqrt(len(d))\n"
         "    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)", "degrees of freedom: n"),
        ("def paired_interval(a, b):\n    from scipy import stats\n"
         "    ci = stats.ttest_ind(a, b).confidence_interval(0.95)\n"
         "    return statistics.mean(a) - statistics.mean(b), (ci.low, ci.high)", "pooled two-sample"),
        ("def paired_interval(a, b):\n    from scipy import stats\n    n = len(a)\n"
         "    d = statistics.mean(a) - statistics.mean(b)\n"
         "    half = stats.t.ppf(0.975, n - 1) * math.sqrt(statistics.variance(a) / n + statistics.variance(b) / n)\n"
         "    return d, (d - half, d + half)", "treats the arms as unrelated"),
        ("def paired_interval(a, b):\n    d = [x - y for x, y in zip(a, b)]\n    return statistics.mean(d)",
         "any sequence of those three numbers"),
        ("def paired_interval(a, b):\n    from scipy import stats\n"
         "    ci = stats.ttest_rel(a, b).confidence_interval(0.95)\n"
         "    return statistics.mean(a) - statistics.mean(b), (ci.high, ci.low)", "ends are swapped"),
    ],
    "holm_adjusted": [
        ("def holm_adjusted(p_values):\n    from scipy import stats\n"  # Benjamini–Hochberg, scipy's only adjustment
         "    return list(stats.false_discovery_control(p_values))", "false discovery rate"),
        ("def holm_adjusted(p_values):\n    m = len(p_values)\n"  # Hochberg's step-up, not Holm's step-down
         "    order = sorted(range(m), key=lambda i: p_values[i])\n    out, low = [0.0] * m, 1.0\n"
         "    for rank in reversed(range(m)):\n        i = order[rank]\n"
         "        low = min(low, (m - rank) * p_values[i])\n        out[i] = low\n    return out", "Hochberg"),
        ("def holm_adjusted(p_values):\n    return [min(1.0, len(p_values) * p) for p in p_values]", "Bonferroni"),
        ("def holm_adjusted(p_values):\n    m = len(p_values)\n    ranks = sorted(range(m), key=lambda i: p_values[i])\n"
         "    return [min(1.0, (m - ranks.index(i)) * p) for i, p in enumerate(p_values)]", "carry the largest so far"),
        ("def holm_adjusted(p_values):\n    m, out, top = len(p_values), [0.0] * len(p_values), 0.0\n"
         "    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):\n"
         "        top = max(top, (m - rank) * p_values[i])\n        out[i] = top\n    return out", "cap each adjusted p at 1"),
        ("def holm_adjusted(p_values):\n    m, out, top = len(p_values), [], 0.0\n"
         "    for rank, p in enumerate(sorted(p_values)):\n        top = max(top, min(1.0, (m - rank) * p))\n"
         "        out.append(top)\n    return out", "in sorted order"),
        ("def holm_adjusted(p_values):\n    return max(p_values)", "one per p-value"),
    ],
    "seeds_for_power": [
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"  # an unpaired power calculation
         "    while True:\n        df = 2 * n - 2\n        c = stats.t.ppf(0.975, df)\n"
         "        shift = difference * math.sqrt(n / 2) / sd\n"
         "        if stats.nct.sf(c, df, shift) + stats.nct.cdf(-c, df, shift) >= 0.8:\n            return n\n        n += 1",
         "two-sample (unpaired) power"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"  # two-sample degrees of freedom
         "    while True:\n        df = 2 * n - 2\n        c = stats.t.ppf(0.975, df)\n"
         "        if stats.nct.sf(c, df, difference * math.sqrt(n) / sd) >= 0.8:\n            return n\n        n += 1",
         "2n − 2 degrees of freedom"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"
         "    while stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) > difference:\n        n += 1\n    return n",
         "too few"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n"
         "    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)\n    return max(2, math.ceil((z * sd / difference) ** 2))",
         "is also what the normal approximation"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"  # the textbook central t
         "    while n < ((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / difference) ** 2:\n"
         "        n += 1\n    return n", "the central-t approximation"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 4\n"  # a search that starts too late
         "    while True:\n        c, s = stats.t.ppf(0.975, n - 1), difference * math.sqrt(n) / sd\n"
         "        if stats.nct.sf(c, n - 1, s) + stats.nct.cdf(-c, n - 1, s) >= 0.8:\n            return n\n"
         "        n += 1", "more than needed"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"  # one-sided
         "    while True:\n        c, s = stats.t.ppf(0.95, n - 1), difference * math.sqrt(n) / sd\n"
         "        if stats.nct.sf(c, n - 1, s) >= 0.8:\n            return n\n        n += 1", "one-sided"),
        ("def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"  # df = n
         "    while True:\n        c, s = stats.t.ppf(0.975, n), difference * math.sqrt(n) / sd\n"
         "        if stats.nct.sf(c, n, s) + stats.nct.cdf(-c, n, s) >= 0.8:\n            return n\n        n += 1",
         "n degrees of freedom"),
    ],
    "most_kept": [
        ("def most_kept(threshold):\n    return math.floor(1 / threshold)", "strictly above"),
        ("def most_kept(threshold):\n    return 1 / threshold", "whole number"),
        ("def most_kept(threshold):\n    return round(1 / threshold) - 1", "at most"),
    ],
    "equivalence_p": [
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"
         "    return min(stats.ttest_1samp(differences, -margin, alternative='greater').pvalue,\n"
         "               stats.ttest_1samp(differences, margin, alternative='less').pvalue)", "larger p decides"),
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"
         "    return stats.ttest_1samp(differences, 0.0).pvalue", "opposite question"),
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"
         "    return max(stats.ttest_1samp(differences, -margin).pvalue, stats.ttest_1samp(differences, margin).pvalue)",
         "two-sided p-values"),
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"  # half a two-sided p
         "    return max(stats.ttest_1samp(differences, -margin).pvalue, stats.ttest_1samp(differences, margin).pvalue) / 2",
         "other tail"),
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"  # the tail at |t|
         "    n = len(differences)\n    return max(stats.t.sf(abs(stats.ttest_1samp(differences, b).statistic), n - 1)\n"
         "               for b in (-margin, margin))", "other tail"),
        ("def equivalence_p(differences, margin):\n    from scipy import stats\n"  # the two tails swapped
         "    return max(stats.ttest_1samp(differences, -margin, alternative='less').pvalue,\n"
         "               stats.ttest_1samp(differences, margin, alternative='greater').pvalue)", "tails are swapped"),
    ],
    "effect_change": [
        ("def effect_change(d49, d196):\n    from scipy import stats\n"  # the interval first, then the difference
         "    ci = stats.ttest_ind(d196, d49, equal_var=False).confidence_interval()\n"
         "    return (ci.low, ci.high), statistics.mean(d196) - statistics.mean(d49)", "the interval first"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n    t = stats.ttest_ind(d49, d196, equal_var=False)\n"
         "    ci = t.confidence_interval()\n    return statistics.mean(d49) - statistics.mean(d196), (ci.low, ci.high)",
         "sign is turned round"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n    t = stats.ttest_ind(d49, d196, equal_var=False)\n"
         "    ci = t.confidence_interval()\n    return statistics.mean(d196) - statistics.mean(d49), (ci.low, ci.high)",
         "mind the order of the samples"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n    t = stats.ttest_ind(d196, d49)\n"
         "    ci = t.confidence_interval()\n    return statistics.mean(d196) - statistics.mean(d49), (ci.low, ci.high)",
         "pooled-variance (Student)"),
        ("def effect_change(d49, d196):\n    return statistics.mean(d196) - statistics.mean(d49)", "three numbers"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n"  # the 90 % interval of exercise 2
         "    ci = stats.ttest_ind(d196, d49, equal_var=False).confidence_interval(0.90)\n"
         "    return statistics.mean(d196) - statistics.mean(d49), (ci.low, ci.high)", "90 % interval"),
        ("def effect_change(d49, d196):\n    import numpy as np\n    from scipy import stats\n"  # variances over n
         "    a, b = np.asarray(d196), np.asarray(d49)\n    va, vb = a.var() / len(a), b.var() / len(b)\n"
         "    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))\n"
         "    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)\n    return a.mean() - b.mean(), (a.mean() - b.mean() - half, a.mean() - b.mean() + half)",
         "divide by n:"),
        ("def effect_change(d49, d196):\n    d = statistics.mean(d196) - statistics.mean(d49)\n"
         "    se = math.sqrt(statistics.variance(d196) / len(d196) + statistics.variance(d49) / len(d49))\n"
         "    return d, (d - 1.96 * se, d + 1.96 * se)", "normal quantile z = 1.96"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n    d = statistics.mean(d196) - statistics.mean(d49)\n"
         "    se = math.sqrt(statistics.variance(d196) / len(d196) + statistics.variance(d49) / len(d49))\n"
         "    t = stats.t.ppf(0.975, len(d196) + len(d49) - 2)\n    return d, (d - t * se, d + t * se)",
         "Welch–Satterthwaite"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n"  # paired, on samples that are not pairs
         "    e = [x - y for x, y in zip(d196, d49)]\n    h = stats.t.ppf(0.975, len(e) - 1) * statistics.stdev(e) / math.sqrt(len(e))\n"
         "    d = statistics.mean(d196) - statistics.mean(d49)\n    return d, (d - h, d + h)", "not a paired one"),
        ("def effect_change(d49, d196):\n    from scipy import stats\n"  # Welch's df with n in its denominators
         "    va, vb = statistics.variance(d196) / len(d196), statistics.variance(d49) / len(d49)\n"
         "    df = (va + vb) ** 2 / (va ** 2 / len(d196) + vb ** 2 / len(d49))\n"
         "    h = stats.t.ppf(0.975, df) * math.sqrt(va + vb)\n"
         "    d = statistics.mean(d196) - statistics.mean(d49)\n    return d, (d - h, d + h)", "instead of n − 1"),
    ],
}
RIGHT = {
    "most_kept": ["def most_kept(threshold):\n    from fractions import Fraction\n    m = 0\n"
                  "    while (m + 1) * Fraction(threshold) < 1:\n        m += 1\n    return m",
                  "def most_kept(threshold):\n    import torch\n    from fractions import Fraction\n"
                  "    return torch.tensor(math.ceil(1 / Fraction(threshold)) - 1)"],
    "equivalence_p": ["def equivalence_p(differences, margin):\n    import numpy as np\n    from scipy import stats\n"
                      "    d = np.asarray(differences)\n    se = d.std(ddof=1) / np.sqrt(len(d))\n"
                      "    lower = stats.t.sf((d.mean() + margin) / se, len(d) - 1)\n"
                      "    upper = stats.t.cdf((d.mean() - margin) / se, len(d) - 1)\n    return float(max(lower, upper))"],
    "effect_change": ["def effect_change(d49, d196):\n    import numpy as np\n    from scipy import stats\n"
                      "    a, b = np.asarray(d196), np.asarray(d49)\n    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)\n"
                      "    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))\n"
                      "    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)\n    diff = a.mean() - b.mean()\n"
                      "    return np.array([diff, diff - half, diff + half])"],
    "kernel_smoothing": ["def kernel_smoothing(q, k, v, similarity):\n    w = similarity(q, k)\n"
                         "    return torch.einsum('...nm,...md->...nd', w, v) / w.sum(-1).unsqueeze(-1)"],
    "gaussian_attention": ["def gaussian_attention(q, k, v):\n"
                           "    bias = -0.5 * (k * k).sum(-1).unsqueeze(-2)\n"
                           "    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)",
                           "def gaussian_attention(q, k, v):\n"  # an expanded view stores one row, not N × M
                           "    bias = (-0.5 * (k * k).sum(-1))[..., None, :].expand(*q.shape[:-1], k.shape[-2])\n"
                           "    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)",
                           "from torch.nn.functional import scaled_dot_product_attention\n\n"
                           "def gaussian_attention(q, k, v):\n"
                           "    one = torch.ones_like(q[..., :1])\n"
                           "    return scaled_dot_product_attention(torch.cat([q, one], -1),\n"
                           "                                        torch.cat([k, -(k * k).sum(-1, keepdim=True) / 2], -1), v, scale=1.0)"],
    "row_entropy": ["def row_entropy(weights):\n    return -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1)"],
    "angular_weights": ["def angular_weights(q, k):\n"
                        "    cos = torch.einsum('...nd,...md->...nm', F.normalize(q, dim=-1), F.normalize(k, dim=-1))\n"
                        "    s = 1 - torch.acos(torch.clip(cos, -1, 1)) / math.pi\n    return s / s.sum(-1, keepdim=True)"],
    "hyperplane_agreement": ["def hyperplane_agreement(q, k, normals):\n"
                             "    a, b = torch.sign(q @ normals.T), torch.sign(k @ normals.T)\n"
                             "    return (1 + a @ b.transpose(-2, -1) / len(normals)) / 2"],
    "hashed_angular_attention": ["def hashed_angular_attention(q, k, v, normals):\n"
                                 "    s_q = (q @ normals.T > 0).to(q.dtype) * 2 - 1\n    s_k = (k @ normals.T > 0).to(k.dtype) * 2 - 1\n"
                                 "    planes = normals.shape[0]\n"
                                 "    numerator = 0.5 * v.sum(-2, keepdim=True) + s_q @ (s_k.transpose(-2, -1) @ v) / (2 * planes)\n"
                                 "    denominator = 0.5 * k.shape[-2] + s_q @ s_k.sum(-2).unsqueeze(-1) / (2 * planes)\n"
                                 "    return numerator / denominator"],
    "angular_attention_order1": ["def angular_attention_order1(q, k, v):\n"
                                 "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
                                 "    pq, pk = polynomial_features(q_hat, 3), polynomial_features(k_hat, 3)\n"
                                 "    num = 0.5 * v.sum(-2, keepdim=True) + (q_hat @ (k_hat.transpose(-2, -1) @ v)"
                                 " + pq @ (pk.transpose(-2, -1) @ v) / 6) / math.pi\n"
                                 "    den = 0.5 * k.shape[-2] + (q_hat @ k_hat.sum(-2).unsqueeze(-1)"
                                 " + pq @ pk.sum(-2).unsqueeze(-1) / 6) / math.pi\n"
                                 "    return num / den"],
    "arccos_series": ["def arccos_series(x, order):\n    total = torch.zeros_like(x)\n"
                      "    for m in range(order, -1, -1):\n"
                      "        c = math.factorial(2 * m) / (4 ** m * math.factorial(m) ** 2 * (2 * m + 1))\n"
                      "        total = total + c * torch.pow(x, 2 * m + 1)\n    return math.pi / 2 - total"],
    "padded_linear_angular": ["def padded_linear_angular(q, k, v, key_mask):\n"
                              "    k_hat = F.normalize(k, dim=-1).masked_fill(~key_mask.unsqueeze(-1), 0.0)\n"
                              "    v = v.masked_fill(~key_mask.unsqueeze(-1), 0.0)\n    q_hat = F.normalize(q, dim=-1)\n"
                              "    num = 0.5 * v.sum(-2, keepdim=True) + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi\n"
                              "    count = key_mask.sum(-1, keepdim=True).unsqueeze(-1).to(q.dtype)\n"
                              "    return num / (0.5 * count + q_hat @ k_hat.sum(-2).unsqueeze(-1) / math.pi)",
                              "def padded_linear_angular(q, k, v, key_mask):\n"  # a loop over queries, O(N) all the same
                              "    keep = key_mask.unsqueeze(-1).to(v.dtype)\n"
                              "    k_hat, v = F.normalize(k, dim=-1) * keep, v * keep\n"
                              "    kv, v_sum, k_sum = k_hat.transpose(-2, -1) @ v, v.sum(-2, keepdim=True), k_hat.sum(-2)\n"
                              "    count = keep.sum(-2, keepdim=True)\n"
                              "    rows = []\n"
                              "    for i in range(q.shape[-2]):\n"
                              "        q_i = F.normalize(q[..., i:i + 1, :], dim=-1)\n"
                              "        rows.append((0.5 * v_sum + q_i @ kv / math.pi) / (0.5 * count + q_i @ k_sum.unsqueeze(-1) / math.pi))\n"
                              "    return torch.cat(rows, dim=-2)"],
    "alpha_at": ["def alpha_at(t, alpha0, end):\n    t = torch.tensor(t, dtype=torch.float32)\n"
                 "    s = torch.clamp(t / end, max=1.0)\n    return float(alpha0 * 0.5 * (1 + torch.cos(math.pi * s)))",
                 "def alpha_at(t, alpha0, end):\n    import numpy as np\n"
                 "    return np.float32(0.0) if t >= end else np.float32(alpha0 * 0.5 * (1 + np.cos(np.pi * t / end)))"],
    "mass_kept": ["def mass_kept(q, k, threshold):\n    p = attention_weights(q, k, \"softmax\")\n"
                  "    return torch.where(p > threshold, p, torch.zeros_like(p)).sum(-1)"],
    "token_dwconv": ["def token_dwconv(v, weight):\n    b, h, n, d = v.shape\n    size = weight.shape[1]\n"
                     "    x = v.permute(0, 1, 3, 2).reshape(b, h * d, n)\n"
                     "    w = weight.repeat_interleave(d, dim=0).unsqueeze(1)\n"
                     "    out = F.conv1d(x, w, padding=size // 2, groups=h * d)\n"
                     "    return out.reshape(b, h, d, n).permute(0, 1, 3, 2)"],
    "official_castling_attention": ["def official_castling_attention(q, k, v, conv_weight, alpha, threshold):\n"
                                    "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
                                    "    auxiliary = alpha * (p * (p > threshold)) @ v\n"
                                    "    return mc.linear_angular_attention(q, k, v, form='official', auxiliary=auxiliary) \\\n"
                                    "        + token_dwconv(v, conv_weight)"],
    "patchify": ["def patchify(images, patch):\n    return F.unfold(images, patch, stride=patch).transpose(1, 2)"],
    "softmax_attention_macs": ["def softmax_attention_macs(tokens, width, heads):\n"
                               "    return 4 * tokens * width ** 2 + 2 * tokens ** 2 * width",
                               "import numpy as np\n\ndef softmax_attention_macs(tokens, width, heads):\n"
                               "    return np.int64(tokens) * width * (4 * width + 2 * tokens)"],
    "castle_model": ["def castle_model(model):\n"
                     "    layers = list(filter(lambda m: isinstance(m, CastlingAttention), model.modules()))\n"
                     "    if any(layer.alpha != 0 for layer in layers):\n"
                     "        raise RuntimeError('a layer still weights its softmax branch')\n"
                     "    for layer in layers:\n        layer.castle()\n    return model"],
    "accuracy_without_branch": ["def accuracy_without_branch(model, images, labels):\n"
                                "    twin = copy.deepcopy(model).eval()\n    set_alpha(twin, 0.0)\n    with torch.no_grad():\n"
                                "        return 100.0 * (twin(images).argmax(-1) == labels).float().mean().item()"],
    "model_mask_density": ["def model_mask_density(model, images):\n    from minicastling.measure import mask_density\n"
                           "    return mask_density(model, images)"],
    "layer_sharpness": ["def layer_sharpness(layer, x):\n    q, k, _ = layer.split_qkv(x)\n"
                        "    w = mc.quadratic_attention(q, k, torch.eye(k.shape[-2]).expand(*k.shape[:-1], k.shape[-2]), 'angular-linear')\n"
                        "    return (w.amax(-1) * w.shape[-1]).mean().item()"],
    "smallest_weight_bound": ["def smallest_weight_bound(tokens):\n    a, b = 0.5 - 1 / math.pi, 0.5 + 1 / math.pi\n"
                              "    return tokens / (1 + (tokens - 1) * b / a)"],
    "paired_interval": ["def paired_interval(a, b):\n    from scipy import stats\n"
                        "    ci = stats.ttest_rel(a, b).confidence_interval(0.95)\n"
                        "    return statistics.mean(a) - statistics.mean(b), (ci.low, ci.high)",
                        "def paired_interval(a, b):\n    import numpy as np\n    from scipy import stats\n"
                        "    d = np.subtract(a, b)\n    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))\n"
                        "    return d.mean(), (d.mean() - half, d.mean() + half)",
                        "def paired_interval(a, b):\n    from scipy import stats\n"  # a flat (mean, low, high)
                        "    ci = stats.ttest_rel(a, b).confidence_interval(0.95)\n"
                        "    return statistics.mean(a) - statistics.mean(b), ci.low, ci.high",
                        "def paired_interval(a, b):\n    import numpy as np\n    from scipy import stats\n"  # one array
                        "    d = np.subtract(a, b)\n    half = stats.t.ppf(0.975, len(d) - 1) * stats.sem(d)\n"
                        "    return np.array([d.mean(), d.mean() - half, d.mean() + half])",
                        "def paired_interval(a, b):\n    from scipy import stats\n"  # in float32, as torch computes by default
                        "    d = torch.tensor(a) - torch.tensor(b)\n"
                        "    half = stats.t.ppf(0.975, len(d) - 1) * d.std().item() / math.sqrt(len(d))\n"
                        "    return d.mean().item(), (d.mean().item() - half, d.mean().item() + half)"],
    "holm_adjusted": ["def holm_adjusted(p_values):\n    import numpy as np\n"  # numpy, from the largest p down
                      "    p = np.asarray(p_values)\n    order = np.argsort(p)\n    m = len(p)\n"
                      "    stepped = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))\n"
                      "    out = np.empty(m)\n    out[order] = stepped\n    return out",
                      "def holm_adjusted(p_values):\n    p = torch.tensor(p_values, dtype=torch.float64)\n"  # a tensor
                      "    sorted_p, order = p.sort(stable=True)\n    m = len(p_values)\n"
                      "    stepped = (torch.arange(m, 0, -1) * sorted_p).cummax(0).values.clamp(max=1)\n"
                      "    return torch.empty(m, dtype=torch.float64).scatter(0, order, stepped)"],
    "seeds_for_power": ["def seeds_for_power(sd, difference):\n    import numpy as np\n"  # a simulation of the power
                        "    rng, n = np.random.default_rng(0), 2\n    from scipy import stats\n    while True:\n"
                        "        d = rng.normal(difference, sd, (20000, n))\n"
                        "        t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))\n"
                        "        if (np.abs(t) > stats.t.ppf(0.975, n - 1)).mean() >= 0.8:\n            return n\n"
                        "        n += 1",
                        "def seeds_for_power(sd, difference):\n    import numpy as np\n"  # 2,000 draws: off by a few
                        "    rng, n = np.random.default_rng(3), 2\n    from scipy import stats\n    while True:\n"
                        "        d = rng.normal(difference, sd, (2000, n))\n"
                        "        t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))\n"
                        "        if (np.abs(t) > stats.t.ppf(0.975, n - 1)).mean() >= 0.8:\n            return n\n"
                        "        n += 1",
                        "def seeds_for_power(sd, difference):\n    from scipy import stats\n    n = 2\n"
                        "    while True:\n        crit = stats.t.ppf(0.975, n - 1)\n        nc = difference * math.sqrt(n) / sd\n"
                        "        if stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= 0.8:\n"
                        "            return n\n        n += 1"],
}


def verdict(name: str, source: str, imports: str) -> str:
    """'' if the checker accepts the function `source` defines, else its feedback."""
    function = namespace_of(imports, source)[name]
    try:
        getattr(check, name)(function)
    except check.CheckFailed as failure:
        return str(failure)
    return ""


def test_every_exercise_has_a_solution_wrong_answers_a_right_alternative_and_a_checker():
    assert sorted(SOLUTIONS) == sorted(check.EXERCISES) == sorted(WRONG) == sorted(RIGHT)
    assert all(len(mistakes) >= 2 for mistakes in WRONG.values())


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_checker_accepts_the_solution(name, capsys):
    imports, source = SOLUTIONS[name]
    assert verdict(name, source, imports) == ""
    assert f"✓ {check.EXERCISES[name].label} passed" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_checker_accepts_the_solution_with_its_parameters_renamed(name, capsys):
    """A student who names the stub's parameters otherwise, in the same order, is called by position: every
    checker passes its arguments in the stub's order."""
    imports, source = SOLUTIONS[name]
    solution = namespace_of(imports, source)[name]
    parameters = list(inspect.signature(solution).parameters)
    renamed = f"def {name}({', '.join('my_' + p for p in parameters)}):\n    return solution({', '.join('my_' + p for p in parameters)})"
    scope = {"solution": solution}
    exec(renamed, scope)
    getattr(check, name)(scope[name])
    assert f"✓ {check.EXERCISES[name].label} passed" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_checker_rejects_the_stub_with_its_hint(name):
    imports, source = SOLUTIONS[name]
    stubbed = student_copy({"cells": [{"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": source,
                                       "outputs": [], "execution_count": None}]})["cells"][1]
    feedback = verdict(name, source_of(stubbed), imports)
    exercise = check.EXERCISES[name]
    assert f"{exercise.label} is not written yet" in feedback
    assert exercise.hint in feedback


@pytest.mark.parametrize("name, index", [(name, i) for name in sorted(WRONG) for i in range(len(WRONG[name]))])
def test_checker_rejects_a_wrong_answer_in_words(name, index):
    imports, _ = SOLUTIONS[name]
    source, words = WRONG[name][index]
    feedback = verdict(name, source, imports)
    assert feedback.startswith(check.EXERCISES[name].label), f"accepted a wrong answer:\n{source}"
    assert words in feedback, feedback


@pytest.mark.parametrize("name, index", [(name, i) for name in sorted(RIGHT) for i in range(len(RIGHT[name]))])
def test_checker_accepts_a_right_answer_written_differently(name, index):
    imports, _ = SOLUTIONS[name]
    assert verdict(name, RIGHT[name][index], imports) == "", RIGHT[name][index]


@pytest.mark.parametrize("number", sorted({e.tutorial for e in check.EXERCISES.values()}))
def test_each_tutorials_exercises_climb_from_warm_up_to_stretch(number):
    levels = [e.level for e in check.for_tutorial(number)]
    assert levels[0] == "warm-up" and levels[-1] == "stretch", levels
    assert levels == sorted(levels, key=check.LEVELS.index), levels


CODE_IN_A_HINT = re.compile(r"\[\.\.\.|\bdim=|keepdim|\w\s*@\s*\w|\.(transpose|sum|mean|cumsum|pad)\(|\bfor \w+ in\b")


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_hints_guide_without_giving_the_solution(name):
    """A hint says where to start in words: no indexing, reductions or loops in code, and no expression
    from the worked solution."""
    assert not CODE_IN_A_HINT.search(check.EXERCISES[name].hint), check.EXERCISES[name].hint
    _, source = SOLUTIONS[name]
    body = ast.parse(source).body[-1].body[1:]  # after the docstring
    hint = check.EXERCISES[name].hint.replace(" ", "")
    for node in (n for statement in body for n in ast.walk(statement)):
        naming_an_api = isinstance(node, ast.Call) and all(  # `model.modules()`, `t_quantile(df)` point the way
            isinstance(a, (ast.Name, ast.Constant)) for a in node.args + [k.value for k in node.keywords])
        if isinstance(node, (ast.BinOp, ast.Call, ast.Compare, ast.Subscript)) and not naming_an_api:
            expression = ast.unparse(node).replace(" ", "")
            if len(expression) > 12:
                assert expression not in hint, f"the hint for {name} gives away `{ast.unparse(node)}`"


# --- the shared feedback, on one exercise -------------------------------------------------------

def feedback_for(source: str, name: str = "kernel_smoothing") -> str:
    return verdict(name, source, SOLUTIONS[name][0])


WEIGHTS = ("def kernel_smoothing(q, k, v, similarity):\n"  # the right weights, then a variation on the output
           "    s = similarity(q, k)\n"
           "    w = s / s.sum(-1, keepdim=True)\n")
SMOOTHED = "mc.quadratic_attention({q}, {k}, {v}, similarity)"


def test_feedback_names_shape_axes_and_the_inputs():
    text = feedback_for(WEIGHTS + "    return w")
    assert "wrong shape" in text and "expected (2, 3, 6, 4), got (2, 3, 6, 6)" in text and "q (2, 3, 6, 4)" in text


def test_feedback_on_a_cut_or_wrong_gradient():
    assert "no gradient reaches `q`" in feedback_for(WEIGHTS + "    return w.detach() @ v")
    text = feedback_for(WEIGHTS + "    return (w.detach() + (w - w.detach()) / 2) @ v")  # right values, half the gradient
    assert "the gradient with respect to `q` has the right shape but wrong values" in text


def test_feedback_on_no_gradient_at_all():
    text = feedback_for("def kernel_smoothing(q, k, v, similarity):\n    return " + SMOOTHED.format(q="q", k="k", v="v")
                        + ".detach()")
    assert "no gradient flows" in text


def test_feedback_on_an_input_changed_in_place():
    text = feedback_for("def kernel_smoothing(q, k, v, similarity):\n    q /= 2\n    return "
                        + SMOOTHED.format(q="q", k="k", v="v"))
    assert "changed its input `q` in place" in text


def test_feedback_on_dtype_type_and_parameter_names():
    function = "def kernel_smoothing({args}, similarity):\n    return {body}"
    assert "should be torch.float32" in feedback_for(
        function.format(args="q, k, v", body=SMOOTHED.format(q="q.double()", k="k.double()", v="v.double()")))
    assert "should be a torch.Tensor" in feedback_for(
        function.format(args="q, k, v", body=SMOOTHED.format(q="q", k="k", v="v") + ".tolist()"))
    renamed = function.format(args="query, key, value", body=SMOOTHED.format(q="query", k="key", v="value"))
    assert feedback_for(renamed) == ""  # renamed parameters in the stub's order are called by position
    assert "Keep the parameters of the exercise's stub, in its order" in feedback_for(
        "def kernel_smoothing(q, k, v, similarity, scale):\n    return " + SMOOTHED.format(q="q", k="k", v="v"))
    assert "times 2" in feedback_for(function.format(args="q, k, v", body="2 * " + SMOOTHED.format(q="q", k="k", v="v")))
    with pytest.raises(check.CheckFailed, match="pass your function itself"):
        check.kernel_smoothing("kernel_smoothing")


def test_notebooks_show_the_feedback_without_a_traceback():
    failure = check.CheckFailed("Exercise 01.1 (kernel_smoothing): wrong values")
    assert failure._render_traceback_() == ["CheckFailed: Exercise 01.1 (kernel_smoothing): wrong values"]


# --- the tutorials and their student copies ----------------------------------------------------

@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name[:2])
def test_tutorial_ends_with_three_checked_exercises(path):
    notebook = read_notebook(path)
    _, sections = exercise_sections(notebook)
    number = path.name[:2]
    assert len(sections) >= 3
    names = [e.name for e in check.for_tutorial(number)]
    assert len(names) == len(sections)
    for index, (heading, solution, check_cell) in enumerate(sections, 1):
        level = check.EXERCISES[names[index - 1]].level
        assert heading.startswith(f"### Exercise {index} · {level} · "), heading
        assert is_solution(solution), f"{path.name}: the cell under '{heading}' must be tagged 'solution'"
        name = names[index - 1]
        assert source_of(check_cell).strip() == f"check.{name}({name})"
        assert check.EXERCISES[name].number == index
    assert notebook["cells"][-1] is sections[-1][2], "the exercises must end the tutorial"


def test_student_copies_are_the_tutorials_with_stubs(tmp_path):
    written = write_assignments(ROOT / "tutorials", tmp_path)
    assert [p.name for p in written] == [p.name for p in TUTORIALS]
    for tutorial, copy in zip(TUTORIALS, written):
        original, student = read_notebook(tutorial), read_notebook(copy)
        assert source_of(student["cells"][0]).startswith("> **Student copy.**")
        assert len(student["cells"]) == len(original["cells"]) + 1
        for before, after in zip(original["cells"], student["cells"][1:]):
            assert not after.get("outputs") and after.get("execution_count") is None
            if not is_solution(before):
                assert source_of(after) == source_of(before)
                continue
            assert after["metadata"]["tags"] == ["exercise"]
            solution, stub = ast.parse(source_of(before)).body[-1], ast.parse(source_of(after)).body[-1]
            assert ast.dump(solution.args) == ast.dump(stub.args), f"{copy.name}: {stub.name} changed its signature"
            assert ast.get_docstring(solution) == ast.get_docstring(stub)
            assert isinstance(stub.body[-1], ast.Raise) and len(stub.body) == 2, "a stub leaks solution code"
            assert check.EXERCISES[stub.name].hint.split()[0] in source_of(after)


def test_a_student_copy_runs_top_to_bottom_and_every_check_asks_for_work(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    path = write_assignments(ROOT / "tutorials", tmp_path / "assignments")[0]  # tutorial 01: seconds in smoke mode
    notebook = nbclient.NotebookClient(__import__("nbformat").read(path, 4), timeout=300, allow_errors=True,
                                       resources={"metadata": {"path": str(path.parent)}})
    monkeypatch.setenv("MINICASTLING_BUDGET", "smoke")
    executed = notebook.execute()
    errors = [(i, out) for i, cell in enumerate(executed.cells) for out in cell.get("outputs", [])
              if out["output_type"] == "error"]
    check_cells = [i for i, cell in enumerate(executed.cells) if cell.source.startswith("check.")]
    assert [i for i, _ in errors] == check_cells, "only the check cells may fail in a fresh student copy"
    for _, error in errors:
        assert error["ename"] == "CheckFailed" and "is not written yet" in error["evalue"]


def test_assignments_command(tmp_path, capsys):
    from minicastling.__main__ import main

    assert main(["assignments", "--out", str(tmp_path), "--tutorials", str(ROOT / "tutorials")]) == 0
    assert len(list(tmp_path.glob("*.ipynb"))) == len(TUTORIALS)
    assert main(["assignments", "--out", str(tmp_path), "--tutorials", str(tmp_path / "none")]) == 1
    assert "no tutorials" in capsys.readouterr().err
    assert main(["assignments", "--out", str(ROOT / "tutorials"), "--tutorials", str(ROOT / "tutorials")]) == 1
    assert "would overwrite the solutions" in capsys.readouterr().err


def test_setup_cells_are_identical_and_install_only_when_missing():
    boots = set()
    for path in TUTORIALS:
        setup = next(source_of(c) for c in read_notebook(path)["cells"] if c["cell_type"] == "code")
        boot = setup[: setup.index("importlib.invalidate_caches()")]
        assert re.search(r'if importlib\.util\.find_spec\("minicastling"\) is None:', boot)
        assert "pip" in boot and "MINICASTLING_SOURCE" in boot and "device = setup(seed=0)" in setup
        boots.add(boot)
    assert len(boots) == 1, "every tutorial must start with the same setup lines"


def test_castle_model_asks_for_a_runtime_error():
    text = verdict("castle_model", "def castle_model(model):\n    raise ValueError('alpha is not 0')",
                   SOLUTIONS["castle_model"][0])
    assert "should raise RuntimeError, but your function raised ValueError: alpha is not 0" in text


def test_the_answer_key_answers_every_exercise_and_stays_out_of_the_student_copies(tmp_path):
    key = (ROOT / "tutorials" / "answer_key.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\d\d) · .*?\n(.*?)(?=^## )", key, re.S | re.M))
    for number in sorted({e.tutorial for e in check.EXERCISES.values()}):
        answered = re.findall(r"^\*\*Exercise (\d) \(", sections.get(number, ""), re.M)
        assert answered == [str(e.number) for e in check.for_tutorial(number)], number
    written = write_assignments(ROOT / "tutorials", tmp_path)
    assert all(path.suffix == ".ipynb" for path in written) and not list(tmp_path.glob("*.md"))


def test_a_call_that_never_ends_is_stopped_with_words(monkeypatch):
    from minicastling.check import core

    exercise = check.EXERCISES["seeds_for_power"]
    with pytest.raises(core.CheckFailed, match="ran for over 1 s.*never met"):
        with core.time_limit(exercise, {"sd": 1.0, "difference": 1.0}, seconds=1):
            while True:  # a search whose power never reaches 80 %
                pass
