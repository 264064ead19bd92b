"""stochdepth: train very deep residual networks with stochastic depth (Huang et al., ECCV 2016).

Train short, test deep: during training each residual block is skipped (its branch not
computed) with probability 1 - p_l; at test time the whole network runs with each
branch scaled by p_l.
"""

from stochdepth.depth import fill_missing_grads_with_zeros, fold_survival, survival_probs, survival_schedule
from stochdepth.models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "fill_missing_grads_with_zeros",
    "fold_survival",
    "list_models",
    "survival_probs",
    "survival_schedule",
]
