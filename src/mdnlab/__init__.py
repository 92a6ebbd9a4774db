"""mdnlab: Mixture Density Networks on inverse problems (Lightning + Hydra)."""
