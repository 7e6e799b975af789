"""statemix-sk: learn state-space dynamics with differentiable particle filters.

The estimator layer (``StateMixFilter``) builds on the modules below: Gaussian
mixtures, small networks, resampling schemes, models with known densities, the
datasets of the experiments and the one differentiable particle-filter loop.
``PerStepTransformer`` puts scikit-learn preprocessing in front of it for several
series.
"""

from . import (
    baselines,
    datasets,
    filtering,
    forecasting,
    kalman,
    mixtures,
    models,
    networks,
    observations,
    preprocessing,
    resampling,
    smoothing,
)
from .datasets import make_kuramoto, make_linear_gaussian, make_lorenz96
from .estimator import StateMixFilter
from .estimator_base import InconsistentVersionWarning
from .filtering import DegeneracyWarning, FilterResult, particle_filter
from .forecasting import ForecastResult, forecast
from .kalman import kalman_filter
from .known_model_filters import (
    AuxiliaryFilter,
    BootstrapFilter,
    ImprovedAuxiliaryFilter,
    LocallyOptimalFilter,
)
from .models import KuramotoModel, LinearGaussianModel, Lorenz96Model
from .observations import GaussianObservation, LinearGaussianObservation
from .preprocessing import PerStepTransformer
from .smoothing import ffbs_smoothed_moments

__version__ = "0.1.0.dev0"

__all__ = [
    "AuxiliaryFilter",
    "BootstrapFilter",
    "DegeneracyWarning",
    "FilterResult",
    "ForecastResult",
    "GaussianObservation",
    "ImprovedAuxiliaryFilter",
    "InconsistentVersionWarning",
    "KuramotoModel",
    "LinearGaussianModel",
    "LinearGaussianObservation",
    "LocallyOptimalFilter",
    "Lorenz96Model",
    "PerStepTransformer",
    "StateMixFilter",
    "__version__",
    "baselines",
    "datasets",
    "ffbs_smoothed_moments",
    "filtering",
    "forecast",
    "forecasting",
    "kalman",
    "kalman_filter",
    "make_kuramoto",
    "make_linear_gaussian",
    "make_lorenz96",
    "mixtures",
    "models",
    "networks",
    "observations",
    "particle_filter",
    "preprocessing",
    "resampling",
    "smoothing",
]
