"""mdnlab's Hydra launcher plugin: ``hydra/launcher=stacked`` (see ``stacked_launcher``).
Hydra finds plugins in the ``hydra_plugins`` namespace package, so it lives here, not in mdnlab."""
