"""Writing files so that nothing is lost: atomic writes, and paths as a person reads them."""

import json
import os
import tempfile
from pathlib import Path


class InputError(ValueError):
    """A data file, an array or a checkpoint that cannot be used as it is; the message says what to do.

    The command line answers it with that one sentence and exit status 1, without a traceback.
    """


def atomic_write(path: Path, write) -> None:
    """write(file) into a temporary file beside path, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False) as tmp:
        try:
            write(tmp)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def save_json(path: Path, value) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=2).encode()))


def committed_result(name: str) -> dict:
    """A results file shipped with the package (minicastling/results/NAME.json), e.g. "bench".

    Measured by `python -m minicastling bench` / `study` on the machine each file names; shipped so
    that tutorial 07 can read them in a clone, from a wheel and on Colab alike.
    """
    from importlib import resources

    resource = resources.files("minicastling").joinpath("results", f"{name}.json")
    if not resource.is_file():
        available = sorted(p.name[:-5] for p in resources.files("minicastling").joinpath("results").iterdir()
                           if p.name.endswith(".json"))
        raise FileNotFoundError(f"no committed result {name!r}; the package ships {available}")
    return json.loads(resource.read_text())


def shown(path: Path) -> str:
    """A path as a person reads it: relative to the working directory when near, else with ~."""
    relative = os.path.relpath(path)
    if not relative.startswith(os.path.join("..", "..")):
        return relative
    home = str(Path.home())
    return str(path).replace(home, "~", 1) if str(path).startswith(home) else str(path)
