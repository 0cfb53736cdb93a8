"""The whole sweep's predicted cost, from its jobs' probe.json (a multirun with launch.probe=true).

Written at the end of the multirun (the sweep callback's on_multirun_end) as probe_summary.json and
probe_summary.md in the sweep directory: one row per job (its predicted epoch and run time, peak memory,
whether its measurement came from another job of the same combination) and the sweep's total: the sum of the
jobs' run times, and the wall time when `slots` jobs run at once (jobs handed out in order to whichever slot
frees first, as Hydra's parallel launchers do).
"""
from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from ..training.eta import clock
from ..training.probe_report import PROBE_FILE



def parallel_slots(launcher: Any) -> int:
    """How many jobs the sweep's launcher runs at once: joblib's n_jobs, submitit's array_parallelism, else 1."""
    for key in ("n_jobs", "array_parallelism"):
        value = OmegaConf.select(launcher, key) if launcher is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return 1


def _makespan(totals: List[float], slots: int) -> float:
    free = [0.0] * max(1, slots)
    for seconds in totals:
        heapq.heapreplace(free, free[0] + seconds)
    return max(free)


def _rows(sweep_dir: Path) -> List[Dict[str, Any]]:
    rows = []
    # Hydra numbers jobs 0, 1, ... 10: numerically where the names allow it.
    for path in sorted(sweep_dir.glob(f"*/{PROBE_FILE}"), key=lambda p: p.parent.name.zfill(8)):
        report = json.loads(path.read_text())
        overrides = path.parent / ".hydra" / "overrides.yaml"
        predicted, measured = report["predicted"], report["measured"]
        rows.append({"job": path.parent.name,
                     "overrides": list(OmegaConf.load(overrides)) if overrides.is_file() else [],
                     "from_cache": report["from_cache"], "step_s": measured["step_s"]["mean"],
                     "epoch_s": predicted["epoch_s"], "epoch_s_pm": predicted["epoch_s_pm"],
                     "total_s": predicted["total_s"], "total_s_pm": predicted["total_s_pm"],
                     "peak_bytes": max(r["peak_bytes"] for r in measured["memory"]),
                     "checkpoint_bytes": predicted["checkpoint_bytes"]})
    return rows


def write_probe_summary(sweep_dir: Path, launcher: Any = None) -> Optional[Dict[str, Any]]:
    """probe_summary.json/.md for a probed sweep; None (nothing written) when no job was probed."""
    sweep_dir = Path(sweep_dir)
    rows = _rows(sweep_dir)
    if not rows:
        return None
    slots = parallel_slots(launcher)
    totals = [r["total_s"] for r in rows]
    summary = {"jobs": rows, "probed": sum(not r["from_cache"] for r in rows), "slots": slots,
               "sum_of_jobs_s": sum(totals), "sum_of_jobs_s_pm": sum(r["total_s_pm"] for r in rows),
               "sweep_wall_s": _makespan(totals, slots),
               "checkpoint_bytes": sum(r["checkpoint_bytes"] or 0 for r in rows)}
    (sweep_dir / "probe_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Probe: predicted cost of this sweep ({len(rows)} jobs, {summary['probed']} combination(s) measured)",
             "", f"Whole sweep: {clock(summary['sweep_wall_s'])} with {slots} job(s) at once "
             f"(jobs together {clock(summary['sum_of_jobs_s'])} +- {clock(summary['sum_of_jobs_s_pm'])}); "
             f"checkpoints {summary['checkpoint_bytes'] / 2 ** 30:.2f} GiB (one per job)", "",
             "| job | overrides | step (s) | epoch | run | peak memory (GiB) | measured here |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['job']} | {' '.join(r['overrides'])} | {r['step_s']:.3f} | {clock(r['epoch_s'])} | "
              f"{clock(r['total_s'])} | {r['peak_bytes'] / 2 ** 30:.2f} | "
              f"{'no (cached)' if r['from_cache'] else 'yes'} |"
              for r in rows]
    (sweep_dir / "probe_summary.md").write_text("\n".join(lines) + "\n")
    return summary
