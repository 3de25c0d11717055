"""Student copies of the tutorials: every solution replaced by a stub that raises with a hint.

In a tutorial, the cell under each "### Exercise" heading that holds the worked solution is tagged
`solution`; it defines one function, whose name is the exercise's name in `minicastling.check`.
A student copy keeps every other cell, clears all outputs, and turns each solution into the same
signature and docstring followed by `raise NotImplementedError(<the checker's hint>)`, so the check
cell beneath it says "not written yet" and gives the hint until the student writes the function.
`python -m minicastling assignments --out DIR` writes them.
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


def read_notebook(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a readable notebook ({error}); restore it from the repository") from None


def write_assignments(tutorials: Path, out: Path) -> list:
    """Write a student copy of every tutorials/NN_*.ipynb into out; returns the paths written."""
    tutorials, out = Path(tutorials), Path(out)
    notebooks = sorted(tutorials.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise InputError(
            f"no tutorials (NN_name.ipynb) in {tutorials}; run this in a clone of minicastling, or pass "
            "--tutorials PATH to the folder that holds them"
        )
    if out.resolve() == tutorials.resolve():
        raise InputError("--out must differ from the tutorials folder: the student copies would overwrite the solutions")
    written = []
    for path in notebooks:
        target = out / path.name
        text = json.dumps(student_copy(read_notebook(path)), indent=1, ensure_ascii=False) + "\n"
        atomic_write(target, lambda f, text=text: f.write(text.encode("utf-8")))
        written.append(target)
    return written
