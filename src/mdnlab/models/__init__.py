"""The LightningModules: the MSE baseline and the Mixture Density Network, on one base class
(``base``) that reads like a standard LightningModule; the fast epoch loop lives in ``fast_loop``."""

from mdnlab.models.mdn import COVARIANCES, SIGMA_TRANSFORMS, MixtureDensityNetwork
from mdnlab.models.mse import MSERegression, fit_least_squares

__all__ = ["COVARIANCES", "SIGMA_TRANSFORMS", "MSERegression", "MixtureDensityNetwork", "fit_least_squares"]
