"""The paper's comparison, on our experiment definitions: one function per step.

``statemix-sk reproduce`` (:mod:`statemix_sk.cli`) and the scripts in ``examples/``
call :func:`run_experiment`. Each *run* draws one model with a training set and
held-out test series from it (:mod:`statemix_sk.datasets`); StateMixFilter is
fitted on the training observations only; then every method filters the same
test series with the same number of particles ``N``, all from the model's
initial distribution:

- observation-only: the state read off each observation alone (``pinv(H) y``, or
  the phase ``atan2(sin, cos)`` for Kuramoto);
- the bootstrap, auxiliary and improved auxiliary particle filters with the true
  model;
- StateMixFilter for each number of components ``S`` (trained once per ``S`` with
  ``train_particles`` particles, then filtering with each ``N``);
- the floor, the best any filter can reach: the locally optimal filter with the
  true model and ``floor_particles`` particles (10,000), or the bootstrap filter
  where the observation is not linear-Gaussian.

The metric is the mean squared error of the filtered estimate against the true
states, over components, steps and test series (spec section 4); for Kuramoto the
estimate is the weighted circular mean and the errors are wrapped to
``(-pi, pi]``. Runs are independent joblib tasks, seeded from
``SeedSequence(seed).spawn(runs)``.
"""

import platform
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import joblib
import numpy
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from .baselines import check_locally_optimal_applies
from .datasets import make_kuramoto, make_linear_gaussian, make_lorenz96
from .estimator import (
    AuxiliaryFilter,
    BootstrapFilter,
    ImprovedAuxiliaryFilter,
    LocallyOptimalFilter,
    StateMixFilter,
)
from .filtering import DegeneracyWarning

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "estimate_seconds",
    "format_tables",
    "plot_results",
    "run_experiment",
    "summarize",
]


class Experiment(NamedTuple):
    """One experiment definition (spec section 4)."""

    make: object
    """``make(n_steps, n_sequences, random_state) -> (Y, X, model)``."""
    circular: bool
    """Whether states are phases (circular mean, wrapped errors)."""
    description: str


def _make_kuramoto(n_steps, n_sequences, random_state):
    return make_kuramoto(n_steps, n_sequences=n_sequences, random_state=random_state)


def _make_lorenz96(n_steps, n_sequences, random_state):
    return make_lorenz96(n_steps, n_sequences=n_sequences, random_state=random_state)


def _make_linear_gaussian(n_steps, n_sequences, random_state):
    return make_linear_gaussian(
        n_steps, n_sequences=n_sequences, random_state=random_state
    )


EXPERIMENTS = {
    "lorenz96": Experiment(
        _make_lorenz96,
        False,
        "stochastic Lorenz 96: 10 states, forcing 8, dt 0.05, process noise 0.5, "
        "every state observed with noise 0.5",
    ),
    "kuramoto": Experiment(
        _make_kuramoto,
        True,
        "Kuramoto: 6 oscillators, coupling 1.5, dt 0.1, process noise 0.05, "
        "observed as [sin, cos] with noise 0.5",
    ),
    "linear-gaussian": Experiment(
        _make_linear_gaussian,
        False,
        "linear-Gaussian: 4 states, A = 0.95 x orthogonal, process noise 0.3, "
        "observed with noise 0.7 (the Kalman filter is exact)",
    ),
}

BASELINES = (
    ("bootstrap", BootstrapFilter),
    ("auxiliary", AuxiliaryFilter),
    ("improved auxiliary", ImprovedAuxiliaryFilter),
)


def _observation_only(Y, model, circular):
    """Estimate the state from each observation alone."""
    if circular:
        n_states = model.n_states
        return numpy.arctan2(Y[..., :n_states], Y[..., n_states:])
    inverse = numpy.linalg.pinv(model.observation.observation_matrix)
    return Y @ inverse.T


def _squared_errors(estimates, X, circular):
    difference = numpy.asarray(estimates) - X
    if circular:
        difference = numpy.angle(numpy.exp(1j * difference))
    return difference**2


def _estimates(estimator, Y, circular):
    """Return the filtered estimates of every test series and the score."""
    if not circular:
        return estimator.predict(Y), estimator.score(Y)
    with warnings.catch_warnings():
        # The experiments measure every filter, degenerate or not: the warning
        # is for a user's own call.
        warnings.simplefilter("ignore", DegeneracyWarning)
        result = estimator.filter(Y, return_particles=True)
    weights = numpy.exp(result.log_weights)[..., None]
    estimates = numpy.arctan2(
        numpy.sum(weights * numpy.sin(result.particles), axis=-2),
        numpy.sum(weights * numpy.cos(result.particles), axis=-2),
    )
    n_observed = numpy.sum(~numpy.all(numpy.isnan(Y), axis=-1))
    return estimates, float(numpy.sum(result.log_likelihood) / n_observed)


def _floor_filter(model, n_particles, seed):
    try:
        check_locally_optimal_applies(model)
    except ValueError:
        return "bootstrap", BootstrapFilter(
            model, n_particles=n_particles, random_state=seed
        )
    return "locally optimal", LocallyOptimalFilter(
        model, n_particles=n_particles, random_state=seed
    )


def _row(method, n_particles, n_components, errors, log_likelihood, fit, filtering):
    return {
        "method": method,
        "n_particles": n_particles,
        "n_components": n_components,
        "mse": float(numpy.mean(errors)),
        "log_likelihood": None if log_likelihood is None else float(log_likelihood),
        "fit_seconds": float(fit),
        "filter_seconds": float(filtering),
    }


def run_one(name, seed_sequence, settings, keep_trajectory=False):
    """One run of an experiment: draw data, fit, filter with every method.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS`.
    seed_sequence : numpy.random.SeedSequence
    settings : dict
        As built by :func:`run_experiment`.
    keep_trajectory : bool, default=False
        Also return the first test series' truth, observations and estimates.

    Returns
    -------
    run : dict
        ``rows`` (one dict per method and N) and, if asked, ``trajectory``.
    """
    experiment = EXPERIMENTS[name]
    data_seed, fit_seed, filter_seed = (
        int(child.generate_state(1)[0]) for child in seed_sequence.spawn(3)
    )
    n_train, n_test = settings["n_train"], settings["n_test"]
    Y, X, model = experiment.make(settings["n_steps"], n_train + n_test, data_seed)
    Y_train, Y_test, X_test = Y[:n_train], Y[n_train:], X[n_train:]
    circular = experiment.circular
    rows, trajectory = [], {}

    def record(method, n_particles, n_components, estimator, fit_seconds):
        start = time.perf_counter()
        if not hasattr(estimator, "model_"):
            estimator.fit(Y_test)
        estimates, log_likelihood = _estimates(estimator, Y_test, circular)
        seconds = time.perf_counter() - start
        errors = _squared_errors(estimates, X_test, circular)
        rows.append(
            _row(
                method,
                n_particles,
                n_components,
                errors,
                log_likelihood,
                fit_seconds,
                seconds,
            )
        )
        if keep_trajectory:
            trajectory[f"{method} (N = {n_particles})"] = estimates[0].tolist()

    observation_only = _observation_only(Y_test, model, circular)
    rows.append(
        _row(
            "observation-only",
            None,
            None,
            _squared_errors(observation_only, X_test, circular),
            None,
            0.0,
            0.0,
        )
    )
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = {}
        for n_components in settings["n_components"]:
            estimator = StateMixFilter(
                n_components,
                n_particles=settings["train_particles"],
                observation=model.observation,
                initial_state_mean=model.initial_mean,
                initial_state_scale=model.initial_scale,
                max_iter=settings["max_iter"],
                random_state=fit_seed,
            )
            start = time.perf_counter()
            estimator.fit(Y_train)
            learned[n_components] = (estimator, time.perf_counter() - start)
        for n_particles in settings["n_particles"]:
            for method, cls in BASELINES:
                record(
                    method,
                    n_particles,
                    None,
                    cls(model, n_particles=n_particles, random_state=filter_seed),
                    0.0,
                )
            for n_components, (estimator, fit_seconds) in learned.items():
                estimator.set_params(n_particles=n_particles)
                record(
                    "StateMixFilter", n_particles, n_components, estimator, fit_seconds
                )
        floor_method, floor = _floor_filter(
            model, settings["floor_particles"], filter_seed
        )
        record(f"floor ({floor_method})", settings["floor_particles"], None, floor, 0.0)
    run = {"rows": rows}
    if keep_trajectory:
        n_shown = min(3, X_test.shape[-1])
        trajectory["truth"] = X_test[0].tolist()
        trajectory["observation-only"] = observation_only[0].tolist()
        run["trajectory"] = {
            key: numpy.asarray(value)[:, :n_shown].tolist()
            for key, value in trajectory.items()
        }
    return run


def estimate_seconds(name, settings, n_jobs=1):
    """Estimate roughly the wall time of an experiment (2 cores, 2026).

    Calibrated on ``reproduce lorenz96 --runs 10`` (21 min 48 s with 2 jobs)
    and, for the learned filter, on ``reproduce {lorenz96,kuramoto} --runs 2``
    after the fused step (165 s and 120 s): StateMixFilter training about 2.6 s
    per iteration for 5 series of 100 steps; a step of a known-model filter
    about 2 ms plus 8 us per particle per series (the auxiliary filter twice
    that), of the learned filter 0.5 ms plus 17 us per particle; the improved
    auxiliary filter about 70 ms per step per series at N = 1000, growing as
    N^2.
    """
    steps = settings["n_steps"]
    series_steps = settings["n_test"] * steps
    fit = (
        2.6
        * settings["max_iter"]
        * (settings["n_train"] * steps / 500.0)
        * len(settings["n_components"])
    )
    filtering = 0.0
    for n_particles in settings["n_particles"]:
        known = 0.002 + 8e-6 * n_particles
        learned = 0.0005 + 17e-6 * n_particles
        filtering += series_steps * (
            3 * known
            + len(settings["n_components"]) * learned
            + max(0.07 * (n_particles / 1000.0) ** 2, known)
        )
    filtering += series_steps * (0.002 + 8e-6 * settings["floor_particles"])
    workers = max(1, min(n_jobs, settings["runs"]))
    return settings["runs"] * (fit + filtering) / workers


def run_experiment(
    name,
    *,
    runs=10,
    n_particles=(100, 1000),
    n_components=(3,),
    n_train=5,
    n_test=5,
    n_steps=100,
    max_iter=20,
    train_particles=100,
    floor_particles=10_000,
    n_jobs=None,
    seed=0,
    verbose=0,
):
    """Run an experiment ``runs`` times, in parallel through joblib.

    Parameters
    ----------
    name : {"lorenz96", "kuramoto", "linear-gaussian"}
    runs : int, default=10
        Independent runs, each with its own model, training and test series.
    n_particles : tuple of int, default=(100, 1000)
        The ``N`` every method filters with.
    n_components : tuple of int, default=(3,)
        The ``S`` of StateMixFilter, one fit each.
    n_train, n_test, n_steps : int, default=5, 5, 100
        Training and test series per run, and their length.
    max_iter : int, default=20
        StateMixFilter's training iterations.
    train_particles : int, default=100
        StateMixFilter's particles during training.
    floor_particles : int, default=10000
    n_jobs : int, default=None
        joblib's ``n_jobs`` over runs (a joblib context may set the backend).
    seed : int, default=0
    verbose : int, default=0
        joblib's progress messages.

    Returns
    -------
    results : dict
        ``experiment``, ``settings``, ``machine``, ``wall_seconds``, ``runs`` (per
        run: ``rows``, and ``trajectory`` for the first) and ``summary``
        (:func:`summarize`); JSON-serialisable.
    """
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}."
        )
    settings = {
        "runs": int(runs),
        "n_particles": [int(n) for n in n_particles],
        "n_components": [int(s) for s in n_components],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "n_steps": int(n_steps),
        "max_iter": int(max_iter),
        "train_particles": int(train_particles),
        "floor_particles": int(floor_particles),
        "seed": int(seed),
    }
    seeds = numpy.random.SeedSequence(seed).spawn(settings["runs"])
    start = time.perf_counter()
    per_run = joblib.Parallel(n_jobs=n_jobs, verbose=verbose)(
        joblib.delayed(run_one)(name, child, settings, keep_trajectory=index == 0)
        for index, child in enumerate(seeds)
    )
    results = {
        "experiment": name,
        "description": EXPERIMENTS[name].description,
        "settings": settings,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "n_jobs": n_jobs,
        },
        "wall_seconds": time.perf_counter() - start,
        "runs": per_run,
    }
    results["summary"] = summarize(results)
    return results


def summarize(results):
    """Aggregate the runs: one table row per method, ``S`` and ``N``.

    Every ``N`` gets a block: observation-only, the three baselines,
    StateMixFilter for each ``S`` and the floor (the rows without an ``N`` of
    their own repeat in each block). Per row: MSE mean and standard error over
    runs, improvement ``1 - MSE / MSE_ref`` over the improved auxiliary and the
    bootstrap filters at that ``N``, headroom closed
    ``(MSE_IAPF - MSE) / (MSE_IAPF - MSE_floor)``, log-likelihood per step, and
    mean fit and filter seconds per run.
    """
    runs = results["runs"]

    def key(row):
        return (row["method"], row["n_particles"], row["n_components"])

    collected = {}
    for run in runs:
        for row in run["rows"]:
            collected.setdefault(key(row), []).append(row)

    def mean_of(rows, field):
        values = [row[field] for row in rows if row[field] is not None]
        return float(numpy.mean(values)) if values else None

    floor_key = next(k for k in collected if k[0].startswith("floor"))
    floor_mse = mean_of(collected[floor_key], "mse")
    observation_key = ("observation-only", None, None)
    summary = []
    for n_particles in results["settings"]["n_particles"]:
        iapf = mean_of(collected[("improved auxiliary", n_particles, None)], "mse")
        bootstrap = mean_of(collected[("bootstrap", n_particles, None)], "mse")
        keys = [observation_key] + [
            k for k in collected if k[1] == n_particles and not k[0].startswith("floor")
        ]
        keys.append(floor_key)
        for k in keys:
            rows = collected[k]
            mse = numpy.array([row["mse"] for row in rows])
            mean = float(mse.mean())
            error = (
                float(mse.std(ddof=1) / numpy.sqrt(mse.size)) if mse.size > 1 else None
            )
            headroom = iapf - floor_mse
            summary.append(
                {
                    "block": n_particles,
                    "method": k[0],
                    "n_particles": k[1],
                    "n_components": k[2],
                    "mse": mean,
                    "mse_standard_error": error,
                    "improvement_over_iapf": 1.0 - mean / iapf,
                    "improvement_over_bootstrap": 1.0 - mean / bootstrap,
                    "headroom_closed": (iapf - mean) / headroom
                    if headroom > 0
                    else None,
                    "log_likelihood": mean_of(rows, "log_likelihood"),
                    "fit_seconds": mean_of(rows, "fit_seconds"),
                    "filter_seconds": mean_of(rows, "filter_seconds"),
                }
            )
    return summary


def _format(value, digits=3, percent=False):
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.{digits}f}"


def format_tables(results):
    """Return the summary as markdown, one table per ``N``."""
    lines = []
    settings = results["settings"]
    for n_particles in settings["n_particles"]:
        lines += [
            f"**N = {n_particles}** ({settings['runs']} runs; MSE mean and standard "
            "error over runs)",
            "",
            "| method | S | N | MSE | s.e. | vs IAPF | vs bootstrap | headroom closed "
            "| log-lik/step | fit s | filter s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["summary"]:
            if row["block"] != n_particles:
                continue
            lines.append(
                "| "
                + " | ".join(
                    [
                        row["method"],
                        _format(row["n_components"], 0) if row["n_components"] else "-",
                        str(row["n_particles"] or "-"),
                        _format(row["mse"]),
                        _format(row["mse_standard_error"]),
                        _format(row["improvement_over_iapf"], percent=True),
                        _format(row["improvement_over_bootstrap"], percent=True),
                        _format(row["headroom_closed"], 2),
                        _format(row["log_likelihood"], 2),
                        _format(row["fit_seconds"], 1),
                        _format(row["filter_seconds"], 1),
                    ]
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_results(results, directory=None):
    """Draw one test trajectory and the MSE bars.

    Needs matplotlib (the ``plot`` extra).

    Parameters
    ----------
    results : dict
        From :func:`run_experiment`.
    directory : path-like, default=None
        Where to write ``trajectory.png`` and ``mse.png``; None keeps the figures
        open instead (for scripts and the example gallery).

    Returns
    -------
    files_or_figures : list
        The paths written, or the figures when ``directory`` is None.
    """
    import matplotlib.pyplot as plt

    outputs = []

    def finish(figure, filename):
        figure.tight_layout()
        if directory is None:
            outputs.append(figure)
        else:
            path = Path(directory) / filename
            figure.savefig(path, dpi=120)
            plt.close(figure)
            outputs.append(path)

    trajectory = results["runs"][0].get("trajectory")
    if trajectory:
        truth = numpy.asarray(trajectory["truth"])
        n_shown = truth.shape[1]
        figure, axes = plt.subplots(n_shown, 1, figsize=(9, 2.2 * n_shown), sharex=True)
        axes = numpy.atleast_1d(axes)
        largest = max(results["settings"]["n_particles"])
        shown = [
            k
            for k in trajectory
            if k not in ("truth",)
            and (k == "observation-only" or f"N = {largest})" in k or "floor" in k)
        ]
        for component, axis in enumerate(axes):
            axis.plot(truth[:, component], color="black", lw=2, label="truth")
            for k in shown:
                values = numpy.asarray(trajectory[k])[:, component]
                style = {"ls": "", "marker": ".", "ms": 3} if "observation" in k else {}
                axis.plot(values, label=k, **style)
            axis.set_ylabel(f"x[{component}]")
        axes[0].legend(fontsize=7, ncol=3, loc="upper left")
        axes[-1].set_xlabel("time step")
        figure.suptitle(f"{results['experiment']}: one test series (run 0)")
        finish(figure, "trajectory.png")
    figure, axis = plt.subplots(figsize=(9, 4))
    labels, means, errors = [], [], []
    for row in results["summary"]:
        label = row["method"]
        if row["n_components"]:
            label += f" S={row['n_components']}"
        label += f"\nN={row['n_particles']}" if row["n_particles"] else ""
        if label in labels:
            continue
        labels.append(label)
        means.append(row["mse"])
        errors.append(row["mse_standard_error"] or 0.0)
    axis.bar(range(len(labels)), means, yerr=errors, capsize=3)
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("filtered-state MSE")
    axis.set_yscale("log")
    axis.set_title(
        f"{results['experiment']}: MSE over {results['settings']['runs']} runs"
    )
    finish(figure, "mse.png")
    return outputs
