"""The paper's comparison, on our experiment definitions: one function per step.

``statemix-sk reproduce`` (:mod:`statemix_sk.cli`) and the scripts in ``examples/``
call :func:`run_experiment`. Each *run* draws one model with training series and
held-out test series from it (:mod:`statemix_sk.datasets`); StateMixFilter is
fitted on training observations only, once per number of training series
``n_train`` (nested subsets: the fit for a smaller size sees the first series of
the larger ones); then every method filters the same test series with the same
number of particles ``N``, all from the model's initial distribution:

- observation-only: the state read off each observation alone (``pinv(H) y``, or
  the phase ``atan2(sin, cos)`` for Kuramoto);
- the bootstrap, auxiliary and improved auxiliary particle filters with the true
  model (once per run: they do not depend on ``n_train``);
- StateMixFilter for each number of components ``S`` and each ``n_train``
  (trained with ``train_particles`` particles, then filtering with each ``N``);
- the floor, the best any filter can reach: the locally optimal filter with the
  true model and ``floor_particles`` particles (10,000), or the bootstrap filter
  where the observation is not linear-Gaussian.

The metric is the mean squared error of the filtered estimate against the true
states, over components, steps and test series (spec section 4); for Kuramoto the
estimate is the weighted circular mean and the errors are wrapped to
``(-pi, pi]``. Runs are independent joblib tasks, seeded from
``SeedSequence(seed).spawn(runs)``. The learning curve
(:func:`~statemix_sk.reporting.plot_results`) draws StateMixFilter's held-out
MSE and log-likelihood per step against ``n_train``, with the baselines and the
floor as horizontal lines; :mod:`statemix_sk.reporting` also has the tables.
"""

import contextlib
import platform
import time
import warnings
from typing import NamedTuple

import joblib
import numpy
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ._utils import moved_names
from .baselines import check_locally_optimal_applies
from .datasets import make_kuramoto, make_linear_gaussian, make_lorenz96
from .estimator import StateMixFilter
from .filtering import DegeneracyWarning
from .known_model_filters import (
    AuxiliaryFilter,
    BootstrapFilter,
    ImprovedAuxiliaryFilter,
    LocallyOptimalFilter,
)
from .reporting import summarize, training_sizes

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "estimate_seconds",
    "run_experiment",
]

# Moved to reporting.py in issue 16; the old paths warn (FutureWarning) and will go.
__getattr__ = moved_names(
    "experiments",
    {name: "reporting" for name in ("format_tables", "plot_results", "plural")},
)


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


def _repeat_seed(seed, repeat):
    """Return the evaluation seed of a filter's pass ``repeat`` (pass 0: ``seed``)."""
    if repeat == 0:
        return seed
    # Below 2**31, like the seeds the estimators draw.
    return int(numpy.random.SeedSequence([seed, repeat]).generate_state(1)[0] >> 1)


@contextlib.contextmanager
def _evaluation_seed(estimator, repeat):
    """Filter with the fitted estimator's evaluation seed of pass ``repeat``.

    ``fit`` draws the seed of every later filter pass from ``random_state``
    (``_eval_seed``); pass 0 keeps it, so one pass is exactly the estimator's
    own ``predict``. Changing it after ``fit`` averages over the filter's Monte
    Carlo noise without refitting (a learned filter's training is not redone).
    """
    original = estimator._eval_seed
    estimator._eval_seed = _repeat_seed(original, repeat)
    try:
        yield
    finally:
        estimator._eval_seed = original


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


def _row(
    method,
    n_particles,
    n_components,
    errors,
    log_likelihood,
    fit,
    filtering,
    n_train=None,
    estimator=None,
    mse_by_pass=None,
):
    """One result row; ``n_train`` and the training counts only for a learned filter.

    ``errors`` are the squared errors averaged over the filter's passes, whose
    own MSEs are ``mse_by_pass`` (None: one pass).
    """
    row = {
        "method": method,
        "n_particles": n_particles,
        "n_components": n_components,
        "n_train": n_train,
        "mse": float(numpy.mean(errors)),
        "log_likelihood": None if log_likelihood is None else float(log_likelihood),
        "n_iter": None if estimator is None else int(estimator.n_iter_),
        "n_updates": None if estimator is None else int(estimator.n_updates_),
        "fit_seconds": float(fit),
        "filter_seconds": float(filtering),
    }
    if mse_by_pass is not None:
        row["mse_by_pass"] = [float(mse) for mse in mse_by_pass]
    return row


def _statemix_options(settings, verbose=0):
    """Return the StateMixFilter arguments that the settings fix.

    The training particles, and ``max_iter`` and ``update`` where set (results
    written before ``update`` was a setting have none).
    """
    options = {"n_particles": settings["train_particles"]}
    if settings["max_iter"] is not None:
        options["max_iter"] = settings["max_iter"]
    if settings.get("update") is not None:
        options["update"] = settings["update"]
    if verbose > 1:
        options["verbose"] = 1
    return options


def _filter_passes(estimator, Y_test, X_test, circular, passes):
    """Filter the test series ``passes`` times (fitting a known-model filter first).

    Returns the squared errors averaged over the passes, the mean
    log-likelihood per step, each pass's MSE and the first pass's estimates.
    """
    if not hasattr(estimator, "model_"):
        estimator.fit(Y_test)
    errors, log_likelihoods, mse_by_pass = 0.0, [], []
    for repeat in range(passes):
        with _evaluation_seed(estimator, repeat):
            one, log_likelihood = _estimates(estimator, Y_test, circular)
        squared = _squared_errors(one, X_test, circular)
        errors = errors + squared / passes
        log_likelihoods.append(log_likelihood)
        mse_by_pass.append(numpy.mean(squared))
        if repeat == 0:
            estimates = one
    return errors, float(numpy.mean(log_likelihoods)), mse_by_pass, estimates


def _fit_learned(name, model, Y_train, sizes, settings, fit_seed, verbose):
    """Fit StateMixFilter for each S and training size (largest first).

    Returns ``{(S, n_train): (estimator, fit seconds)}``.
    """
    options = _statemix_options(settings, verbose)
    learned = {}
    for n_components in settings["n_components"]:
        for n_train in reversed(sizes):
            estimator = StateMixFilter(
                n_components,
                observation=model.observation,
                initial_state_mean=model.initial_mean,
                initial_state_scale=model.initial_scale,
                random_state=fit_seed,
                **options,
            )
            start = time.perf_counter()
            estimator.fit(Y_train[:n_train])
            seconds = time.perf_counter() - start
            learned[n_components, n_train] = (estimator, seconds)
            if verbose > 0:
                print(
                    f"{name}: S = {n_components}, {n_train} training series: "
                    f"{estimator.n_iter_} epochs, {estimator.n_updates_} "
                    f"updates, {seconds:.0f} s.",
                    flush=True,
                )
    return learned


def run_one(name, seed_sequence, settings, keep_trajectory=False, verbose=0):
    """One run of an experiment: draw data, fit, filter with every method.

    The run draws ``max(n_train)`` training series and ``n_test`` test series of
    one model; the StateMixFilter for ``n_train`` series is fitted on the first
    ``n_train`` of them, with the same seed for every size.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS`.
    seed_sequence : numpy.random.SeedSequence
    settings : dict
        As built by :func:`run_experiment`.
    keep_trajectory : bool, default=False
        Also return the first test series' truth, observations and estimates
        (StateMixFilter's for the largest ``n_train`` only).
    verbose : int, default=0
        1: the run prints a line per fit; 2 or more: StateMixFilter also a line
        per epoch.

    Returns
    -------
    run : dict
        ``rows`` (one dict per method, N and, for StateMixFilter, S and
        ``n_train``) and, if asked, ``trajectory``.
    """
    experiment = EXPERIMENTS[name]
    data_seed, fit_seed, filter_seed = (
        int(child.generate_state(1)[0]) for child in seed_sequence.spawn(3)
    )
    sizes = training_sizes(settings["n_train"])
    n_largest, n_test = sizes[-1], settings["n_test"]
    Y, X, model = experiment.make(settings["n_steps"], n_largest + n_test, data_seed)
    Y_train, Y_test, X_test = Y[:n_largest], Y[n_largest:], X[n_largest:]
    circular = experiment.circular
    rows, trajectory = [], {}

    def record(
        method,
        n_particles,
        n_components,
        estimator,
        fit_seconds,
        n_train=None,
        passes=1,
    ):
        start = time.perf_counter()
        errors, log_likelihood, mse_by_pass, estimates = _filter_passes(
            estimator, Y_test, X_test, circular, passes
        )
        seconds = time.perf_counter() - start
        learned = n_train is not None
        rows.append(
            _row(
                method,
                n_particles,
                n_components,
                errors,
                log_likelihood,
                fit_seconds,
                seconds,
                n_train=n_train,
                estimator=estimator if learned else None,
                mse_by_pass=mse_by_pass if passes > 1 else None,
            )
        )
        if not keep_trajectory:
            return
        if not learned:
            trajectory[f"{method} (N = {n_particles})"] = estimates[0].tolist()
        elif n_train == n_largest:
            key = f"{method} (S = {n_components}, {n_train} series, N = {n_particles})"
            trajectory[key] = estimates[0].tolist()

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
    # The floor filters once: with its many particles its Monte Carlo error is
    # small next to the others'.
    passes = settings.get("filter_passes", 1)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = _fit_learned(name, model, Y_train, sizes, settings, fit_seed, verbose)
        for n_particles in settings["n_particles"]:
            for method, cls in BASELINES:
                record(
                    method,
                    n_particles,
                    None,
                    cls(model, n_particles=n_particles, random_state=filter_seed),
                    0.0,
                    passes=passes,
                )
            for (n_components, n_train), (estimator, seconds) in learned.items():
                estimator.set_params(n_particles=n_particles)
                record(
                    "StateMixFilter",
                    n_particles,
                    n_components,
                    estimator,
                    seconds,
                    n_train=n_train,
                    passes=passes,
                )
        floor_method, floor = _floor_filter(
            model, settings["floor_particles"], filter_seed
        )
        record(f"floor ({floor_method})", settings["floor_particles"], None, floor, 0.0)
    run = {"rows": rows}
    if keep_trajectory:
        run["trajectory"] = _shown_trajectory(trajectory, X_test, observation_only)
    return run


def _shown_trajectory(trajectory, X_test, observation_only):
    """Return the first test series' estimates with its truth, 3 states at most."""
    n_shown = min(3, X_test.shape[-1])
    trajectory["truth"] = X_test[0].tolist()
    trajectory["observation-only"] = observation_only[0].tolist()
    return {
        key: numpy.asarray(value)[:, :n_shown].tolist()
        for key, value in trajectory.items()
    }


# StateMixFilter's training, measured on Lorenz 96 (see estimate_seconds).
_SECONDS_PER_UPDATE = 0.25  # a minibatch of 10 windows of 25 steps, N = 100
_SECONDS_OF_START = 45.0  # the regression start, from 1,000 state pairs up
_EPOCHS = 25  # early stopping ended after 15 to 40 epochs


def _fit_seconds(n_train, settings):
    """Estimate one StateMixFilter fit on ``n_train`` series (see estimate_seconds)."""
    steps = settings["n_steps"]
    particles = settings["train_particles"] / 100.0
    # early_stopping="auto" holds out 10% of the series (at least one) from two on.
    n_held = int(numpy.ceil(0.1 * n_train)) if n_train > 1 else 0
    n_fit = n_train - n_held
    updates = n_fit * steps / (10 * 25)  # batch_size 10 of window_length 25
    epoch = _SECONDS_PER_UPDATE * updates * particles
    epoch += n_held * steps * (0.0005 + 17e-6 * settings["train_particles"])
    start = _SECONDS_OF_START * min(1.0, n_fit * (steps - 1) / 1000.0)
    max_iter = settings["max_iter"]
    epochs = _EPOCHS if max_iter is None else min(int(max_iter), _EPOCHS)
    return start + epochs * epoch


def estimate_seconds(name, settings, n_jobs=1):
    """Estimate roughly the wall time of an experiment (2 cores, 2026).

    A rough guide to plan by, not a measurement: the sum over runs of the
    StateMixFilter fits and every method's filtering, divided by the parallel
    jobs. Early stopping, the experiment and the machine's load move it.

    StateMixFilter: one fit per ``S`` and training size, each (time per epoch)
    x (epochs) plus its start. Calibrated on Lorenz 96 with 50 series of 100
    steps (45 to train on after the 10% validation split), ``window_length``
    25, ``batch_size`` 10, N = 100: about 20 updates per epoch at roughly 0.25
    s per update on an unloaded core, and a regression start of 30 to 60 s;
    early stopping usually ended after 15 to 40 epochs, taken here as 25 (or
    ``max_iter`` when smaller). An epoch is taken as proportional to the
    training series (and to ``train_particles``); the start as proportional to
    the state pairs up to 1,000 (the size of its minibatches) and constant
    above, where its steps no longer grow.

    Filtering, calibrated on ``reproduce lorenz96 --runs 10`` and ``reproduce
    {lorenz96,kuramoto} --runs 2`` before the new training: a step of a
    known-model filter about 2 ms plus 8 us per particle per series (the
    auxiliary filter twice that), of the learned filter 0.5 ms plus 17 us per
    particle; the improved auxiliary filter about 70 ms per step per series at
    N = 1000, growing as N^2.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS` (the estimate does not depend on it).
    settings : dict
        As built by :func:`run_experiment` (``n_train`` an int or a list).
    n_jobs : int, default=1
        Parallel runs.

    Returns
    -------
    seconds : float
    """
    sizes = training_sizes(settings["n_train"])
    n_components = len(settings["n_components"])
    fit = n_components * sum(_fit_seconds(n_train, settings) for n_train in sizes)
    series_steps = settings["n_test"] * settings["n_steps"]
    filtering = 0.0
    passes = settings.get("filter_passes", 1)
    for n_particles in settings["n_particles"]:
        known = 0.002 + 8e-6 * n_particles
        learned = 0.0005 + 17e-6 * n_particles
        filtering += (
            passes
            * series_steps
            * (
                3 * known
                + n_components * len(sizes) * learned
                + max(0.07 * (n_particles / 1000.0) ** 2, known)
            )
        )
    filtering += series_steps * (0.002 + 8e-6 * settings["floor_particles"])
    workers = max(1, min(n_jobs, settings["runs"]))
    return settings["runs"] * (fit + filtering) / workers


def _training_parameters(settings):
    """Return StateMixFilter's training parameters in a run, defaults included."""
    defaults = StateMixFilter(**_statemix_options(settings)).get_params()
    training = {
        key: defaults[key]
        for key in (
            "n_particles",
            "hidden_layer_sizes",
            "init_dynamics",
            "max_iter",
            "tol",
            "learning_rate",
            "window_length",
            "batch_size",
            "update",
            "alpha",
            "early_stopping",
            "validation_fraction",
            "n_iter_no_change",
        )
    }
    training["hidden_layer_sizes"] = list(training["hidden_layer_sizes"])
    return training


def run_experiment(
    name,
    *,
    runs=10,
    n_particles=(100, 1000),
    n_components=(3,),
    n_train=(5, 20, 50),
    n_test=5,
    n_steps=100,
    max_iter=None,
    update=None,
    train_particles=100,
    floor_particles=10_000,
    filter_passes=1,
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
        The ``S`` of StateMixFilter, one fit each (per training size).
    n_train : int or tuple of int, default=(5, 20, 50)
        Training series: one StateMixFilter fit per size, on the first
        ``n_train`` of the run's ``max(n_train)`` training series (the learning
        curve). The baselines and the floor do not use them.
    n_test, n_steps : int, default=5, 100
        Test series per run, and the length of every series.
    max_iter : int, default=None
        StateMixFilter's maximum number of epochs; None: the estimator's own
        default (100, with early stopping on held-out training series).
    update : {"joint", "alternating"}, default=None
        StateMixFilter's update scheme; None: the estimator's default.
    train_particles : int, default=100
        StateMixFilter's particles during training.
    floor_particles : int, default=10000
    filter_passes : int, default=1
        Passes of every method's filter over the test series, each with its own
        seed (the first: the filter's own), whose squared errors and
        log-likelihoods are averaged: at small ``N`` a filter that loses track
        on some series and seeds but not others makes one pass a noisy judge
        (on Kuramoto, the true model's bootstrap filter at N = 100 gave 0.056 to
        0.222 on the same 30 series). The floor filters once. Rows then also
        hold ``mse_by_pass``.
    n_jobs : int, default=None
        joblib's ``n_jobs`` over runs (a joblib context may set the backend).
    seed : int, default=0
    verbose : int, default=0
        1: a line per fit (its epochs, updates and seconds) and joblib's progress
        messages per run; 2 or more: StateMixFilter's line per epoch too.

    Returns
    -------
    results : dict
        ``experiment``, ``settings``, ``training`` (StateMixFilter's training
        parameters, defaults included), ``machine``, ``wall_seconds``, ``runs``
        (per run: ``rows``, and ``trajectory`` for the first) and ``summary``
        (:func:`summarize`); JSON-serialisable.
    """
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}."
        )
    if update not in (None, "joint", "alternating"):
        raise ValueError(
            f"update must be 'joint', 'alternating' or None, got {update!r}."
        )
    settings = {
        "runs": int(runs),
        "n_particles": [int(n) for n in n_particles],
        "n_components": [int(s) for s in n_components],
        "n_train": training_sizes(n_train),
        "n_test": int(n_test),
        "n_steps": int(n_steps),
        "max_iter": None if max_iter is None else int(max_iter),
        "update": update,
        "train_particles": int(train_particles),
        "floor_particles": int(floor_particles),
        "filter_passes": int(filter_passes),
        "seed": int(seed),
    }
    training = _training_parameters(settings)
    seeds = numpy.random.SeedSequence(seed).spawn(settings["runs"])
    start = time.perf_counter()
    per_run = joblib.Parallel(n_jobs=n_jobs, verbose=verbose)(
        joblib.delayed(run_one)(
            name, child, settings, keep_trajectory=index == 0, verbose=verbose
        )
        for index, child in enumerate(seeds)
    )
    results = {
        "experiment": name,
        "description": EXPERIMENTS[name].description,
        "settings": settings,
        "training": training,
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
