"""Measure what pruning and asynchronous slots save: the same 16-trial sweep with pruner=none and pruner=asha.

python scripts/sweep_benchmark.py [--out DIR] [--pruners none,asha] [--dry-run | --no-run] [hydra overrides ...]

Each sweep is `python -m resnext.train -m sweep=asha_lr_bs` (resnext sweeper, TPE with seed 0, optim.lr
log-uniform in [1e-3, 1] x dataset.batch_size in {32, 64, 128}) with 16 trials of 6 epochs on 2 slots
(hydra/launcher=parallel_cpu: each slot's job gets one of the 2 cores), on a shrunk synthetic set the model
learns within those epochs, chosen so that the pruner=none sweep takes ~8 minutes on an idle 2-core CPU. Only
the pruner differs between the two sweeps. It then reads each sweep directory with the summary code
(resnext.sweeps) and prints a Markdown table for README: epochs spent (target: asha <= 50% of none), wall time,
best Acc@1 (target: within 1 point of none), slot idle time (target: <= 5% of the sweep's wall time), and what
launching the same trials in batches of 2 would have left idle. That last column is COMPUTED from the measured
trial durations (each batch waits for its slowest trial), not run.

Heavy: run it under the machine's lock (`flock /work/wt/HEAVY.lock python scripts/sweep_benchmark.py`).
--dry-run prints the commands; --no-run reads sweeps already in --out and prints the table again.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# 16 px images, a few hundred of them: each epoch takes seconds on one core, and Acc@1 still rises over
# 6 epochs and differs between learning rates (what a pruner must see to prune the right trials).
DATA = ["dataset=synthetic", "dataset.image_size=16", "dataset.train_size=256", "dataset.val_size=200",
        "dataset.val_batch_size=200", "dataset.workers=0"]
SWEEP = ["sweep=asha_lr_bs", "hydra.sweeper.sampler=tpe", "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=16",
         "hydra.sweeper.n_jobs=2", "hydra/launcher=parallel_cpu", "hydra.launcher.n_jobs=2", "epochs=6"]
QUIET = ["logger=none", "progress_bar=false", "checkpoint.save=none", "print_freq=1000"]


def sweep_command(pruner: str, sweep_dir: Path, extra: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "resnext.train", *SWEEP, f"hydra.sweeper.pruner={pruner}", *DATA, *QUIET,
            f"hydra.sweep.dir={sweep_dir}", *extra]


def run_sweep(command: List[str], log_path: Path) -> float:
    """Run one sweep, its output into log_path; returns the process's wall time in seconds."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # this checkout's resnext first
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"warning: exit {proc.returncode} after {seconds:.0f} s (see {log_path}); its trials are still read",
              file=sys.stderr)
    return seconds


def batched_idle_percent(durations: Sequence[float], slots: int) -> Optional[float]:
    """Idle share of slot time if the trials (in trial order) had been launched `slots` at a time, each batch
    waiting for its slowest: per batch, slots x its longest trial minus the batch's trial seconds."""
    if not durations:
        return None
    batches = [durations[i:i + slots] for i in range(0, len(durations), slots)]
    offered = sum(slots * max(batch) for batch in batches)
    return 100.0 * (offered - sum(durations)) / offered if offered else None


def measure(sweep_dir: Path, slots: int) -> Dict[str, object]:
    """The figures of one finished sweep, read as its summary reads them."""
    from resnext.sweeps import results, trial_summary

    sweep = trial_summary.summarise(sweep_dir, results.collect_jobs(sweep_dir))
    durations = [t.job.wall_time_s for t in sweep.trials if t.job.wall_time_s is not None]
    counts = {s: sum(t.status == s for t in sweep.trials) for s in ("completed", "pruned", "failed")}
    return {"trials": len(sweep.trials), **counts, "spent": sweep.totals.spent, "unpruned": sweep.totals.unpruned,
            "wall_s": sweep.idle.wall_s if sweep.idle else sweep.wall_s,
            "best": sweep.best.job.best_acc1 if sweep.best else None, "best_trial": sweep.best.label if sweep.best
            else None, "idle": sweep.idle.idle_percent if sweep.idle else None,
            "batched_idle": batched_idle_percent(durations, slots)}


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def table(figures: Dict[str, Dict[str, object]], slots: int) -> str:
    header = ["pruner", "trials (completed / pruned / failed)", "epochs spent (of unpruned)", "wall time (s)",
              "best Acc@1 (trial)", "slot idle, async slots (measured)",
              f"slot idle, batches of {slots} (computed)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pruner, f in figures.items():
        best = "n/a" if f["best"] is None else f"{f['best']:.1f} ({f['best_trial']})"
        lines.append(f"| {pruner} | {f['trials']} ({f['completed']} / {f['pruned']} / {f['failed']}) | "
                     f"{f['spent']} of {f['unpruned']} | {_num(f['wall_s'])} | {best} | {_pct(f['idle'])} | "
                     f"{_pct(f['batched_idle'])} |")
    return "\n".join(lines)


def verdicts(figures: Dict[str, Dict[str, object]]) -> List[str]:
    """The issue's targets, each with the figures behind it."""
    lines = []
    none, asha = figures.get("none"), figures.get("asha")
    if none and asha and none["spent"]:
        share = 100.0 * asha["spent"] / none["spent"]
        lines.append(f"- epochs: asha spent {share:.0f}% of none's (target <= 50%): "
                     f"{'met' if share <= 50 else 'missed'}")
    if none and asha and none["best"] is not None and asha["best"] is not None:
        gap = none["best"] - asha["best"]
        lines.append(f"- best Acc@1: asha {asha['best']:.1f} vs none {none['best']:.1f}, {gap:+.1f} points "
                     f"(target: within 1): {'met' if gap <= 1.0 else 'missed'}")
    for pruner, f in figures.items():
        if f["idle"] is not None:
            lines.append(f"- slot idle ({pruner}): {f['idle']:.1f}% (target <= 5%): "
                         f"{'met' if f['idle'] <= 5.0 else 'missed'}")
    return lines


def hardware() -> str:
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core {model}, no accelerator"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "sweep_benchmark")
    parser.add_argument("--pruners", default="none,asha")
    parser.add_argument("--dry-run", action="store_true", help="print the sweep commands, run nothing")
    parser.add_argument("--no-run", action="store_true", help="read the sweeps already in --out")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both sweeps")
    args = parser.parse_args(argv)
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    slots = int(next((o.split("=", 1)[1] for o in [*SWEEP, *args.overrides]
                      if o.startswith("hydra.sweeper.n_jobs=")), 1))
    commands = {p: sweep_command(p, args.out.resolve() / p, args.overrides) for p in pruners}
    if args.dry_run:
        print("\n".join(shlex.join(c) for c in commands.values()))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    when, load = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), load_average()
    seconds = {}
    for pruner, command in commands.items():
        if not args.no_run:
            print(f"{pruner}: {shlex.join(command)}", flush=True)
            seconds[pruner] = run_sweep(command, args.out / f"{pruner}.log")
            print(f"{pruner}: {seconds[pruner]:.0f} s", flush=True)
    figures = {p: measure(args.out.resolve() / p, slots) for p in pruners}
    empty = [p for p, f in figures.items() if not f["trials"]]
    if empty:
        print(f"no trials in {', '.join(str(args.out / p) for p in empty)}: nothing to compare", file=sys.stderr)
        return 1
    print()
    print(f"Measured {when} on {hardware()}; load average before: {load}"
          + ("" if args.no_run else "; process wall times: "
             + ", ".join(f"{p} {s:.0f} s" for p, s in seconds.items())) + ".")
    shared = shlex.join([*SWEEP, *DATA, *QUIET, *args.overrides])
    print(f"Command: `python scripts/sweep_benchmark.py{' ' + shlex.join(args.overrides) if args.overrides else ''}`"
          f"; each sweep: `python -m resnext.train {shared} hydra.sweeper.pruner=<{'|'.join(pruners)}> "
          "hydra.sweep.dir=<out>/<pruner>`.")
    print()
    print(table(figures, slots))
    print()
    print("\n".join(verdicts(figures)))
    print(f"\nThe batches column is computed from the measured trial durations (trials in order, {slots} per batch, "
          "each batch waiting for its slowest), not run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
