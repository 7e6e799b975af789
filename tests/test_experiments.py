"""The comparison of the experiments: runs, summary, tables, command line."""

import copy
import json

import numpy as np
import pytest

from statemix_sk import StateMixFilter
from statemix_sk.cli import main
from statemix_sk.experiments import (
    EXPERIMENTS,
    estimate_seconds,
    run_experiment,
    run_one,
)
from statemix_sk.known_model_filters import _KnownModelFilter
from statemix_sk.reporting import format_tables, plot_results, summarize

TINY = {
    "runs": 2,
    "n_particles": (10, 20),
    "n_components": (1,),
    "n_train": (2, 3),
    "n_test": 2,
    "n_steps": 12,
    "max_iter": 1,
    "train_particles": 10,
    "floor_particles": 200,
}
BASELINES = ("bootstrap", "auxiliary", "improved auxiliary")


@pytest.fixture(scope="module")
def lorenz():
    return run_experiment("lorenz96", seed=3, **TINY)


def test_every_method_is_run_at_every_n(lorenz):
    assert len(lorenz["runs"]) == 2
    assert lorenz["settings"]["n_train"] == [2, 3]
    assert lorenz["settings"]["max_iter"] == 1
    assert lorenz["training"]["max_iter"] == 1
    assert lorenz["training"]["early_stopping"] == "auto"
    for run in lorenz["runs"]:
        methods = [
            (row["method"], row["n_particles"], row["n_train"]) for row in run["rows"]
        ]
        assert methods[0] == ("observation-only", None, None)
        for n in (10, 20):
            for method in BASELINES:
                # Once per N, whatever the training sizes.
                assert methods.count((method, n, None)) == 1
            for n_train in (2, 3):
                assert methods.count(("StateMixFilter", n, n_train)) == 1
        assert methods[-1] == ("floor (locally optimal)", 200, None)
        for row in run["rows"]:
            assert np.isfinite(row["mse"]) and row["mse"] > 0
            learned = row["method"] == "StateMixFilter"
            assert (row["n_train"] is not None) == learned
            assert (row["n_iter"] == 1) if learned else row["n_iter"] is None
            assert (row["n_updates"] >= 1) if learned else row["n_updates"] is None
    # The first run keeps one trajectory: truth, observations, every estimate
    # (StateMixFilter's for the largest training size).
    trajectory = lorenz["runs"][0]["trajectory"]
    assert np.shape(trajectory["truth"]) == (12, 3)
    assert "StateMixFilter (S = 1, 3 series, N = 20)" in trajectory
    assert not any("2 series" in key for key in trajectory)
    assert "trajectory" not in lorenz["runs"][1]
    json.dumps(lorenz)  # the results are JSON as they are


def test_update_scheme_reaches_every_fit_and_the_results(monkeypatch):
    updates = []
    fit_learned = StateMixFilter.fit

    def record(self, Y, y=None):
        updates.append(self.update)
        return fit_learned(self, Y, y)

    monkeypatch.setattr(StateMixFilter, "fit", record)
    settings = {**TINY, "runs": 1, "n_particles": (10,)}
    results = run_experiment(
        "linear-gaussian", seed=0, n_jobs=1, update="alternating", **settings
    )
    assert updates and set(updates) == {"alternating"}
    assert results["settings"]["update"] == "alternating"
    assert results["training"]["update"] == "alternating"
    with pytest.raises(ValueError, match="update must be"):
        run_experiment("linear-gaussian", update="both", **settings)


def test_training_sets_are_nested_and_baselines_run_once_per_run(monkeypatch):
    fitted, baselines = [], []
    fit_learned, fit_known = StateMixFilter.fit, _KnownModelFilter.fit

    def record_learned(self, Y, y=None):
        fitted.append((np.array(Y), self.random_state, self.max_iter))
        return fit_learned(self, Y, y)

    def record_known(self, Y, y=None):
        baselines.append(type(self).__name__)
        return fit_known(self, Y, y)

    monkeypatch.setattr(StateMixFilter, "fit", record_learned)
    monkeypatch.setattr(_KnownModelFilter, "fit", record_known)
    settings = {**TINY, "runs": 1, "n_particles": (10,), "max_iter": None}
    settings["n_train"] = (3, 2, 3)  # unsorted and repeated: sizes 2 and 3
    run_experiment("linear-gaussian", seed=0, n_jobs=1, **settings)
    assert sorted(len(Y) for Y, _, _ in fitted) == [2, 3]
    (small, *_), (large, *_) = sorted(fitted, key=lambda fit: len(fit[0]))
    # The smaller training set is the first series of the larger one.
    np.testing.assert_array_equal(small, large[:2])
    assert len({seed for _, seed, _ in fitted}) == 1
    # max_iter=None leaves the estimator's own default.
    assert {max_iter for _, _, max_iter in fitted} == {StateMixFilter().max_iter}
    # Each baseline once for the run's N, not once per training size; the floor.
    assert sorted(baselines) == sorted(
        [
            "BootstrapFilter",
            "AuxiliaryFilter",
            "ImprovedAuxiliaryFilter",
            "LocallyOptimalFilter",
        ]
    )


def test_summary_is_computed_from_the_runs(lorenz):
    summary = summarize(lorenz)
    assert summary == lorenz["summary"]
    by_key = {(r["block"], r["method"], r["n_train"]): r for r in summary}
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
        # Largest training size first; baselines and the floor once per block.
        block = [(r["method"], r["n_train"]) for r in summary if r["block"] == n]
        assert block == [
            ("observation-only", None),
            *((method, None) for method in BASELINES),
            ("StateMixFilter", 3),
            ("StateMixFilter", 2),
            ("floor (locally optimal)", None),
        ]
        for n_train in (2, 3):
            row = by_key[n, "StateMixFilter", n_train]
            assert row["improvement_over_iapf"] == pytest.approx(1 - row["mse"] / iapf)
            assert row["improvement_over_bootstrap"] == pytest.approx(
                1 - row["mse"] / boot
            )
            assert row["headroom_closed"] == pytest.approx(
                (iapf - row["mse"]) / (iapf - floor)
            )
            rows = [
                r
                for run in lorenz["runs"]
                for r in run["rows"]
                if r["method"] == "StateMixFilter"
                and r["n_particles"] == n
                and r["n_train"] == n_train
            ]
            for field in ("mse", "log_likelihood"):
                values = [r[field] for r in rows]
                assert row[field] == pytest.approx(np.mean(values))
                assert row[f"{field}_standard_error"] == pytest.approx(
                    np.std(values, ddof=1) / np.sqrt(2)
                )
            assert row["n_iter"] == 1
            # Paired by run: the mean and standard error of the differences.
            for reference, name in (
                ("iapf", "improved auxiliary"),
                ("bootstrap", "bootstrap"),
            ):
                reference_mse = [
                    r["mse"]
                    for run in lorenz["runs"]
                    for r in run["rows"]
                    if r["method"] == name and r["n_particles"] == n
                ]
                differences = np.array([r["mse"] for r in rows]) - reference_mse
                assert row[f"mse_minus_{reference}"] == pytest.approx(
                    differences.mean()
                )
                assert row[f"mse_minus_{reference}_standard_error"] == pytest.approx(
                    np.std(differences, ddof=1) / np.sqrt(2)
                )
        # Observation-only has no N: it is not paired with a block's filters.
        assert by_key[n, "observation-only", None]["mse_minus_iapf"] is None
        assert by_key[n, "improved auxiliary", None]["headroom_closed"] == (
            pytest.approx(0)
        )
        assert by_key[n, "floor (locally optimal)", None][
            "headroom_closed"
        ] == pytest.approx(1)


def test_tables_have_a_block_per_n_and_label_the_training_sizes(lorenz):
    tables = format_tables(lorenz)
    assert tables.count("MSE minus IAPF's, paired by run") == 2
    assert tables.count("MSE minus the bootstrap filter's, paired by run") == 2
    assert "**N = 10**" in tables and "**N = 20**" in tables
    assert "trained on 3 and 2 series of 12 steps" in tables
    large = "| StateMixFilter (S = 1, 3 series) |"
    small = "| StateMixFilter (S = 1, 2 series; small-data case) |"
    assert tables.count(large) == 2 and tables.count(small) == 2
    assert tables.count("| bootstrap |") == 2
    for block in tables.split("**N = ")[1:]:
        assert block.index(large) < block.index(small)  # the headline first


def test_table_cells_read_correctly(lorenz):
    # Percentages that round to zero read "0%", and "-" in the headroom column
    # is explained under the table.
    results = copy.deepcopy(lorenz)
    for row in results["summary"]:
        row["improvement_over_bootstrap"] = -0.001
        if row["block"] == 10:
            row["headroom_closed"] = None
    tables = format_tables(results)
    assert "-0%" not in tables and "| 0% |" in tables
    first, second = tables.split("**N = 20**")
    assert "no headroom to close" in first and "no headroom to close" not in second


def test_results_from_before_the_training_sizes_still_format(lorenz):
    # Results written when n_train was one int and rows had no n_train.
    old = copy.deepcopy(lorenz)
    old["settings"]["n_train"] = 3
    for run in old["runs"]:
        run["rows"] = [row for row in run["rows"] if row["n_train"] in (None, 3)]
        for row in run["rows"]:
            del row["n_train"], row["n_iter"], row["n_updates"]
    old["summary"] = summarize(old)
    tables = format_tables(old)
    assert tables.count("| StateMixFilter (S = 1) |") == 2
    assert "small-data case" not in tables


def test_plot_results_draws_the_learning_curve(lorenz, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    files = plot_results(lorenz, tmp_path)
    names = {path.name for path in files}
    assert names == {"trajectory.png", "mse.png", "learning_curve.png"}
    assert (tmp_path / "learning_curve.png").stat().st_size > 0


def test_runs_do_not_depend_on_n_jobs():
    settings = {**TINY, "n_particles": (10,), "n_train": 2}
    serial = run_experiment("linear-gaussian", seed=1, n_jobs=1, **settings)
    parallel = run_experiment("linear-gaussian", seed=1, n_jobs=2, **settings)
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
    settings = {
        **TINY,
        "n_particles": [100],
        "n_components": [3],
        "n_steps": 100,
        "n_train": [5],
        "max_iter": None,
    }
    base = estimate_seconds("lorenz96", settings)
    assert base > 0
    assert estimate_seconds("lorenz96", {**settings, "runs": 4}) > base
    assert estimate_seconds("lorenz96", {**settings, "n_particles": [1000]}) > base
    assert estimate_seconds("lorenz96", settings, n_jobs=2) < base
    assert estimate_seconds("lorenz96", {**settings, "max_iter": 1}) < base
    # The fits add up over the training sizes and grow with the series.
    sizes = {
        n_train: estimate_seconds("lorenz96", {**settings, "n_train": n_train})
        for n_train in (5, 20, 50, (5, 20, 50))
    }
    assert sizes[5] < sizes[20] < sizes[50] < sizes[5, 20, 50]
    filtering = estimate_seconds("lorenz96", {**settings, "n_components": []})
    assert sizes[5, 20, 50] - filtering == pytest.approx(
        sum(sizes[n] - filtering for n in (5, 20, 50)), rel=0.01
    )
    # One fit on 50 Lorenz 96 series of 100 steps with N = 100 (two runs): a few
    # minutes.
    assert 60 < (sizes[50] - filtering) / 2 < 600
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
        "3",
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
    assert "2 training sizes (2, 3 series" in out and "at most 1 epoch," in out
    assert "1 run, each" in out and "1 job," in out and "(1 run;" in out
    assert f"Results go to {tmp_path.resolve()}/." in out
    # The default verbose=1: a line per fit, as it ends.
    assert "linear-gaussian: S = 2, 3 training series:" in out
    assert "StateMixFilter (S = 2, 2 series; small-data case)" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["n_components"] == [1, 2]
    assert results["settings"]["n_train"] == [2, 3]
    assert (tmp_path / "results.md").read_text() in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in out
    else:
        for name in ("mse.png", "trajectory.png", "learning_curve.png"):
            assert (tmp_path / name).exists()


def test_filter_passes_average_passes_with_their_own_seeds():
    settings = {**TINY, "n_particles": [10], "n_train": 2, "runs": 1, "seed": 0}
    one = run_one("kuramoto", np.random.SeedSequence(4), settings)
    settings["filter_passes"] = 3
    three = run_one("kuramoto", np.random.SeedSequence(4), settings)
    for single, averaged in zip(one["rows"], three["rows"], strict=True):
        assert single["method"] == averaged["method"]
        if single["n_particles"] in (None, settings["floor_particles"]):
            # Observation-only has no filter; the floor filters once.
            assert averaged["mse"] == single["mse"]
            assert "mse_by_pass" not in averaged
            continue
        passes = averaged["mse_by_pass"]
        # The first pass is the filter's own (one-pass) run; the others differ
        # from it, and the row's MSE is their mean (squared errors averaged).
        assert passes[0] == single["mse"]
        assert len(set(passes)) == 3
        assert averaged["mse"] == pytest.approx(np.mean(passes), rel=1e-12)
        assert averaged["n_iter"] == single["n_iter"]
