"""A study's record: the design written once before the first run, amendments appended, every run timed and dated.

DESIGN: Evidence. A record proves its own history. `open_record` writes the design with its UTC time and
the code it was declared with before any run; a later change to the design is refused unless it comes
with a reason, and is then appended as an amendment (time, code, what changed, why, what had been seen),
never written over the design. Each finished run is appended with its start and end time and the code
it was trained with, the file rewritten atomically each time, so an interrupted study loses no finished
run. Used by study.py; tutorial 07 reads the records.
"""

import copy
import datetime
import hashlib
import subprocess
from pathlib import Path

from ..extras.files import InputError, save_json, shown

PACKAGE = Path(__file__).resolve().parents[1]  # minicastling/
NOT_TRAINING = ("lab", "course", "check", "results", "__main__.py")  # what no run's numbers depend on


def now() -> str:
    """The UTC time to the second, ISO 8601: 2026-12-07T14:03:09Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def training_sources() -> list:
    """The package's files that a run's numbers depend on: the method, the fast paths, data and training."""
    return sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".cpp") and "__pycache__" not in p.parts
                  and p.relative_to(PACKAGE).parts[0] not in NOT_TRAINING)


def code_identity() -> dict:
    """What code a run or a design comes from: the git commit (None outside a clone), whether the training
    sources differ from it, and a digest of those sources that does not need git."""
    digest = hashlib.sha1()
    for path in training_sources():
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
    identity = {"commit": None, "training_code_changed_since_commit": None, "training_code_digest": digest.hexdigest()[:12]}
    try:
        top = PACKAGE.parent
        commit = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        changed = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "--", *map(str, training_sources())],
                                 capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):  # no git, or not a clone (an installed copy)
        return identity
    identity.update(commit=commit.stdout.strip(), training_code_changed_since_commit=bool(changed.stdout.strip()))
    return identity


def flat(design: dict, prefix: str = "") -> dict:
    """{"seeds.primary": 10, …}: a design's leaves by dotted name, so two designs can be compared key by key."""
    leaves = {}
    for key, value in design.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(flat(value, name + "."))
        else:
            leaves[name] = value
    return leaves


def differences(recorded: dict, declared: dict) -> dict:
    """{key: [recorded, declared]} for every leaf where the two designs differ."""
    a, b = flat(recorded), flat(declared)
    return {key: [a.get(key), b.get(key)] for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}


def apply(design: dict, changes: dict) -> dict:
    """The design with an amendment's changes ({dotted key: [old, new]}) made."""
    design = copy.deepcopy(design)
    for key, (_, new) in changes.items():
        *path, last = key.split(".")
        place = design
        for part in path:
            place = place.setdefault(part, {})
        if new is None:
            place.pop(last, None)
        else:
            place[last] = new
    return design


class Record:
    """One study's results file: design, amendments, history, runs, analysis."""

    def __init__(self, path: Path, content: dict):
        self.path, self.content = Path(path), content

    @property
    def runs(self) -> list:
        return self.content["runs"]

    def design(self) -> dict:
        """The design in force: as declared, with every amendment applied in order."""
        design = {k: v for k, v in self.content["design"].items() if k not in ("declared_at", "code")}
        for amendment in self.content["amendments"]:
            design = apply(design, amendment["changes"])
        return design

    def amend(self, changes: dict, why: str) -> None:
        seen = {}
        for run in self.runs:
            seen[f"{run['dataset']}: {run['arm']}"] = seen.get(f"{run['dataset']}: {run['arm']}", 0) + 1
        self.content["amendments"].append({
            "at": now(), "code": code_identity(), "changes": changes, "why": why,
            "seen_by_then": {"finished_runs": len(self.runs), "runs_by_arm": seen,
                             "analysis": "computed" if self.content.get("analysis") else "none yet"}})

    def add_run(self, run: dict) -> None:
        """Append a finished run, replacing an earlier record of the same (dataset, arm, seed) if there is one."""
        key = (run["dataset"], run["arm"], run["seed"])
        self.content["runs"] = [r for r in self.runs if (r["dataset"], r["arm"], r["seed"]) != key] + [run]

    def save(self) -> None:
        save_json(self.path, self.content)


def open_record(path, declared: dict, history: list | None = None, amend: str | None = None) -> Record:
    """The record at `path`, or a new one whose design is `declared`, written before any run.

    An existing record whose design (with its amendments) differs from `declared` is refused with what
    differs, unless `amend` gives the reason: the change is then appended as an amendment.
    """
    import json

    path = Path(path)
    if not path.exists():
        record = Record(path, {"design": {**declared, "declared_at": now(), "code": code_identity()},
                               "amendments": [], "history": history or [], "runs": []})
        record.save()
        return record
    try:
        content = json.loads(path.read_text())
        content["design"], content["amendments"], content["runs"]  # noqa: B018  (the keys a record has)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{shown(path)} is not a study record ({type(error).__name__}: {error}); it is kept as it "
                         "is: name another --results, or move it away to start a new record") from None
    record = Record(path, content)
    changes = differences(record.design(), declared)
    if changes and not amend:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:4])
        more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
        raise InputError(f"the design recorded in {shown(path)} differs from the one this command declares: {listed}"
                         f"{more}. A design is written once; to change it, say why with --amend \"...\" (the change is "
                         "appended to the record), or name another --results for a new study")
    if changes:
        record.amend(changes, amend)
        record.save()
    return record
