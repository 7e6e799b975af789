import argparse
import subprocess
import sys

import pytest

from statemix_sk import __version__
from statemix_sk.cli import build_parser, main


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


def _reproduce_parser():
    parser = build_parser()
    (commands,) = (
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return commands.choices["reproduce"]


def test_reproduce_defaults_to_the_learning_curve():
    args = build_parser().parse_args(["reproduce", "lorenz96"])
    assert args.n_train == [5, 20, 50]
    assert args.max_iter is None  # the estimator's own default
    args = build_parser().parse_args(
        ["reproduce", "kuramoto", "--n-train", "5", "50", "--max-iter", "30"]
    )
    assert args.n_train == [5, 50] and args.max_iter == 30
    assert args.update is None  # the estimator's own default, joint
    args = build_parser().parse_args(
        ["reproduce", "kuramoto", "--update", "alternating"]
    )
    assert args.update == "alternating"


def test_reproduce_help_shows_every_default():
    reproduce = _reproduce_parser()
    text = " ".join(reproduce.format_help().split())
    text = text[text.index("positional arguments:") :]  # after the usage
    for action in reproduce._actions:
        if not action.option_strings or action.dest == "help":
            continue  # the experiment is a required choice
        start = text.index(f"{action.option_strings[0]} {action.metavar or ''}")
        entry = text[start:].split(" --", 1)[0]
        assert f"(default: {action.default})" in entry, entry
    assert "(default: [5, 20, 50])" in text and "(default: None)" in text
