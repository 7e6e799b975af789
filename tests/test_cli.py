import subprocess
import sys

import pytest

from statemix_sk import __version__
from statemix_sk.cli import main


def test_demo_fits_and_prints_every_method(capsys):
    arguments = [
        "demo",
        "--n-steps",
        "15",
        "--max-iter",
        "2",
        "--n-train",
        "2",
        "--n-test",
        "2",
        "--n-particles",
        "20",
        "--verbose",
        "0",
    ]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    for row in (
        "StateMixFilter (learned, S = 3)",
        "bootstrap filter (true model)",
        "random-walk Kalman filter",
        "observation-only",
    ):
        assert row in out
    assert "fit in" in out


def test_bad_arguments_exit_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--n-particles", "0"])
    assert info.value.code == 2
    assert "n-particles" in capsys.readouterr().err


def test_module_entry_point_reports_the_version():
    completed = subprocess.run(
        [sys.executable, "-m", "statemix_sk", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == __version__
