"""
The reproduction table: every filter on Lorenz 96 and Kuramoto, 10 runs
=======================================================================

``statemix-sk reproduce lorenz96`` and ``statemix-sk reproduce kuramoto`` run the
paper's comparison on our experiment definitions: each of 10 runs draws a model,
training series and five test series of 100 steps; StateMixFilter (S = 3) learns
from the training observations only, once for each number of training series (5,
20 and 50 by default, nested subsets of the run's series, up to 100 epochs with
early stopping); every method filters the same test series with the same number
of particles N; the floor is the best filter with the true model and N = 10,000.

Those runs take tens of minutes each on two cores (the command prints its rough
estimate), too long for a documentation build, so this example reads the results
that the commands wrote into the repository
(``benchmarks/reproduce/*/results.json``) and draws them; with
``STATEMIX_EXAMPLES_SIZE=full`` it runs both experiments again instead and shows
the new results. The README's "Results" section says on which machine and with
which code the stored results were measured, and discusses them. Results with
several training sizes also get the learning curve: held-out MSE and
log-likelihood per step against the number of training series, with the filters
given the true model and the floor as horizontal lines.

Read the table honestly. In the results first stored here (the previous training:
5 training series, 20 iterations, before the learning curve), on Lorenz 96
StateMixFilter beats the particle filters given the true model at N = 100 (they
lose track on some series), but its error (0.24 at N = 100, 0.22 at N = 1000) is
barely below the observations alone (0.25) and no better than a random-walk
Kalman filter, which assumes no dynamics at all (about 0.23 in our
measurements): it had not learned the non-linear dynamics. On Kuramoto it was
worse than every baseline. The paper's reported gains were not reproduced; the
user guide's "Known limitations" page says why we think so.
"""

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from statemix_sk.experiments import run_experiment
from statemix_sk.reporting import format_tables, plot_results

SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
EXPERIMENTS = ("lorenz96", "kuramoto")
try:
    HERE = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs examples in their folder, without __file__
    HERE = Path.cwd()
STORED = HERE.parent / "benchmarks" / "reproduce"


def training_text(results):
    """Say how StateMixFilter was trained (results from before or after epochs)."""
    settings = results["settings"]
    sizes = np.atleast_1d(settings["n_train"]).tolist()
    training = results.get("training")
    if training is None:  # written before max_iter counted epochs
        return f"{sizes} training series, {settings['max_iter']} iterations"
    stopping = "early stopping" if training["early_stopping"] else "no early stopping"
    return f"{sizes} training series, up to {training['max_iter']} epochs, {stopping}"


def label(row):
    """Name a row of the summary, StateMixFilter with its S and training size."""
    if row["method"] != "StateMixFilter":
        return row["method"]
    if row.get("n_train") is None:
        return f"StateMixFilter S = {row['n_components']}"
    return f"StateMixFilter S = {row['n_components']}\n{row['n_train']} series"


results = {}
for name in EXPERIMENTS:
    if SIZE == "full":
        print(f"Running {name} (10 runs; tens of minutes on two cores)...")
        results[name] = run_experiment(name, n_jobs=-1)
    else:
        with open(STORED / name / "results.json") as file:
            results[name] = json.load(file)
    settings = results[name]["settings"]
    print(
        f"\n{name}: {settings['runs']} runs, N = {settings['n_particles']}, "
        f"S = {settings['n_components']}, {training_text(results[name])}, "
        f"wall time {results[name]['wall_seconds'] / 60:.1f} min\n"
    )
    print(format_tables(results[name]))

# %%
# Filtered-state MSE of every method
# ----------------------------------
# Bars are the mean over runs, with one standard error; the dashed line is the
# floor (the best filter with the true model and N = 10,000). Lower is better; the
# scale is logarithmic because the filters that lose track are far off.
figure, axes = plt.subplots(1, len(EXPERIMENTS), figsize=(11, 4.8), sharey=False)
for axis, name in zip(axes, EXPERIMENTS, strict=True):
    summary = results[name]["summary"]
    blocks = results[name]["settings"]["n_particles"]
    methods = [label(row) for row in summary if row["block"] == blocks[0]]
    methods = [m for m in methods if not m.startswith("floor")]
    width = 0.8 / len(blocks)
    for index, block in enumerate(blocks):
        rows = {label(row): row for row in summary if row["block"] == block}
        means = [rows[m]["mse"] for m in methods]
        errors = [rows[m]["mse_standard_error"] or 0.0 for m in methods]
        axis.bar(
            np.arange(len(methods)) + (index - (len(blocks) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=2,
            label=f"N = {block}",
        )
    floor = next(row for row in summary if row["method"].startswith("floor"))
    axis.axhline(floor["mse"], color="black", ls="--", lw=1, label=floor["method"])
    axis.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("filtered-state MSE")
    axis.set_title(name)
    axis.legend(fontsize=8)
figure.suptitle("statemix-sk reproduce: mean over runs, with standard errors")
figure.tight_layout()

# %%
# The learning curve
# ------------------
# StateMixFilter's held-out MSE (left) and log-likelihood per step (right) against
# the number of training series, one line per N, with the filters given the true
# model at the same N and the floor as horizontal lines (shaded: one standard
# error). Results stored before the number of training series became an axis
# have no curve.
for name in EXPERIMENTS:
    learned = [
        row
        for row in results[name]["summary"]
        if row["method"] == "StateMixFilter" and row.get("n_train") is not None
    ]
    if not learned:
        print(f"{name}: the results have one training size and no learning curve.")
        continue
    # plot_results draws the trajectory, the bars and, last, the learning curve.
    *others, curve = plot_results(results[name])
    for other in others:
        plt.close(other)
plt.show()
