"""Run the README's quick-start job (or it with extra overrides) and print the figures README quotes.

python scripts/measure_default_job.py [--record] [hydra overrides ...]

It runs `python -m resnext.train <overrides>` in a fresh temporary directory, exactly as a user would,
then reads the run's metrics.jsonl: wall time (process start to exit), Acc@1 after each epoch, best
Acc@1, and the mean loss of the first 10 steps (from train.log's per-step lines at print_freq=1 it
would be exact; here from the first epoch record's lines). With --record it also writes
scripts/default_job.json: the figures, the composed recipe and a fingerprint of the synthetic data,
which tests/test_default_job.py compares with README.md and with the code, so neither drifts silently.
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

HERE = Path(__file__).resolve().parent
RECORD = HERE / "default_job.json"


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
        from tests.default_job import recipe_fingerprint  # the same function the guard test calls

        RECORD.write_text(json.dumps({
            "command": "python -m resnext.train", "wall_time_s": round(wall), "acc1_per_epoch": acc,
            "best_acc1": round(result["best_acc1"], 1), **recipe_fingerprint()}, indent=2) + "\n")
        print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
