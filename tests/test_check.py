"""Exercise checkers: each accepts the tutorial's solution and rejects its stub and a wrong answer,
with feedback in words; the student copies stay in sync with the tutorials."""

import ast
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

# A plausible mistake for every exercise, and words its feedback must contain.
WRONG = {
    "causal_softmax_attention": ("def causal_softmax_attention(q, k, v):\n"
                                 "    n = q.shape[-2]\n"
                                 "    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) * torch.ones(n, n).tril()\n"
                                 "    return torch.softmax(scores, dim=-1) @ v",
                                 "wrong values"),
    "gaussian_attention": ("def gaussian_attention(q, k, v):\n"
                           "    w = torch.exp(-torch.cdist(q, k) ** 2 / 2)\n"
                           "    return w / w.sum(-1, keepdim=True) @ v",
                           "NaN"),
    "row_entropy": ("def row_entropy(weights):\n    return -(weights * weights.log()).sum(-1)", "NaN"),
    "hyperplane_agreement": ("def hyperplane_agreement(q, k, normals):\n    a, b = (q @ normals.T > 0).float(), (k @ normals.T > 0).float()\n"
                             "    return a @ b.transpose(-2, -1) / len(normals)", "wrong values"),
    "angular_weights": ("def angular_weights(q, k):\n    return mc.angular_similarity(q, k)", "wrong values"),
    "arccos_series": ("def arccos_series(x, order):\n    c = mc.arccos_taylor_coefficients(order + 1)\n"
                      "    return math.pi / 2 - sum(float(c[m]) * x ** (2 * m) for m in range(order + 1))", "wrong values"),
    "angular_attention_order1": ("def angular_attention_order1(q, k, v):\n"
                                 "    return mc.quadratic_attention(q, k, v, lambda a, b: mc.angular_similarity(a, b, order=1))",
                                 "N² ="),
    "causal_linear_angular": ("def causal_linear_angular(q, k, v):\n    return mc.linear_angular_attention(q, k, v)", "wrong values"),
    "mass_kept": ("def mass_kept(q, k, threshold):\n"
                  "    p = attention_probabilities(q, k)\n"
                  "    return (p > threshold).float().mean(-1)",
                  "wrong values"),
    "token_dwconv": ("def token_dwconv(v, weight):\n    size, n = weight.shape[1], v.shape[-2]\n"
                     "    padded = F.pad(v, (0, 0, size // 2, size // 2))\n"
                     "    return sum(weight[:, size - 1 - t, None, None] * padded[..., t:t + n, :] for t in range(size))",
                     "wrong values"),
    "softmax_attention_macs": ("def softmax_attention_macs(tokens, width, heads):\n"
                               "    return 3 * tokens * width * width + 2 * tokens * tokens * width", "1 × N·C²"),
    "patchify": ("def patchify(images, patch):\n    return rearrange(images, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p1=patch, p2=patch)",
                 "wrong values"),
    "castle_model": ("def castle_model(model):\n    for m in model.modules():\n        if isinstance(m, CastlingAttention):\n"
                     "            m.castle()\n    return model", "half"),
    "hashed_angular_attention": ("def hashed_angular_attention(q, k, v, normals):\n"
                                 "    s = lambda x: torch.where(x @ normals.T > 0, 1.0, -1.0)\n"
                                 "    sq, sk = s(q), s(k)\n"
                                 "    return sq @ (sk.transpose(-2, -1) @ v) / (sq @ sk.sum(-2).unsqueeze(-1))",
                                 "wrong values"),
    "padded_linear_angular": ("def padded_linear_angular(q, k, v, key_mask):\n"
                              "    keep = key_mask.unsqueeze(-1).to(v.dtype)\n"
                              "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1) * keep\n"
                              "    v = v * keep\n"
                              "    numerator = 0.5 * v.sum(-2, keepdim=True) + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi\n"
                              "    return numerator / (0.5 * k.shape[-2] + q_hat @ k_hat.sum(-2).unsqueeze(-1) / math.pi)",
                              "wrong values"),
    "alpha_at": ("def alpha_at(t, alpha0, end):\n"
                 "    return alpha0 * 0.5 * (1 + math.cos(math.pi * t / end))",
                 "after the decay window"),
    "official_castling_attention": ("def official_castling_attention(q, k, v, conv_weight, alpha, threshold):\n"
                                    "    q_hat, k_hat = F.normalize(q, dim=-1), F.normalize(k, dim=-1)\n"
                                    "    linear = F.normalize(0.5 * v + q_hat @ (k_hat.transpose(-2, -1) @ v) / math.pi, dim=-1)\n"
                                    "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
                                    "    return linear + alpha * (p * (p > threshold)) @ v + token_dwconv(v, conv_weight)",
                                    "wrong values"),
    "crop_flip": ("def crop_flip(images, offsets, flips, padding):\n"
                  "    h, w = images.shape[-2:]\n"
                  "    mirrored = torch.where(flips[:, None, None, None], images.flip(-1), images)\n"
                  "    padded = F.pad(mirrored, (padding,) * 4)\n"
                  "    return torch.stack([p[:, r:r + h, c:c + w] for p, (r, c) in zip(padded, offsets.tolist())])",
                  "mirrored before they are cropped"),
    "model_mask_density": ("def model_mask_density(model, images):\n"
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
                           "    return sum(densities) / len(densities)",
                           "training mode"),
    "layer_sharpness": ("def layer_sharpness(layer, x):\n"
                        "    q, k, _ = layer.split_qkv(x)\n"
                        "    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)\n"
                        "    return p.amax(-1).mean().item() * p.shape[-1]",
                        "the answer is"),
    "smallest_weight_bound": ("def smallest_weight_bound(tokens):\n"
                              "    return (0.5 - 1 / math.pi) / (0.5 + 1 / math.pi)",
                              "For one token it must be 1"),
    "difference_interval": ("def difference_interval(a, b):\n"
                            "    d = statistics.mean(a) - statistics.mean(b)\n"
                            "    half = 1.96 * math.sqrt(statistics.pvariance(a) / len(a) + statistics.pvariance(b) / len(b))\n"
                            "    return d, (d - half, d + half)",
                            "Too narrow"),
    "seeds_needed": ("def seeds_needed(std, half_width):\n"
                     "    n = 2\n"
                     "    while 1.96 * std * math.sqrt(2 / n) > half_width:\n"
                     "        n += 1\n"
                     "    return n",
                     "too few"),
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

def feedback_for(source: str, name: str = "causal_softmax_attention") -> str:
    return verdict(name, source, SOLUTIONS[name][0])


WEIGHTS = ("def causal_softmax_attention(q, k, v):\n"  # the right causal weights, then a variation on the output
           "    n = q.shape[-2]\n"
           "    later = torch.ones(n, n, dtype=torch.bool).triu(1)\n"
           "    w = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(later, -math.inf), -1)\n")
RIGHT = "torch.nn.functional.scaled_dot_product_attention({q}, {k}, {v}, is_causal=True)"


def test_feedback_names_shape_axes_and_the_inputs():
    text = feedback_for(WEIGHTS + "    return w")
    assert "wrong shape" in text and "expected (2, 3, 6, 4), got (2, 3, 6, 6)" in text and "q (2, 3, 6, 4)" in text


def test_feedback_on_a_cut_or_wrong_gradient():
    assert "no gradient reaches `q`" in feedback_for(WEIGHTS + "    return w.detach() @ v")
    text = feedback_for(WEIGHTS + "    return (w.detach() + (w - w.detach()) / 2) @ v")  # right values, half the gradient
    assert "the gradient with respect to `q` has the right shape but wrong values" in text


def test_feedback_on_no_gradient_at_all():
    text = feedback_for("def causal_softmax_attention(q, k, v):\n    return " + RIGHT.format(q="q", k="k", v="v") + ".detach()")
    assert "no gradient flows" in text


def test_feedback_on_an_input_changed_in_place():
    text = feedback_for("def causal_softmax_attention(q, k, v):\n    q /= 2\n    return " + RIGHT.format(q="q", k="k", v="v"))
    assert "changed its input `q` in place" in text


def test_feedback_on_dtype_type_and_parameter_names():
    function = "def causal_softmax_attention({args}):\n    return {body}"
    assert "should be torch.float32" in feedback_for(
        function.format(args="q, k, v", body=RIGHT.format(q="q.double()", k="k.double()", v="v.double()")))
    assert "should be a torch.Tensor" in feedback_for(
        function.format(args="q, k, v", body=RIGHT.format(q="q", k="k", v="v") + ".tolist()"))
    assert "Keep the parameter names" in feedback_for(
        function.format(args="query, key, value", body=RIGHT.format(q="query", k="key", v="value")))
    assert "times 2" in feedback_for(function.format(args="q, k, v", body="2 * " + RIGHT.format(q="q", k="k", v="v")))
    with pytest.raises(check.CheckFailed, match="pass your function itself"):
        check.causal_softmax_attention("causal_softmax_attention")


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
        assert "pip" in boot and "MINICASTLING_SOURCE" in boot and "mc.setup(" in setup
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
