import subprocess
import sys

import pytest

from statemix_sk import __version__
from statemix_sk.cli import main


def test_demo_prints_the_filter_and_observation_only_errors(capsys):
    assert (
        main(["demo", "--n-sequences", "2", "--n-particles", "50", "--n-steps", "20"])
        == 0
    )
    out = capsys.readouterr().out
    assert "True-model bootstrap filter, N = 50: MSE" in out
    assert "Observation-only estimate" in out
    assert out.count("  series ") == 2


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
