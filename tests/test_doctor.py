"""`doctor()` and `python -m minicastling doctor`: the environment, in a few lines."""

import numpy as np
import pytest

import minicastling
from minicastling.course import doctor
from minicastling.__main__ import main


def test_doctor_reports_versions_device_budget_and_an_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINICASTLING_DATA", str(tmp_path))
    monkeypatch.setenv("MINICASTLING_BUDGET", "cpu")
    text = doctor()
    assert capsys.readouterr().out.strip() == text
    for expected in (f"minicastling     {minicastling.__version__}", "torch ", "device (auto)", "cuda ",
                     "budget           cpu (from $MINICASTLING_BUDGET=cpu)", str(tmp_path), "not downloaded",
                     "precision (auto) fp32", "fashion-mnist", "gpu preset step batch 256: about"):
        assert expected in text, expected


@pytest.mark.parametrize("present, words", [("cifar10.npz", "cached as cifar10.npz"),
                                             ("cifar-10-python.tar.gz", "archive present")])
def test_doctor_reports_the_cache_state(present, words, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINICASTLING_DATA", str(tmp_path))
    np.savez(tmp_path / "data.npz", x=np.zeros(3))
    (tmp_path / "data.npz").rename(tmp_path / present)
    assert main(["doctor"]) == 0
    assert words in capsys.readouterr().out


def test_doctor_reports_a_bad_budget_instead_of_failing(monkeypatch):
    monkeypatch.setenv("MINICASTLING_BUDGET", "huge")
    assert "budget           INVALID" in doctor()
