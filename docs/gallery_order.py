"""The order of the example gallery: a tour first, then the comparisons.

sphinx-gallery sorts the examples of a folder with a key of their file names; this
one follows the list below (a file not listed goes last, by name).
"""

ORDER = [
    "plot_lorenz96_trajectories.py",
    "plot_linear_gaussian_kalman.py",
    "plot_smoothing_lorenz96.py",
    "plot_forecast_fan_chart.py",
    "plot_training_curves.py",
    "plot_grid_search_n_components.py",
    "plot_kuramoto_phases.py",
    "plot_lorenz96_comparison.py",
    "plot_kuramoto_comparison.py",
    "plot_linear_gaussian_comparison.py",
    "plot_reproduction_table.py",
]


class ExampleOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        """Return the position of ``filename`` in :data:`ORDER`, then its name."""
        name = str(filename).rsplit("/", 1)[-1]
        position = ORDER.index(name) if name in ORDER else len(ORDER)
        return (position, name)

    def __repr__(self):
        """Name the key, so that Sphinx can tell whether the configuration changed."""
        return "ExampleOrder"
