"""The promises the project makes in its README: the two commands, the tutorial map, notebooks whose committed
files hold their outputs and nothing of the machine that executed them."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("pip install")]


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "python -m minicastling" in main_job and tests.endswith("&& pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the last line of .ci/run must be the README's test command"


def test_every_tutorial_is_on_the_readme_map():
    notebooks = sorted(p.name for p in (ROOT / "tutorials").glob("*.ipynb"))
    assert len(notebooks) >= 4
    for name in notebooks:
        assert f"tutorials/{name}" in README, f"{name} is missing from the README's tutorial map"


def test_committed_notebooks_hold_no_local_paths_and_no_execution_timings():
    """A re-executed notebook's diff is its outputs: no timestamps of when each cell ran (execute with
    --ExecutePreprocessor.record_timing=False, as the README says) and no paths of the machine it ran on."""
    for path in sorted((ROOT / "tutorials").glob("*.ipynb")):
        text = path.read_text()
        for local in ("/work/", "/tmp/", "/home/", "/root/", "/Users/", "C:\\\\Users"):
            assert local not in text, f"{path.name} holds a local path ({local}) in a cell or an output"
        timed = [i for i, cell in enumerate(json.loads(text)["cells"]) if "execution" in cell.get("metadata", {})]
        assert not timed, (f"{path.name}: cells {timed[:5]} carry execution timestamps; execute with "
                           "--ExecutePreprocessor.record_timing=False")
