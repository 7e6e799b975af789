"""Reporting an experiment: the summary table, the Markdown tables and figures.

:func:`summarize` aggregates the rows of :func:`statemix_sk.experiments.\
run_experiment`'s runs (mean and standard error over runs, improvements over
the improved auxiliary and the bootstrap filters, the headroom to the floor
closed, paired differences); :func:`format_tables` writes them as Markdown and
:func:`plot_results` draws a trajectory, the MSE per method and the learning
curve (with matplotlib, the ``plot`` extra). Pure functions of the results
dict: nothing is run here.
"""

from pathlib import Path

import numpy

__all__ = [
    "format_tables",
    "plot_results",
    "plural",
    "summarize",
    "training_sizes",
]


def training_sizes(n_train):
    """Return the numbers of training series, ascending and without repeats."""
    sizes = sorted({int(n) for n in numpy.atleast_1d(n_train)})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"n_train must be positive integers, got {n_train!r}.")
    return sizes


def _mean_and_error(values):
    """Return the mean and standard error of the non-missing values (or None)."""
    values = numpy.array([value for value in values if value is not None], float)
    if values.size == 0:
        return None, None
    error = values.std(ddof=1) / numpy.sqrt(values.size) if values.size > 1 else None
    return float(values.mean()), None if error is None else float(error)


def summarize(results):
    """Aggregate the runs: one table row per method, ``S``, ``n_train`` and ``N``.

    Every ``N`` gets a block: observation-only, the three baselines,
    StateMixFilter for each ``S`` and ``n_train`` (largest first) and the floor
    (the rows without an ``N`` of their own repeat in each block). Per row: MSE
    and log-likelihood per step, each mean and standard error over runs;
    improvement ``1 - MSE / MSE_ref`` over the improved auxiliary and the
    bootstrap filters at that ``N``; headroom closed
    ``(MSE_IAPF - MSE) / (MSE_IAPF - MSE_floor)``; the MSE minus IAPF's and
    minus the bootstrap filter's, paired by run (mean and standard error, for
    rows with an ``N``); mean epochs (StateMixFilter) and mean fit
    and filter seconds per run. Results written before ``n_train``
    became an axis (rows without it) are read as one training size.
    """

    def key(row):
        return (
            row["method"],
            row["n_particles"],
            row["n_components"],
            row.get("n_train"),
        )

    collected = {}
    for run in results["runs"]:
        for row in run["rows"]:
            collected.setdefault(key(row), []).append(row)

    def mean_of(rows, field):
        return _mean_and_error(row.get(field) for row in rows)[0]

    floor_key = next(k for k in collected if k[0].startswith("floor"))
    floor_mse = mean_of(collected[floor_key], "mse")
    observation_key = ("observation-only", None, None, None)
    summary = []
    for n_particles in results["settings"]["n_particles"]:
        iapf = mean_of(
            collected[("improved auxiliary", n_particles, None, None)], "mse"
        )
        bootstrap = mean_of(collected[("bootstrap", n_particles, None, None)], "mse")
        references = {
            "iapf": collected[("improved auxiliary", n_particles, None, None)],
            "bootstrap": collected[("bootstrap", n_particles, None, None)],
        }
        baselines = [
            k
            for k in collected
            if k[1] == n_particles and k[2] is None and not k[0].startswith("floor")
        ]
        learned = sorted(
            (k for k in collected if k[1] == n_particles and k[2] is not None),
            key=lambda k: (k[2], -(k[3] or 0)),
        )
        keys = [observation_key, *baselines, *learned, floor_key]
        headroom = iapf - floor_mse
        for k in keys:
            rows = collected[k]
            mse, mse_error = _mean_and_error(row["mse"] for row in rows)
            paired = {}
            for name, reference in references.items():
                # Run by run: the runs share their test series, so the paired
                # difference is free of the spread between runs.
                same_runs = k[1] is not None and len(rows) == len(reference)
                paired[name] = _mean_and_error(
                    row["mse"] - other["mse"]
                    for row, other in zip(rows, reference, strict=same_runs)
                    if same_runs
                )
            log_likelihood, log_likelihood_error = _mean_and_error(
                row["log_likelihood"] for row in rows
            )
            summary.append(
                {
                    "block": n_particles,
                    "method": k[0],
                    "n_particles": k[1],
                    "n_components": k[2],
                    "n_train": k[3],
                    "mse": mse,
                    "mse_standard_error": mse_error,
                    "improvement_over_iapf": 1.0 - mse / iapf,
                    "improvement_over_bootstrap": 1.0 - mse / bootstrap,
                    "headroom_closed": (iapf - mse) / headroom
                    if headroom > 0
                    else None,
                    "mse_minus_iapf": paired["iapf"][0],
                    "mse_minus_iapf_standard_error": paired["iapf"][1],
                    "mse_minus_bootstrap": paired["bootstrap"][0],
                    "mse_minus_bootstrap_standard_error": paired["bootstrap"][1],
                    "log_likelihood": log_likelihood,
                    "log_likelihood_standard_error": log_likelihood_error,
                    "n_iter": mean_of(rows, "n_iter"),
                    "fit_seconds": mean_of(rows, "fit_seconds"),
                    "filter_seconds": mean_of(rows, "filter_seconds"),
                }
            )
    return summary


def _format(value, digits=3, percent=False):
    if value is None:
        return "-"
    text = f"{100 * value:.0f}%" if percent else f"{value:.{digits}f}"
    # A value that rounds to zero reads "0", not "-0".
    return text[1:] if text.startswith("-") and not text.strip("-0.%") else text


def _signed(value):
    """Format a difference with its sign."""
    if value is None:
        return "-"
    text = f"{value:+.3f}"
    # A difference that rounds to zero reads "0.000", without a sign.
    return text[1:] if not text.strip("+-0.") else text


def plural(count, word):
    """Say ``count`` with ``word``, plural unless the count is one."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _label(row, sizes):
    """Name a summary row: StateMixFilter with its S and training size."""
    if not row["n_components"]:
        return row["method"]
    n_train = row.get("n_train")
    if n_train is None:
        return f"{row['method']} (S = {row['n_components']})"
    label = f"{row['method']} (S = {row['n_components']}, {n_train} series"
    if len(sizes) > 1 and n_train == sizes[0]:
        label += "; small-data case"
    return label + ")"


def _sizes_text(sizes):
    """Say the training sizes in words, largest first."""
    words = [str(n) for n in sorted(sizes, reverse=True)]
    if len(words) > 1:
        words = [", ".join(words[:-1]) + " and " + words[-1]]
    return words[0] + " series"


def _passes_text(settings):
    """Say over how many filter passes each run's figures are averaged."""
    passes = settings.get("filter_passes", 1)
    if passes == 1:
        return ""
    return f", each run's averaged over {passes} filter passes (the floor: one)"


def format_tables(results):
    """Return the summary as markdown, one table per ``N``.

    StateMixFilter has a row per ``S`` and training size, the largest size (the
    headline) first; with several sizes the smallest is the small-data case.
    The baselines, observation-only and the floor appear once per table.
    """
    lines = []
    settings = results["settings"]
    sizes = training_sizes(settings["n_train"])
    for n_particles in settings["n_particles"]:
        lines += [
            f"**N = {n_particles}** ({plural(settings['runs'], 'run')}; MSE and "
            "log-likelihood "
            "per step: mean and standard error over runs"
            f"{_passes_text(settings)}; StateMixFilter trained on "
            f"{_sizes_text(sizes)} of {settings['n_steps']} steps)",
            "",
            "| method | N | MSE | s.e. | vs IAPF | vs bootstrap | headroom closed "
            "| log-lik/step | s.e. | epochs | fit s | filter s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["summary"]:
            if row["block"] != n_particles:
                continue
            lines.append(
                "| "
                + " | ".join(
                    [
                        _label(row, sizes),
                        str(row["n_particles"] or "-"),
                        _format(row["mse"]),
                        _format(row["mse_standard_error"]),
                        _format(row["improvement_over_iapf"], percent=True),
                        _format(row["improvement_over_bootstrap"], percent=True),
                        _format(row["headroom_closed"], 2),
                        _format(row["log_likelihood"], 2),
                        _format(row.get("log_likelihood_standard_error"), 2),
                        _format(row.get("n_iter"), 0),
                        _format(row["fit_seconds"], 1),
                        _format(row["filter_seconds"], 1),
                    ]
                )
                + " |"
            )
        for reference, method, name in (
            ("iapf", "improved auxiliary", "IAPF's"),
            ("bootstrap", "bootstrap", "the bootstrap filter's"),
        ):
            paired = [
                f"{_label(row, sizes)} {_signed(row[f'mse_minus_{reference}'])} "
                f"+/- {_format(row[f'mse_minus_{reference}_standard_error'])}"
                for row in results["summary"]
                if row["block"] == n_particles
                and row.get(f"mse_minus_{reference}_standard_error") is not None
                and row["method"] not in (method, "observation-only")
                and not row["method"].startswith("floor")
            ]
            if paired:
                lines += [
                    "",
                    f"MSE minus {name}, paired by run (mean +/- s.e.): "
                    + "; ".join(paired)
                    + ".",
                ]
        if any(
            row["block"] == n_particles and row["headroom_closed"] is None
            for row in results["summary"]
        ):
            lines += [
                "",
                'Headroom closed is "-": IAPF\'s MSE is already at or below the '
                "floor's here, so there is no headroom to close.",
            ]
        lines.append("")
    return "\n".join(lines)


_BASELINE_COLOURS = {
    "bootstrap": "tab:orange",
    "auxiliary": "tab:green",
    "improved auxiliary": "tab:red",
}
_LEARNED_COLOURS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:cyan")
_LINE_STYLES = ("-", "--", ":", "-.")


def _level(axis, row, field, colour, style, label):
    """Draw a row's mean as a horizontal line, shaded one standard error around."""
    value, error = row[field], row.get(f"{field}_standard_error")
    if value is None:
        return
    axis.axhline(value, color=colour, ls=style, lw=1.2, label=label)
    if error:
        axis.axhspan(value - error, value + error, color=colour, alpha=0.12)


def _plot_learning_curve(results, plt):
    """Draw held-out MSE and log-likelihood per step against ``n_train``."""
    summary = results["summary"]
    learned = [
        row
        for row in summary
        if row["method"] == "StateMixFilter" and row.get("n_train") is not None
    ]
    if not learned:
        return None
    sizes = sorted({row["n_train"] for row in learned})
    blocks = results["settings"]["n_particles"]
    components = sorted({row["n_components"] for row in learned})
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, field in zip(axes, ("mse", "log_likelihood"), strict=True):
        error_field = f"{field}_standard_error"
        for index, block in enumerate(blocks):
            style = _LINE_STYLES[index % len(_LINE_STYLES)]
            rows = [row for row in summary if row["block"] == block]
            for row in rows:
                if row["method"] in _BASELINE_COLOURS:
                    _level(
                        axis,
                        row,
                        field,
                        _BASELINE_COLOURS[row["method"]],
                        style,
                        f"{row['method']} (N = {block})",
                    )
            for number, n_components in enumerate(components):
                curve = sorted(
                    (
                        row
                        for row in learned
                        if row["block"] == block and row["n_components"] == n_components
                    ),
                    key=lambda row: row["n_train"],
                )
                axis.errorbar(
                    [row["n_train"] for row in curve],
                    [row[field] for row in curve],
                    yerr=[row.get(error_field) or 0.0 for row in curve],
                    color=_LEARNED_COLOURS[number % len(_LEARNED_COLOURS)],
                    ls=style,
                    marker="o",
                    capsize=3,
                    lw=2,
                    label=f"StateMixFilter S = {n_components} (N = {block})",
                )
        first = [row for row in summary if row["block"] == blocks[0]]
        observation = next(r for r in first if r["method"] == "observation-only")
        _level(axis, observation, field, "tab:gray", "-", "observation-only")
        floor = next(r for r in first if r["method"].startswith("floor"))
        label = f"{floor['method']}, N = {floor['n_particles']}"
        _level(axis, floor, field, "black", "-", label)
        axis.set_xscale("log")
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.minorticks_off()
        axis.set_xlabel(f"training series ({results['settings']['n_steps']} steps)")
        if field == "mse":
            axis.set_yscale("log")
            axis.set_ylabel("held-out filtered-state MSE")
            axis.set_title("held-out MSE (lower is better)")
        else:
            axis.set_ylabel("held-out log-likelihood per step")
            axis.set_title("log-likelihood per step (higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    figure.suptitle(
        f"{results['experiment']}: learning curve, mean and standard error over "
        f"{results['settings']['runs']} runs"
    )
    n_rows = -(-len(labels) // 4)
    figure.tight_layout(rect=(0, 0.045 * n_rows + 0.02, 1, 1))
    return figure


def plot_results(results, directory=None):
    """Draw one test trajectory, the MSE bars and the learning curve.

    Needs matplotlib (the ``plot`` extra). The learning curve plots
    StateMixFilter's held-out MSE (left) and log-likelihood per step (right)
    against the number of training series, one line per ``S`` and ``N`` (mean
    and standard error over runs), with the bootstrap, auxiliary and improved
    auxiliary filters at the same ``N``, observation-only (MSE only) and the
    floor as horizontal lines (shaded: one standard error).

    Parameters
    ----------
    results : dict
        From :func:`run_experiment`.
    directory : path-like, default=None
        Where to write ``trajectory.png``, ``mse.png`` and ``learning_curve.png``;
        None keeps the figures open instead (for scripts and the example
        gallery).

    Returns
    -------
    files_or_figures : list
        The paths written, or the figures when ``directory`` is None.
    """
    import matplotlib.pyplot as plt

    outputs = []

    def finish(figure, filename, tight=True):
        if tight:
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
    labels, means, errors = [], [], []
    for row in results["summary"]:
        label = row["method"]
        if row["n_components"]:
            label += f" S={row['n_components']}"
        if row.get("n_train") is not None:
            label += f"\n{row['n_train']} series"
        label += f"\nN={row['n_particles']}" if row["n_particles"] else ""
        if label in labels:
            continue
        labels.append(label)
        means.append(row["mse"])
        errors.append(row["mse_standard_error"] or 0.0)
    figure, axis = plt.subplots(figsize=(max(9.0, 0.55 * len(labels)), 4.5))
    axis.bar(range(len(labels)), means, yerr=errors, capsize=3)
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("filtered-state MSE")
    axis.set_yscale("log")
    axis.set_title(
        f"{results['experiment']}: MSE over {results['settings']['runs']} runs"
    )
    finish(figure, "mse.png")
    figure = _plot_learning_curve(results, plt)
    if figure is not None:
        finish(figure, "learning_curve.png", tight=False)
    return outputs
