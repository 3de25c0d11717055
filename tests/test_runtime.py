"""The allocator setting the command line makes: freed tensors are reused, not page-faulted in again."""

import subprocess
import sys

import pytest

import minicastling.extras.runtime as runtime
from minicastling.__main__ import main

# two tensors of about 4 MiB made, written and freed, a little larger each round, as a model's
# activations are when the batch or the token count changes: glibc's default serves each new
# largest request with fresh pages from the OS, while a kept heap needs only the few pages it grew by
CHURN = """
import resource, sys, torch
import minicastling.extras.runtime as runtime
print(runtime.keep_freed_memory() if sys.argv[1] == "keep" else "default")
faults = []
for step in range(21):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [torch.ones((1 << 20) + step * (1 << 12)) for _ in range(2)]
    del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[10])  # the median round
"""


def faults_per_round(mode: str) -> tuple[str, float]:
    run = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    lines = run.stdout.split()
    return lines[0], float(lines[1])


def test_keep_freed_memory_stops_the_page_faults_of_freed_tensors():
    applied, kept = faults_per_round("keep")
    if applied != "True":
        pytest.skip("keep_freed_memory is for glibc's malloc; this C library is another (nothing changes)")
    _, default = faults_per_round("default")
    pages = 2 * (4 << 20) // 4096
    assert default > pages / 2, (f"glibc's default was expected to fault the buffers in again: "
                                 f"{default:.0f} faults in a median round")
    assert kept < pages / 20, (f"{kept:.0f} page faults in a median round with freed memory kept, "
                               f"against {default:.0f} by default")


def test_describe_and_setup_build_nothing(monkeypatch, capsys):
    import torch

    from minicastling.course import setup
    from minicastling.fast import cpu_kernel

    def no_build():
        raise AssertionError("the CPU kernel was built by a call that does not need it")

    monkeypatch.setattr(cpu_kernel, "build", no_build)
    line = runtime.describe(torch.device("cpu"))
    assert line.startswith("minicastling ") and "budget smoke" in line
    setup()
    assert capsys.readouterr().out.strip() == line


def test_the_command_line_keeps_freed_memory_before_it_runs(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("minicastling.__main__.keep_freed_memory", lambda: calls.append("kept"))
    monkeypatch.setattr("minicastling.__main__.doctor", lambda args: calls.append("ran") or 0)
    assert main(["doctor"]) == 0
    assert calls == ["kept", "ran"]


def test_keep_freed_memory_changes_nothing_off_linux(monkeypatch):
    monkeypatch.setattr(runtime.platform, "system", lambda: "Darwin")
    assert runtime.keep_freed_memory() is False


class FakeLibc:
    """A C library whose mallopt takes an mmap threshold up to `most`, recording each call."""

    def __init__(self, most: int, glibc: bool = True):
        self.most, self.calls = most, []
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return int(parameter != runtime.M_MMAP_THRESHOLD or value <= self.most)


def on_linux_with(monkeypatch, libc: FakeLibc) -> FakeLibc:
    """keep_freed_memory will see Linux and `libc` as its C library."""
    monkeypatch.setattr(runtime.platform, "system", lambda: "Linux")
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: libc)
    return libc


@pytest.mark.parametrize("most, thresholds", [(1 << 40, [1 << 30]), (32 << 20, [1 << 30, 32 << 20])])
def test_keep_freed_memory_falls_back_to_the_threshold_a_glibc_takes(monkeypatch, most, thresholds):
    libc = on_linux_with(monkeypatch, FakeLibc(most))
    assert runtime.keep_freed_memory() is True
    assert [v for p, v in libc.calls if p == runtime.M_MMAP_THRESHOLD] == thresholds
    assert (runtime.M_TRIM_THRESHOLD, runtime.TRIM_THRESHOLD) in libc.calls


def test_keep_freed_memory_leaves_another_c_library_alone(monkeypatch):
    libc = on_linux_with(monkeypatch, FakeLibc(1 << 40, glibc=False))
    assert runtime.keep_freed_memory() is False
    assert libc.calls == []


def test_import_and_setup_build_nothing_on_an_empty_extensions_cache(tmp_path):
    """A student's first cell and first forward pass: seconds, no compiler, nothing written to torch's extensions cache."""
    env = {**__import__("os").environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    code = ("import time; started = time.perf_counter()\n"
            "import torch\nimport minicastling as mc\nfrom minicastling.course import setup\nsetup()\n"
            "mc.CastlingAttention(64, 2)(torch.randn(2, 9, 64)).sum().backward()  # a forward builds nothing either\n"
            "print(f'{time.perf_counter() - started:.1f}')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert not (tmp_path / "extensions").exists() or not any((tmp_path / "extensions").iterdir())
    assert "compiling the CPU kernel" not in done.stderr
    assert float(done.stdout.split()[-1]) < 30, done.stdout


def test_import_loads_the_method_only():
    """`import minicastling` brings in neither matplotlib nor scipy, nor the lab or the course."""
    code = ("import sys\nimport minicastling\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('matplotlib', 'scipy'))}"
            " | {m for m in sys.modules if m.startswith(('minicastling.lab', 'minicastling.course', 'minicastling.check'))}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_every_attention_kind_builds_right_after_import():
    kinds = ["castling", "linear-angular", "softmax", "relu", "elu", "flatten", "performer"]
    code = ("import minicastling as mc\n"  # nothing else imported first: the registry is whole already
            f"print(sorted(type(mc.build_attention(kind, 64, 4)).__name__ for kind in {kinds!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "FeatureMapAttention" in done.stdout and "CastlingAttention" in done.stdout
