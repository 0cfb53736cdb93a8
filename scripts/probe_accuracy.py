"""How close is launch.probe's prediction to the run it predicts? Probe, then train, the same configurations.

python scripts/probe_accuracy.py [--only NAME] [--out DIR]

For each configuration below it runs `python -m resnext.train <overrides> launch.probe=true`, then the same
command without the probe, each in its own run directory, and compares the probe's predicted epoch time
(probe.json predicted.epoch_s: training steps + validation) with the epochs the run measured (metrics.jsonl
`seconds`, also training + validation), and the predicted total with the run's wall_time_s. It prints one
Markdown table row per configuration, with the load average before and after, and the run's median FPS@all
divided by the probe's images/s: far from 1, the machine itself ran at another speed during the run than
during the probe (a shared machine), which no prediction from the probe can know. Heavy: run it under the lock,
`flock /work/wt/HEAVY.lock python scripts/probe_accuracy.py`. Needs scikit-learn for the JPEG folder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
QUIET = ["logger=none", "progress_bar=false", "print_freq=4", "checkpoint.save=last", "fps_warmup_steps=2"]
# The default synthetic job (ResNeXt-50, 32 px), shortened to minutes on 2 shared cores: batch 32, 8 steps an epoch.
SYNTHETIC = ["dataset=synthetic", "dataset.batch_size=32", "dataset.train_size=256", "dataset.val_size=100",
             "dataset.val_batch_size=50", "epochs=2"]
CONFIGS: Dict[str, List[str]] = {
    "synthetic 32 px, batch 32, 1 process": SYNTHETIC,
    "JPEG folder 64 px, batch 8, 1 worker": ["dataset=folder", "dataset.root={folder}", "dataset.image_size=64",
                                             "dataset.batch_size=8", "dataset.val_batch_size=50", "dataset.workers=1",
                                             "dataset.val_subset=100", "max_steps_per_epoch=8", "epochs=2"],
    "synthetic 32 px, batch 32, 2 ranks gloo": [*SYNTHETIC, "device=cpu", "device.nprocs=2", "distributed=spawn"],
}
PROBE_STEPS = 8  # --probe-steps: 8 is one epoch of these configurations; 20 (the key's default) spans epochs


def _train(args: List[str], run_dir: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "-m", "resnext.train", *args, f"hydra.run.dir={run_dir}"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def measure(name: str, overrides: List[str], work: Path, probe_steps: int = PROBE_STEPS) -> Dict[str, float]:
    load = os.getloadavg()
    probe_dir, run_dir = work / f"{len(list(work.iterdir()))}-probe", work / f"{len(list(work.iterdir()))}-run"
    _train([*overrides, *QUIET, "launch.probe=true", f"launch.probe_steps={probe_steps}"], probe_dir)
    _train([*overrides, *QUIET], run_dir)
    predicted = json.loads((probe_dir / "probe.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [e["seconds"] for e in epochs if "seconds" in e and "epoch" in e]
    wall = json.loads((run_dir / "result.json").read_text())["wall_time_s"]
    p = predicted["predicted"]
    steady = statistics.fmean(seconds[1:]) if len(seconds) > 1 else seconds[0]
    run_fps = statistics.median(e["fps"] for e in epochs if "fps" in e)
    return {"name": name, "load": load[0], "load_after": os.getloadavg()[0],
            "speed": run_fps / predicted["measured"]["images_per_s"]["global"], "pred_epoch": p["epoch_s"], "pm": p["epoch_s_pm"], "epoch": steady,
            "first_epoch": seconds[0], "pred_first": p["epoch_s"] + predicted["measured"]["warmup_extra_s"],
            "pred_total": p["total_s"], "wall": wall, "steps": p["steps_per_epoch"],
            "timed": predicted["measured"]["timed_steps"]}


def row(r: Dict[str, float]) -> str:
    err = 100 * (r["pred_epoch"] - r["epoch"]) / r["epoch"]
    err_total = 100 * (r["pred_total"] - r["wall"]) / r["wall"]
    return (f"| {r['name']} | {r['steps']} | {r['timed']} | {r['pred_epoch']:.1f} +- {r['pm']:.1f} | "
            f"{r['epoch']:.1f} | "
            f"{err:+.0f}% | {r['pred_total']:.0f} | {r['wall']:.0f} | {err_total:+.0f}% | {r['speed']:.2f} | "
            f"{r['load']:.2f} / {r['load_after']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the configurations whose name contains this")
    parser.add_argument("--probe-steps", type=int, default=PROBE_STEPS, help="launch.probe_steps of the probes")
    parser.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        folder = work / "digits"
        print("| configuration | steps/epoch | timed steps | predicted epoch (s) | measured epoch 2 (s) | error | "
              "predicted run (s) | measured run (s) | error | run's FPS@all / probe's img/s | load (1 min) before / after |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, overrides in CONFIGS.items():
            if args.only and args.only not in name:
                continue
            if "{folder}" in " ".join(overrides) and not folder.is_dir():
                subprocess.run([sys.executable, str(HERE / "digits_folder.py"), str(folder)], check=True,
                               stdout=subprocess.DEVNULL)
            print(row(measure(name, [o.format(folder=folder) for o in overrides], work, args.probe_steps)), flush=True)


if __name__ == "__main__":
    main()
