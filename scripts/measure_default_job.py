"""Run the README's quick-start job (or it with extra overrides) and print the figures README quotes.

python scripts/measure_default_job.py [--record] [hydra overrides ...]

It runs `python -m resnext.train <overrides>` in a fresh temporary directory, exactly as a user would,
then reads the run's metrics.jsonl and result.json: wall time (process start to exit), Acc@1 after each
epoch and the best. With --record it also writes scripts/default_job.json: the figures, the composed
recipe and a fingerprint of the synthetic data. tests/test_default_job.py checks that README.md quotes
those figures and that the recipe and data are still the ones measured, so a change to either fails a
test until the job is measured again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

HERE = Path(__file__).resolve().parent
RECORD = HERE / "default_job.json"


# Keys that change where or how verbosely a run reports, not what it learns.
NOT_RECIPE = ("print_freq", "progress_bar", "tensorboard", "launch", "checkpoint", "resume", "evaluate",
              "fps_warmup_steps", "device", "distributed")


def recipe_fingerprint() -> Dict[str, Any]:
    """The default job's composed recipe and a hash of a small set drawn by the same generator."""
    import hashlib

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from resnext.config.schema import register_configs
    from resnext.data.synthetic import make_synthetic

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
        cfg = compose(config_name="config")
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    recipe = {k: v for k, v in resolved.items() if k not in NOT_RECIPE}
    images, targets = make_synthetic(64, cfg.dataset.image_size, cfg.seed, cfg.dataset.num_classes)
    digest = hashlib.sha256(images.numpy().tobytes() + targets.numpy().tobytes()).hexdigest()
    return {"recipe": recipe, "synthetic_data_sha256": digest}


def run_job(overrides):
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "resnext.train", "progress_bar=false", *overrides], cwd=cwd,
                              capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        run_dir = next(Path(cwd, "outputs").glob("*/*/metrics.jsonl")).parent
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        result = json.loads((run_dir / "result.json").read_text())
    return wall, records, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write scripts/default_job.json")
    args, overrides = parser.parse_known_args(argv)
    wall, records, result = run_job(overrides)
    acc = [round(r["acc1"], 1) for r in records]
    print(f"command: python -m resnext.train {' '.join(overrides)}".rstrip())
    print(f"hardware: {os.cpu_count()}-core {platform.machine()} CPU, torch threads default")
    print(f"wall time: {wall:.0f} s; Acc@1 per epoch: {acc}; best Acc@1 {result['best_acc1']:.1f}")
    print("train loss per epoch: " + ", ".join(f"{r['train_loss']:.3f}" for r in records))
    if args.record:
        if overrides:
            sys.exit("--record is for the default job only: no overrides")
        RECORD.write_text(json.dumps({
            "command": "python -m resnext.train", "wall_time_s": round(wall), "acc1_per_epoch": acc,
            "best_acc1": round(result["best_acc1"], 1), **recipe_fingerprint()}, indent=2) + "\n")
        print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
