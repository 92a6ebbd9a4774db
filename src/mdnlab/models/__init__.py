"""The LightningModules: the MSE baseline, the Mixture Density Network and a conditional flow, on
one base class (``base``) that reads like a standard LightningModule; the fast epoch loop lives in
``fast_loop``."""

from mdnlab.models.flow import ConditionalFlow
from mdnlab.models.mdn import COVARIANCES, SIGMA_TRANSFORMS, MixtureDensityNetwork
from mdnlab.models.mse import MSERegression, fit_least_squares

__all__ = [
    "COVARIANCES",
    "SIGMA_TRANSFORMS",
    "ConditionalFlow",
    "MSERegression",
    "MixtureDensityNetwork",
    "fit_least_squares",
]
