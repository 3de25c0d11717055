"""The nbgrader course, run through the real tool: generate every assignment, then autograde three
submissions of tutorial 02 and read their scores from nbgrader's gradebook."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minicastling import check
from minicastling.__main__ import main
from minicastling.course.assignments import POINTS, is_solution, read_notebook, solution_function, source_of

pytest.importorskip("nbgrader")  # in the test extra, so CI runs these; a bare install skips them saying so
ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = "02_angular_kernels.ipynb"
WRONG_AGREEMENT = ("def hyperplane_agreement(q, k, normals):\n"  # a product of the sides, not their agreement
                   "    a, b = torch.sign(q @ normals.T), torch.sign(k @ normals.T)\n"
                   "    return a @ b.transpose(-2, -1) / len(normals)")


def nbgrader(*arguments, course: Path) -> subprocess.CompletedProcess:
    scripts = Path(sys.executable).parent  # nbgrader runs `alembic` and a kernel from this environment by name
    command = [str(scripts / "nbgrader"), *arguments]
    env = {**os.environ, "PATH": os.pathsep.join([str(scripts), os.environ.get("PATH", "")])}
    done = subprocess.run(command, cwd=course, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def solutions_of(notebook: dict) -> dict:
    return {solution_function(source_of(c)).name: source_of(c) for c in notebook["cells"] if is_solution(c)}


def submit(course: Path, student: str, answers: dict) -> None:
    """The released notebook with the given functions written in place of their stubs, as a student hands it in."""
    released = read_notebook(course / "release" / "tutorial02" / TUTORIAL)
    for cell in released["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution") and grade_id in answers:
            cell["source"] = answers[grade_id]
    target = course / "submitted" / student / "tutorial02" / TUTORIAL
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(released, indent=1))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    folder = tmp_path_factory.mktemp("course")
    assert main(["assignments", "--format", "nbgrader", "--out", str(folder)]) == 0
    nbgrader("generate_assignment", "tutorial*", "--force", course=folder)  # every tutorial, as the guide says
    solutions = solutions_of(read_notebook(ROOT / "tutorials" / TUTORIAL))
    submit(folder, "solutions", solutions)
    submit(folder, "untouched", {})
    submit(folder, "one-mistake", {**solutions, "hyperplane_agreement": WRONG_AGREEMENT})
    started = time.perf_counter()
    nbgrader("autograde", "tutorial02", "--force", course=folder)
    seconds = (time.perf_counter() - started) / 3
    print(f"nbgrader autograde: {seconds:.1f} s per submission of tutorial 02 (smoke budget)")
    nbgrader("export", course=folder)  # the guide's last step: grades.csv
    return folder, seconds


def scores(course: Path, student: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = TUTORIAL.removesuffix(".ipynb")
        return {e.name: gradebook.find_grade(f"{e.name}_check", notebook, "tutorial02", student).score
                for e in check.for_tutorial("02")}


def test_every_tutorial_becomes_an_assignment_that_keeps_minicastlings_stubs(course):
    folder, _ = course
    for source in sorted((folder / "source").iterdir()):
        released = read_notebook(next((folder / "release" / source.name).glob("*.ipynb")))
        stubs = [source_of(c) for c in released["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
        tests = [c["metadata"]["nbgrader"] for c in released["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
        exercises = check.for_tutorial(source.name[-2:])
        assert len(stubs) == len(tests) == len(exercises) >= 3
        for stub, exercise in zip(stubs, exercises):
            assert "### BEGIN SOLUTION" not in stub and f"Hint: {exercise.hint.split()[0]}" in stub
            assert "raise NotImplementedError(\n" in stub  # minicastling's stub with its hint, not a bare one
        assert [t["points"] for t in tests] == [POINTS[e.level] for e in exercises]
        locked = [c for c in released["cells"] if c["metadata"]["nbgrader"]["locked"]]
        assert len(locked) == len(released["cells"]) - len(stubs)  # every other cell is read-only


def test_the_solutions_score_every_point(course):
    assert scores(course[0], "solutions") == {e.name: POINTS[e.level] for e in check.for_tutorial("02")}


def test_an_untouched_copy_scores_nothing(course):
    assert scores(course[0], "untouched") == {e.name: 0 for e in check.for_tutorial("02")}


def test_one_mistake_loses_exactly_that_exercises_points(course):
    expected = {e.name: POINTS[e.level] for e in check.for_tutorial("02")}
    expected["hyperplane_agreement"] = 0
    assert scores(course[0], "one-mistake") == expected


def test_the_gradebook_exports_every_submission(course):
    import csv

    rows = list(csv.DictReader((course[0] / "grades.csv").open()))
    graded = {row["student_id"]: float(row["score"]) for row in rows if row["assignment"] == "tutorial02"}
    full = sum(POINTS[e.level] for e in check.for_tutorial("02"))
    assert graded == {"solutions": full, "untouched": 0.0, "one-mistake": full - 2}


def test_autograding_runs_in_the_smoke_budget_in_seconds(course):
    _, seconds = course
    assert seconds < 120, f"{seconds:.0f} s per submission: the smoke budget should make it seconds"
    config = (course[0] / "nbgrader_config.py").read_text()
    assert 'os.environ.setdefault("MINICASTLING_BUDGET", "smoke")' in config
    assert shutil.which("nbgrader") or Path(sys.executable).with_name("nbgrader").exists()
