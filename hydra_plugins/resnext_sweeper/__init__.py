"""Hydra finds sweepers only inside the hydra_plugins namespace: this package holds resnext's (hydra/sweeper=resnext)."""
