"""Mean training loss of the first N steps of a recipe: the number that shows whether a recipe starts well.

python scripts/first_steps.py [--steps 10] [hydra overrides ...]

It composes the same config `python -m resnext.train <overrides>` would run and builds the same model,
loader, optimizer and per-iteration schedule (the schedule's length comes from the full run, so warm-up
is the recipe's), then trains the first N steps on CPU and prints each step's loss and lr.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from resnext.config.schema import register_configs
from resnext.data import build_loaders
from resnext.runtime.devices import Device
from resnext.models.build import build_model
from resnext.training.optim import build_optimizer, build_scheduler, effective_lr


def first_losses(overrides, steps: int):
    register_configs()
    GlobalHydra.instance().clear()  # callable after another compose in the same process (tests)
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    seed = cfg.seed if cfg.seed is not None else 0
    torch.manual_seed(seed)
    loaders = build_loaders(cfg.dataset, seed=seed, rank=0, world_size=1, device_type="cpu")
    model = build_model(cfg.model, loaders.num_classes)
    optimizer = build_optimizer(cfg.optim, model, Device("cpu"), effective_lr(cfg.optim, cfg.dataset.batch_size))
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.epochs, len(loaders.train))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    loaders.train_sampler.set_epoch(0)
    model.train()
    rows = []
    for step, (images, target) in enumerate(loaders.train):
        if step >= steps:
            break
        lr = optimizer.param_groups[0]["lr"]
        loss = criterion(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        rows.append((step, lr, loss.item()))
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
