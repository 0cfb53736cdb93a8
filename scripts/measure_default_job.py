"""Run the README's quick-start job (or it with extra overrides) and print the figures README quotes.

python scripts/measure_default_job.py [--runs N] [--python OTHER_PYTHON ...] [--record] [hydra overrides ...]

It runs `python -m resnext.train <overrides>` N times (default 3), one after another, each in a fresh
temporary directory, exactly as a user would, then reads each run's metrics.jsonl and result.json: wall
time (process start to exit), Acc@1 after each epoch and the best, a SHA-256 of every epoch's losses and
accuracies at full precision (equal hashes: bit-identical learning), and how busy the machine was otherwise:
the CPU time every other process used while the job ran (from /proc/stat, less the job's own), as a share of
one core (a load average would mostly count the job itself and the run before it). Each --python (another
environment's interpreter, e.g. a torch version from scripts/compat.sh) runs the job once more under it:
seeded runs repeat bit for bit on one build of torch, and differ between builds.

With --record it also writes scripts/default_job.json: every run, the spread, the composed recipe and a
fingerprint of the synthetic data. tests/test_default_job.py checks that README.md quotes that spread and
that the recipe and data are still the ones measured, so a change to either fails a test until the job is
measured again.
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


def torch_version(python: str) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                          check=True).stdout.strip()


def results_sha256(records) -> str:
    """What the run learned, to the last bit: each epoch's losses and accuracies (not its times or FPS)."""
    import hashlib

    learned = [[r[k] for k in ("train_loss", "train_acc1", "val_loss", "acc1", "acc5")] for r in records]
    return hashlib.sha256(json.dumps(learned).encode()).hexdigest()


def run_job(overrides, python: str = sys.executable):
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        proc = subprocess.run([python, "-m", "resnext.train", "progress_bar=false", *overrides], cwd=cwd,
                              capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        run_dir = next(Path(cwd, "outputs").glob("*/*/metrics.jsonl")).parent
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        result = json.loads((run_dir / "result.json").read_text())
    return wall, records, result


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (Linux's /proc/stat; not idle, not iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_once(overrides, python: str = sys.executable) -> Dict[str, Any]:
    busy, own = busy_cpu_seconds(), children_cpu_seconds()
    wall, records, result = run_job(overrides, python)
    others = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - own)
    return {"torch": torch_version(python), "results_sha256": results_sha256(records),
            "wall_time_s": round(wall), "others_cpu_share": round(max(others, 0.0) / wall, 2),
            "acc1_per_epoch": [round(r["acc1"], 1) for r in records],
            "train_loss_per_epoch": [round(r["train_loss"], 3) for r in records],
            "best_acc1": round(result["best_acc1"], 1)}


def spread(runs) -> Dict[str, Any]:
    """[min, max] of each figure README quotes, over the runs."""
    def span(values):
        return [min(values), max(values)]
    epochs = len(runs[0]["acc1_per_epoch"])
    return {"wall_time_s": span([r["wall_time_s"] for r in runs]),
            "best_acc1": span([r["best_acc1"] for r in runs]),
            "acc1_per_epoch": [span([r["acc1_per_epoch"][e] for r in runs]) for e in range(epochs)],
            "others_cpu_share": span([r["others_cpu_share"] for r in runs]),
            "bit_identical": len({r["results_sha256"] for r in runs}) == 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many times to run the job (default 3)")
    parser.add_argument("--python", action="append", default=[], help="also run the job once under this "
                        "interpreter (another torch); repeatable")
    parser.add_argument("--record", action="store_true", help="write scripts/default_job.json")
    args, overrides = parser.parse_known_args(argv)
    if args.record and overrides:
        sys.exit("--record is for the default job only: no overrides")
    print(f"command: python -m resnext.train {' '.join(overrides)}".rstrip())
    print(f"hardware: {os.cpu_count()}-core {platform.machine()} CPU, torch threads default")
    runs = []
    for index in range(args.runs):
        run = measure_once(overrides)
        runs.append(run)
        print(f"run {index + 1}/{args.runs} (torch {run['torch']}): wall time {run['wall_time_s']} s "
              f"(other processes: {run['others_cpu_share']} of a core); "
              f"Acc@1 per epoch {run['acc1_per_epoch']}; best Acc@1 {run['best_acc1']}; "
              f"train loss per epoch {run['train_loss_per_epoch']}", flush=True)
    summary = spread(runs)
    print(f"spread over {len(runs)} run(s): {json.dumps(summary)}")
    other_torch = []
    for python in args.python:
        run = measure_once(overrides, python)
        other_torch.append(run)
        print(f"torch {run['torch']} ({python}): wall time {run['wall_time_s']} s; Acc@1 per epoch "
              f"{run['acc1_per_epoch']}; best Acc@1 {run['best_acc1']}; same as the runs above: "
              f"{run['results_sha256'] == runs[0]['results_sha256']}", flush=True)
    if args.record:
        RECORD.write_text(json.dumps({"command": "python -m resnext.train", "runs": runs, "spread": summary,
                                      "other_torch": other_torch, **recipe_fingerprint()}, indent=2) + "\n")
        print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
