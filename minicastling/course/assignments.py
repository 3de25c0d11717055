"""Student copies of the tutorials, plain or as an nbgrader course.

In a tutorial, the cell under each "### Exercise" heading that holds the worked solution is tagged
`solution`; it defines one function, whose name is the exercise's name in `minicastling.check`, and the
cell under it is the check, `check.NAME(NAME)`.

* plain (`python -m minicastling assignments --out DIR`): a copy keeps every other cell, clears all
  outputs, and turns each solution into the same signature and docstring followed by
  `raise NotImplementedError(<the checker's hint>)`, so the check cell says "not written yet" and gives
  the hint until the student writes the function.
* nbgrader (`--format nbgrader`): a course folder with nbgrader_config.py and one source assignment per
  tutorial. Each solution's body sits between nbgrader's solution delimiters, followed by the same raise
  with its hint, so `nbgrader generate_assignment` leaves minicastling's stub in the student version;
  the solution cell is an autograded answer, the check cell an autograder test worth POINTS[level], and
  every other cell read-only. Autograding runs each notebook in the smoke budget: seconds, no training.
"""

import ast
import copy
import json
import textwrap
from pathlib import Path

from ..check import EXERCISES
from ..extras.files import InputError, atomic_write

SOLUTION_TAG = "solution"
STUB_TAG = "exercise"
NOTICE = (
    "> **Student copy.** Each exercise's function below is a stub that raises `NotImplementedError` with a "
    "hint. Write it, run its cell, then the check cell under it: the checker tells you what differs from "
    "the reference. Everything else is the tutorial as published, without its outputs: run it top to bottom."
)


def source_of(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def is_solution(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def solution_function(source: str) -> ast.FunctionDef:
    """The one top-level function a solution cell defines, which must be a registered exercise."""
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if len(functions) != 1:
        raise ValueError(f"a solution cell must define exactly one function; this one defines "
                         f"{[f.name for f in functions]}:\n{source}")
    function = functions[0]
    if function.name not in EXERCISES:
        raise ValueError(f"solution cell defines {function.name!r}, which has no checker in minicastling.check "
                         f"(known: {sorted(EXERCISES)})")
    if ast.get_docstring(function) is None:
        raise ValueError(f"solution {function.name!r} needs a docstring: the stub keeps it as the task's summary")
    return function


def stub(source: str) -> str:
    """The solution's imports, signature and docstring, then a NotImplementedError carrying the hint."""
    function = solution_function(source)
    kept = source.splitlines()[: function.body[0].end_lineno]  # imports, signature, docstring (the body's first statement)
    exercise = EXERCISES[function.name]
    hint = f"{exercise.label}: write {function.name}. Hint: {exercise.hint}"
    indent = " " * function.body[0].col_offset
    chunks = textwrap.wrap(hint, width=96 - len(indent))
    literals = [f"{indent}    {chunk + ' ' if i < len(chunks) - 1 else chunk!r}" for i, chunk in enumerate(chunks)]
    return "\n".join(kept + [f"{indent}raise NotImplementedError(", *literals, f"{indent})"])


def student_copy(notebook: dict) -> dict:
    """A copy without outputs, a notice on top, and every solution cell replaced by its stub."""
    copy_ = copy.deepcopy(notebook)
    for cell in copy_["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
            cell.get("metadata", {}).pop("execution", None)
        if is_solution(cell):
            cell["source"] = stub(source_of(cell))
            tags = cell["metadata"]["tags"]
            cell["metadata"]["tags"] = [STUB_TAG if tag == SOLUTION_TAG else tag for tag in tags]
    notice = {"cell_type": "markdown", "id": "student-copy", "metadata": {}, "source": NOTICE}
    copy_["cells"].insert(0, notice)
    return copy_


POINTS = {"warm-up": 1, "core": 2, "stretch": 3}  # an exercise's points in nbgrader: its level's effort
NBGRADER_CONFIG = """\
# An nbgrader course written by `python -m minicastling assignments --format nbgrader`.
import os

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "minicastling"
# the solution's body is replaced by this line; minicastling's raise with the exercise's hint follows it
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE (replace this line; the raise below goes once your function returns)"}
c.ExecutePreprocessor.timeout = 600  # seconds per cell
# autograding runs every notebook in the smoke budget, so a class's submissions train no full model
os.environ.setdefault("MINICASTLING_BUDGET", "smoke")
"""


def _nbgrader(cell: dict, grade_id: str, *, solution=False, grade=False, points=None) -> None:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = points
    cell.setdefault("metadata", {})["nbgrader"] = meta


def delimited(source: str) -> str:
    """A solution cell for nbgrader: the body between the solution delimiters, then the stub's raise."""
    function = solution_function(source)
    lines = source.splitlines()
    head, body = lines[: function.body[0].end_lineno], lines[function.body[0].end_lineno: function.end_lineno]
    indent = " " * function.body[0].col_offset
    raise_lines = stub(source).splitlines()[len(head):]  # the NotImplementedError carrying the hint
    return "\n".join(head + [f"{indent}### BEGIN SOLUTION", *body, f"{indent}### END SOLUTION"] + raise_lines
                     + lines[function.end_lineno:])


def nbgrader_source(notebook: dict) -> dict:
    """The tutorial as an nbgrader source assignment: answers, tests with points, everything else read-only."""
    copy_ = student_copy(notebook)  # outputs cleared, the notice on top; the solutions are put back below
    originals = [None] + notebook["cells"]  # aligned with copy_["cells"], whose first cell is the notice
    names = {}
    for index, (cell, original) in enumerate(zip(copy_["cells"], originals)):
        if original is not None and is_solution(original):
            name = solution_function(source_of(original)).name
            cell["source"] = delimited(source_of(original))
            _nbgrader(cell, name, solution=True)
            names[index + 1] = name
        elif index in names:
            name = names[index]
            if source_of(cell).strip() != f"check.{name}({name})":
                raise ValueError(f"the cell under the solution {name!r} must be its check, check.{name}({name})")
            _nbgrader(cell, f"{name}_check", grade=True, points=POINTS[EXERCISES[name].level])
        else:
            _nbgrader(cell, f"cell_{index:02d}")
    return copy_


def read_notebook(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a readable notebook ({error}); restore it from the repository") from None


def tutorial_notebooks(tutorials: Path, out: Path) -> list:
    """The tutorials NN_*.ipynb in `tutorials`, after checking that writing into `out` loses none of them."""
    notebooks = sorted(Path(tutorials).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise InputError(
            f"no tutorials (NN_name.ipynb) in {tutorials}; run this in a clone of minicastling, or pass "
            "--tutorials PATH to the folder that holds them"
        )
    if Path(out).resolve() == Path(tutorials).resolve():
        raise InputError("--out must differ from the tutorials folder: the student copies would overwrite the solutions")
    return notebooks


def write_notebook(notebook: dict, target: Path) -> Path:
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    atomic_write(target, lambda f: f.write(text.encode("utf-8")))
    return target


def write_assignments(tutorials: Path, out: Path) -> list:
    """Write a student copy of every tutorials/NN_*.ipynb into out; returns the paths written."""
    return [write_notebook(student_copy(read_notebook(path)), Path(out) / path.name)
            for path in tutorial_notebooks(tutorials, out)]


def assignment_name(path: Path) -> str:
    """An nbgrader assignment's name for a tutorial: 04_residual_branches_and_castling.ipynb → tutorial04."""
    return f"tutorial{path.name[:2]}"


def write_nbgrader_course(tutorials: Path, out: Path) -> list:
    """An nbgrader course in out: nbgrader_config.py and source/tutorialNN/NN_name.ipynb per tutorial."""
    out = Path(out)
    written = [write_notebook(nbgrader_source(read_notebook(path)), out / "source" / assignment_name(path) / path.name)
               for path in tutorial_notebooks(tutorials, out)]
    atomic_write(out / "nbgrader_config.py", lambda f: f.write(NBGRADER_CONFIG.encode("utf-8")))
    return [out / "nbgrader_config.py", *written]
