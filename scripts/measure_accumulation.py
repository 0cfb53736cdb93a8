"""Gradient accumulation against data parallelism, measured (README "Batch size and gradient accumulation").

python scripts/measure_accumulation.py [--steps-per-epoch 5] [--epochs 6] [--out DIR]
python scripts/measure_accumulation.py --cpu-estimate

Global batch 128 as 1 rank x 4 micro-steps of 32 against 4 gloo ranks x 32, from the same seed (CPU):
1. the largest absolute weight difference after one optimizer step, with model.norm=frozen (no batch statistics);
2. the training loss of both over a short run with the default BatchNorm: each epoch's train_loss is the mean over
   every sample of every rank (metrics.jsonl), so the two curves average the same images.
Each run is `python -m resnext.train` in a fresh process; run it under `flock /work/wt/HEAVY.lock`.
--cpu-estimate instead checks batch_size=auto's CPU estimate (resnext/training/batch_fit.py) against the peak RSS
growth of one real step, each size in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

COMMON = ["device=cpu", "dataset=synthetic", "dataset.image_size=16", "dataset.batch_size=128", "seed=11",
          "logger=none", "progress_bar=false", "validate=false", "print_freq=1", "fps_warmup_steps=1"]
ACCUM = ["optim.accum_steps=4"]
RANKS = ["distributed=spawn", "device.nprocs=4"]


def train(run_dir: Path, overrides) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "resnext.train", *COMMON, *overrides, f"hydra.run.dir={run_dir}"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run_dir.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def weights(run_dir: Path):
    return torch.load(run_dir / "checkpoint.pth.tar", map_location="cpu", weights_only=False)["state_dict"]


def losses(run_dir: Path):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rss_child(batch: int, size: int) -> None:
    """One fresh process: batch_fit's estimate of one step's batch-dependent memory against its peak RSS growth."""
    import resource

    from hydra import compose, initialize_config_module

    from resnext.config.schema import register_configs
    from resnext.runtime.devices import Device, RankContext
    from resnext.training import batch_fit

    register_configs()
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["device=cpu", "dataset.batch_size=auto",
                                                       f"dataset.image_size={size}", "dataset.auto_memory_gib=64"])
    trial = batch_fit._Trial(cfg, RankContext(0, 0, 1, Device("cpu"), "."))
    trial.step(2)  # gradients, optimizer state and allocator pools exist before the measured step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trial.step(batch)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    trial.cpu_fits(1)  # after the measured step: its forwards of 2 and 4 samples would raise the peak before it
    estimate = batch_fit.CPU_TRANSIENT * batch * trial.per_sample
    print(json.dumps({"batch": batch, "size": size, "saved_mib": batch * trial.per_sample / 2 ** 20,
                      "estimate_mib": estimate / 2 ** 20, "rss_growth_mib": grown / 2 ** 20}))


def cpu_estimate() -> None:
    print("| batch x px | saved activations (MiB) | estimate x%.1f (MiB) | peak RSS growth (MiB) |" % 1.5)
    print("|---|---|---|---|")
    for batch, size in ((16, 32), (64, 32), (32, 64)):
        proc = subprocess.run([sys.executable, __file__, "--rss-child", str(batch), str(size)], capture_output=True,
                              text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {batch} x {size} | {r['saved_mib']:.0f} | {r['estimate_mib']:.0f} | {r['rss_growth_mib']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-per-epoch", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cpu-estimate", action="store_true")
    parser.add_argument("--rss-child", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(*args.rss_child)
    if args.cpu_estimate:
        return cpu_estimate()
    out = args.out or Path(tempfile.mkdtemp(prefix="accum-"))
    one_step = ["model.norm=frozen", "epochs=1", "max_steps_per_epoch=1", "dataset.train_size=128"]
    train(out / "step_accum", [*one_step, *ACCUM])
    train(out / "step_ranks", [*one_step, *RANKS])
    a, b = weights(out / "step_accum"), weights(out / "step_ranks")
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    scale = max(a[k].abs().max().item() for k in a if a[k].is_floating_point())
    print(f"one optimizer step, model.norm=frozen: max |w_accum - w_ranks| = {diff:.3g} (largest |w|: {scale:.3g})")

    steps = args.steps_per_epoch * args.epochs
    curve = [f"epochs={args.epochs}", f"max_steps_per_epoch={args.steps_per_epoch}",
             f"dataset.train_size={128 * args.steps_per_epoch}"]
    train(out / "curve_accum", [*curve, *ACCUM])
    train(out / "curve_ranks", [*curve, *RANKS])
    la, lr = losses(out / "curve_accum"), losses(out / "curve_ranks")
    print(f"{steps} optimizer steps, default BatchNorm: train_loss per epoch of {args.steps_per_epoch} steps")
    print("| epoch | 1 rank x 4 micro-steps of 32 | 4 ranks x 32 | difference |")
    print("|---|---|---|---|")
    for epoch, (x, y) in enumerate(zip(la, lr)):
        print(f"| {epoch} | {x:.4f} | {y:.4f} | {x - y:+.4f} |")
    (out / "summary.json").write_text(json.dumps({"max_abs_weight_diff": diff, "largest_abs_weight": scale,
                                                  "loss_accum": la, "loss_ranks": lr}, indent=2))
    print(f"runs and summary.json in {out}")


if __name__ == "__main__":
    main()
