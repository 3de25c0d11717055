"""Exercise checkers: each accepts the tutorial's solution and rejects its stub and a wrong answer,
with feedback in words; the student copies stay in sync with the tutorials."""

import ast
import re
from pathlib import Path

import pytest
import torch

import minicastling
from minicastling import check
from minicastling.assignments import is_solution, read_notebook, source_of, student_copy, write_assignments

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
    """{exercise name: (imports, solution source)} read from the tutorials themselves."""
    found = {}
    for path in TUTORIALS:
        imports, sections = exercise_sections(read_notebook(path))
        for _, solution, _ in sections:
            name = ast.parse(source_of(solution)).body[-1].name
            found[name] = (imports, source_of(solution))
    return found


SOLUTIONS = solutions()

# A plausible mistake for every exercise, and words its feedback must contain.
WRONG = {
    "softmax_attention": ("def softmax_attention(q, k, v):\n    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v",
                          "wrong values"),
    "kernel_smoothing": ("def kernel_smoothing(q, k, v, kernel):\n    w = kernel(q, k)\n    return w / w.sum(-2, keepdim=True) @ v",
                         "wrong values"),
    "row_entropy": ("def row_entropy(weights):\n    return -(weights * weights.log()).sum(-1)", "NaN"),
    "spectral_angle": ("def spectral_angle(q, k):\n    return torch.arccos((q @ k.transpose(-2, -1)).clamp(-1, 1))",
                       "wrong values"),
    "hyperplane_agreement": ("def hyperplane_agreement(q, k, normals):\n    a, b = (q @ normals.T > 0).float(), (k @ normals.T > 0).float()\n"
                             "    return a @ b.transpose(-2, -1) / len(normals)", "wrong values"),
    "angular_weights": ("def angular_weights(q, k):\n    return mc.angular_similarity(q, k)", "wrong values"),
    "arccos_series": ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 1)\n"
                      "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m) for m in range(order + 1))", "wrong values"),
    "angular_attention_order1": ("def angular_attention_order1(q, k, v):\n"
                                 "    return mc.quadratic_attention(q, k, v, lambda a, b: mc.angular_similarity(a, b, order=1))",
                                 "N² ="),
    "causal_linear_angular": ("def causal_linear_angular(q, k, v):\n    return mc.linear_angular_attention(q, k, v)", "wrong values"),
    "fraction_masked": ("def fraction_masked(q, k, threshold):\n"
                        "    return (attention_probabilities(q, k) > threshold).float().mean((-2, -1))", "wrong values"),
    "token_dwconv": ("def token_dwconv(v, weight):\n    size, n = weight.shape[1], v.shape[-2]\n"
                     "    padded = F.pad(v, (0, 0, size // 2, size // 2))\n"
                     "    return sum(weight[:, size - 1 - t, None, None] * padded[..., t:t + n, :] for t in range(size))",
                     "wrong values"),
    "masked_softmax_branch": ("def masked_softmax_branch(q, k, v, threshold):\n"
                              "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)\n"
                              "    p = p * (p > threshold)\n    return p / p.sum(-1, keepdim=True).clamp_min(1e-9) @ v",
                              "wrong values"),
    "softmax_attention_macs": ("def softmax_attention_macs(tokens, width, heads):\n"
                               "    return 3 * tokens * width * width + 2 * tokens * tokens * width", "1 × N·C²"),
    "patchify": ("def patchify(images, patch):\n    return rearrange(images, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p1=patch, p2=patch)",
                 "wrong values"),
    "castle_model": ("def castle_model(model):\n    for m in model.modules():\n        if isinstance(m, CastlingAttention):\n"
                     "            m.castle()\n    return model", "half"),
    "warmup_cosine": ("def warmup_cosine(step, total_steps, warmup_steps, peak):\n    if step < warmup_steps:\n"
                      "        return peak * step / warmup_steps\n"
                      "    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))",
                      "warm-up"),
    "smoothed_cross_entropy": ("def smoothed_cross_entropy(logits, labels, smoothing):\n    k = logits.shape[-1]\n"
                               "    target = F.one_hot(labels, k) * (1 - smoothing) + (1 - F.one_hot(labels, k)) * smoothing / (k - 1)\n"
                               "    return -(target * logits.log_softmax(-1)).sum(-1).mean()", "wrong values"),
    "crop_flip": ("def crop_flip(images, offsets, flips, padding):\n    h, w = images.shape[-2:]\n"
                  "    padded = torch.where(flips[:, None, None, None], F.pad(images, (padding,) * 4).flip(-1), F.pad(images, (padding,) * 4))\n"
                  "    return torch.stack([p[:, r:r + h, c:c + w] for p, (r, c) in zip(padded, offsets.tolist())])",
                  "wrong values"),
    "speedups": ("def speedups(rows, method, peer):\n    s = {(r['method'], r['tokens']): r['seconds'] for r in rows}\n"
                 "    return {n: s[method, n] / s[peer, n] for (m, n) in s if m == method and s.get((peer, n)) and s[method, n]}",
                 "upside down"),
    "crossover_tokens": ("def crossover_tokens(rows, fast, slow):\n    s = {(r['method'], r['tokens']): r['seconds'] for r in rows}\n"
                         "    for n in sorted({r['tokens'] for r in rows}):\n"
                         "        if s.get((fast, n)) and s.get((slow, n)) and s[fast, n] < s[slow, n]:\n            return n\n",
                         "the crossover is"),
    "elu_linear_attention": ("def elu_linear_attention(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n"
                             "    w = phi_q @ phi_k.transpose(-2, -1)\n    return w / w.sum(-1, keepdim=True) @ v", "N² ="),
}


def verdict(name: str, source: str, imports: str) -> str:
    """'' if the checker accepts the function `source` defines, else its feedback."""
    function = namespace_of(imports, source)[name]
    try:
        getattr(check, name)(function)
    except check.CheckFailed as failure:
        return str(failure)
    return ""


def test_every_exercise_has_a_solution_a_wrong_answer_and_a_checker():
    assert sorted(SOLUTIONS) == sorted(check.EXERCISES) == sorted(WRONG)


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_checker_accepts_the_solution(name, capsys):
    imports, source = SOLUTIONS[name]
    assert verdict(name, source, imports) == ""
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


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_checker_rejects_a_wrong_answer_in_words(name):
    imports, _ = SOLUTIONS[name]
    source, words = WRONG[name]
    feedback = verdict(name, source, imports)
    assert feedback.startswith(check.EXERCISES[name].label), feedback
    assert words in feedback, feedback


# --- the shared feedback, on one exercise -------------------------------------------------------

def feedback_for(source: str, name: str = "softmax_attention") -> str:
    return verdict(name, source, SOLUTIONS[name][0])


def test_feedback_names_shape_axes_and_the_inputs():
    text = feedback_for("def softmax_attention(q, k, v):\n    return torch.softmax(q @ k.transpose(-2, -1), -1)")
    assert "wrong shape" in text and "expected (2, 3, 6, 4), got (2, 3, 6, 6)" in text and "q (2, 3, 6, 4)" in text


def test_feedback_on_a_cut_or_wrong_gradient():
    text = feedback_for("def softmax_attention(q, k, v):\n"
                        "    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)\n"
                        "    return w.detach() @ v")
    assert "no gradient reaches `q`" in text
    text = feedback_for("def softmax_attention(q, k, v):\n"
                        "    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)\n"
                        "    return (w.detach() + (w - w.detach()) / 2) @ v")  # right values, half the gradient
    assert "the gradient with respect to `q` has the right shape but wrong values" in text


def test_feedback_on_no_gradient_at_all():
    text = feedback_for("def softmax_attention(q, k, v):\n    return mc.quadratic_attention(q, k, v).detach()")
    assert "no gradient flows" in text


def test_feedback_on_an_input_changed_in_place():
    text = feedback_for("def softmax_attention(q, k, v):\n    q /= math.sqrt(q.shape[-1])\n"
                        "    return torch.softmax(q @ k.transpose(-2, -1), -1) @ v")
    assert "changed its input `q` in place" in text


def test_feedback_on_dtype_type_and_parameter_names():
    assert "should be torch.float32" in feedback_for(
        "def softmax_attention(q, k, v):\n    return mc.quadratic_attention(q.double(), k.double(), v.double())")
    assert "should be a torch.Tensor" in feedback_for(
        "def softmax_attention(q, k, v):\n    return mc.quadratic_attention(q, k, v).tolist()")
    assert "Keep the parameter names" in feedback_for(
        "def softmax_attention(query, key, value):\n    return mc.quadratic_attention(query, key, value)")
    assert "times 2" in feedback_for("def softmax_attention(q, k, v):\n    return 2 * mc.quadratic_attention(q, k, v)")
    with pytest.raises(check.CheckFailed, match="pass your function itself"):
        check.softmax_attention("softmax_attention")


def test_notebooks_show_the_feedback_without_a_traceback():
    failure = check.CheckFailed("Exercise 01.1 (softmax_attention): wrong values")
    assert failure._render_traceback_() == ["CheckFailed: Exercise 01.1 (softmax_attention): wrong values"]


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
        assert heading.startswith(f"### Exercise {index} ·"), heading
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
        assert "pip" in boot and "MINICASTLING_SOURCE" in boot and "mc.setup(" in setup
        boots.add(boot)
    assert len(boots) == 1, "every tutorial must start with the same setup lines"


def test_castle_model_asks_for_a_runtime_error():
    text = verdict("castle_model", "def castle_model(model):\n    raise ValueError('alpha is not 0')",
                   SOLUTIONS["castle_model"][0])
    assert "should raise RuntimeError, but your function raised ValueError: alpha is not 0" in text
