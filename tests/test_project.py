"""The promises the project makes in its README: the two commands, the tutorial map."""

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
