"""The comparison of the experiments: runs, summary, tables, command line."""

import json

import numpy as np
import pytest

from statemix_sk.cli import main
from statemix_sk.experiments import (
    EXPERIMENTS,
    estimate_seconds,
    format_tables,
    run_experiment,
    run_one,
    summarize,
)

TINY = {
    "runs": 2,
    "n_particles": (10, 20),
    "n_components": (1,),
    "n_train": 2,
    "n_test": 2,
    "n_steps": 12,
    "max_iter": 1,
    "train_particles": 10,
    "floor_particles": 200,
}


@pytest.fixture(scope="module")
def lorenz():
    return run_experiment("lorenz96", seed=3, **TINY)


def test_every_method_is_run_at_every_n(lorenz):
    assert len(lorenz["runs"]) == 2
    for run in lorenz["runs"]:
        methods = [(row["method"], row["n_particles"]) for row in run["rows"]]
        assert methods[0] == ("observation-only", None)
        for n in (10, 20):
            for method in (
                "bootstrap",
                "auxiliary",
                "improved auxiliary",
                "StateMixFilter",
            ):
                assert (method, n) in methods
        assert methods[-1] == ("floor (locally optimal)", 200)
        for row in run["rows"]:
            assert np.isfinite(row["mse"]) and row["mse"] > 0
    # The first run keeps one trajectory: truth, observations, every estimate.
    trajectory = lorenz["runs"][0]["trajectory"]
    assert np.shape(trajectory["truth"]) == (12, 3)
    assert "StateMixFilter (N = 20)" in trajectory
    assert "trajectory" not in lorenz["runs"][1]
    json.dumps(lorenz)  # the results are JSON as they are


def test_summary_is_computed_from_the_runs(lorenz):
    summary = summarize(lorenz)
    assert summary == lorenz["summary"]
    by_key = {(r["block"], r["method"]): r for r in summary}
    for n in (10, 20):
        mse = {
            method: [
                row["mse"]
                for run in lorenz["runs"]
                for row in run["rows"]
                if row["method"] == method and row["n_particles"] in (n, None, 200)
            ]
            for method in ("improved auxiliary", "bootstrap", "floor (locally optimal)")
        }
        iapf, boot = np.mean(mse["improved auxiliary"]), np.mean(mse["bootstrap"])
        floor = np.mean(mse["floor (locally optimal)"])
        row = by_key[n, "StateMixFilter"]
        assert row["improvement_over_iapf"] == pytest.approx(1 - row["mse"] / iapf)
        assert row["improvement_over_bootstrap"] == pytest.approx(1 - row["mse"] / boot)
        assert row["headroom_closed"] == pytest.approx(
            (iapf - row["mse"]) / (iapf - floor)
        )
        assert by_key[n, "improved auxiliary"]["headroom_closed"] == pytest.approx(0)
        assert by_key[n, "floor (locally optimal)"]["headroom_closed"] == pytest.approx(
            1
        )
        values = [
            r["mse"]
            for run in lorenz["runs"]
            for r in run["rows"]
            if r["method"] == "StateMixFilter" and r["n_particles"] == n
        ]
        assert row["mse_standard_error"] == pytest.approx(
            np.std(values, ddof=1) / np.sqrt(2)
        )


def test_tables_have_a_block_per_n(lorenz):
    tables = format_tables(lorenz)
    assert "**N = 10**" in tables and "**N = 20**" in tables
    assert tables.count("| StateMixFilter | 1 |") == 2


def test_runs_do_not_depend_on_n_jobs():
    serial = run_experiment("linear-gaussian", seed=1, n_jobs=1, **TINY)
    parallel = run_experiment("linear-gaussian", seed=1, n_jobs=2, **TINY)
    for one, other in zip(serial["runs"], parallel["runs"], strict=True):
        assert [row["mse"] for row in one["rows"]] == [
            row["mse"] for row in other["rows"]
        ]


def test_kuramoto_uses_circular_means_and_wrapped_errors():
    settings = {**TINY, "n_particles": [10], "n_components": [1], "runs": 1}
    settings["seed"] = 0
    run = run_one("kuramoto", np.random.SeedSequence(0), settings, keep_trajectory=True)
    methods = [row["method"] for row in run["rows"]]
    # The observation is not linear: the floor is the bootstrap filter.
    assert methods[-1] == "floor (bootstrap)"
    for row in run["rows"]:
        # Wrapped phase errors are at most pi in size.
        assert 0 < row["mse"] <= np.pi**2
    estimates = np.array(run["trajectory"]["bootstrap (N = 10)"])
    assert np.all(np.abs(estimates) <= np.pi)


def test_unknown_experiment_is_an_error():
    with pytest.raises(ValueError, match="lorenz96"):
        run_experiment("lorenz", runs=1)


def test_time_estimate_grows_with_the_work():
    settings = {**TINY, "n_particles": [100], "n_components": [3]}
    base = estimate_seconds("lorenz96", settings)
    assert base > 0
    assert estimate_seconds("lorenz96", {**settings, "runs": 4}) > base
    assert estimate_seconds("lorenz96", {**settings, "n_particles": [1000]}) > base
    assert estimate_seconds("lorenz96", settings, n_jobs=2) < base
    assert set(EXPERIMENTS) == {"lorenz96", "kuramoto", "linear-gaussian"}


def test_reproduce_command_writes_results(tmp_path, capsys):
    arguments = [
        "reproduce",
        "linear-gaussian",
        "--runs",
        "1",
        "--n-particles",
        "10",
        "--n-components",
        "1",
        "2",
        "--n-train",
        "2",
        "--n-test",
        "2",
        "--n-steps",
        "10",
        "--max-iter",
        "1",
        "--floor-particles",
        "100",
        "--n-jobs",
        "1",
        "--output",
        str(tmp_path),
    ]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "Estimated time" in out and "**N = 10**" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["n_components"] == [1, 2]
    assert (tmp_path / "results.md").read_text() in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in out
    else:
        assert (tmp_path / "mse.png").exists() and (
            tmp_path / "trajectory.png"
        ).exists()
