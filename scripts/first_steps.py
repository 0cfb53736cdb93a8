"""Training loss of the first N steps of a recipe: the number that shows whether a recipe starts well.

python scripts/first_steps.py [--steps 10] [hydra overrides ...]

It composes the same config `python -m resnext.train <overrides>` would run and trains its first N optimizer
steps on CPU with the run's own setup and loop (resnext.training.trainer.build_components, engine.train_one_epoch):
the batch resolved as the run resolves it (auto too), gradient accumulation, the per-iteration schedule whose
length comes from the full run (so warm-up is the recipe's). It prints each step's lr and loss (with
optim.accum_steps > 1, the loss of the step's last micro-batch) and their mean.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from resnext.config.schema import register_configs
from resnext.runtime.devices import Device, RankContext
from resnext.training.engine import train_one_epoch
from resnext.training.trainer import build_components, loop_settings


def first_losses(overrides, steps: int):
    """[(step, lr, loss)] of the first `steps` optimizer steps of epoch 0."""
    register_configs()
    GlobalHydra.instance().clear()  # callable after another compose in the same process (tests)
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    rows = []

    def record(step: int, values) -> None:  # the loop counts steps from 1
        rows.append((step - 1, values["lr"], values["loss"]))

    with tempfile.TemporaryDirectory() as run_dir:
        ctx = RankContext(0, 0, 1, Device("cpu"), Path(run_dir))
        parts = build_components(cfg, ctx)
        settings = dataclasses.replace(loop_settings(parts.cfg, ctx), print_freq=1, max_steps=steps,
                                       progress_bar=False, on_step=record)
        parts.loaders.train_sampler.set_epoch(0)
        train_one_epoch(parts.model, parts.loaders.train, parts.criterion, parts.optimizer, parts.scheduler,
                        parts.amp, ctx, 0, settings)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args, overrides = parser.parse_known_args(argv)
    rows = first_losses(overrides, args.steps)
    for step, lr, loss in rows:
        print(f"step {step:3d}  lr {lr:.5f}  loss {loss:.4f}")
    print(f"mean loss of the first {len(rows)} steps: {statistics.mean(r[2] for r in rows):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
