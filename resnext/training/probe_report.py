"""From the probe's measured steps to probe.json: step time, throughput, memory, the input verdict and the
predicted epoch, validation and run times, with the uncertainty the measured spread gives them.

Kept apart from the measuring (probe.py) because a sweep reuses one measurement for every job of the same
combination and only the predictions here are made again (steps per epoch, epochs and resume point differ).

Predicted epoch = steps per epoch x mean timed step + the epoch's start (loader start-up, measured on the
probe's later passes, else from the loader alone) + validation (start-up + batches x median batch time, twice
with an EMA). Run = setup + the first steps' extra cost + epochs left x (epoch + a checkpoint save, when
checkpoint.save writes one, + the epoch's records: metrics.jsonl and curves.png). The +- is two standard errors of the mean step time times the steps: the measured spread,
not the load a shared machine may add later.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig

from ..data import resolve_loader
from ..runtime.devices import node_cores_per_rank
from .eta import clock

log = logging.getLogger("resnext")

PROBE_FILE = "probe.json"
# The loader alone must outpace the steps by this much, or it is what sets the speed.
INPUT_MARGIN = 1.2
# With dataset.workers=0 the loading runs inside each step: above this share it is worth moving out.
SERIAL_SHARE = 0.25


def _split(measured: Dict[str, Any]) -> Dict[str, List[float]]:
    """The step times as warm-up, timed (steady) and pass starts (a later pass's first step: an epoch's start)."""
    warmup, timed, starts = [], [], []
    index, warm = 0, measured["warmup_steps"]
    for number, times in enumerate(measured["passes"]):
        for position, seconds in enumerate(times):
            if index < warm:
                warmup.append(seconds)
            elif position == 0 and number > 0:
                starts.append(seconds)
            else:
                timed.append(seconds)
            index += 1
    return {"warmup": warmup, "timed": timed, "starts": starts}


def step_stats(times: List[float]) -> Dict[str, float]:
    ordered = sorted(times)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    stdev = statistics.stdev(times) if len(times) > 1 else 0.0
    return {"n": len(times), "mean": statistics.fmean(times), "median": statistics.median(times), "stdev": stdev,
            "p10": pct(0.1), "p90": pct(0.9), "min": ordered[0], "max": ordered[-1],
            "stderr": stdev / math.sqrt(len(times))}


def _verdict(cfg: DictConfig, world_size: int, measured: Dict[str, Any], step_s: float) -> Dict[str, Any]:
    per_rank = measured["images_per_step_per_rank"]
    train_rate = per_rank / step_s
    loader_rate = measured["loader"]["images_per_s_per_rank"]
    workers = cfg.dataset.workers
    knobs = f"raise dataset.workers (now {workers}; this node has {node_cores_per_rank(world_size)} core(s) per rank)"
    if resolve_loader(cfg.dataset)[0] == "torch":
        knobs += " or use dataset.loader=dali (JPEG folders)"
    if loader_rate is None:
        return {"input_bound": None, "text": "the loader delivered too few batches alone to time it"}
    if workers == 0:
        share = per_rank / loader_rate / step_s
        bound = share > SERIAL_SHARE
        text = (f"loading runs inside each step (dataset.workers=0) and takes {100 * share:.0f}% of it"
                + (f": the input pipeline is a bottleneck; {knobs}" if bound else ": the model sets the speed"))
    else:
        bound = loader_rate < INPUT_MARGIN * train_rate
        text = (f"the loader alone delivers {loader_rate:.1f} img/s per rank, the steps take {train_rate:.1f}"
                + (f": the input pipeline is the bottleneck; {knobs}" if bound else ": the model sets the speed"))
    return {"input_bound": bound, "text": text}


def build(cfg: DictConfig, world_size: int, measured: Dict[str, Any], steps_per_epoch: int, val_batches: int,
          resume_point: Dict[str, int], from_cache: bool) -> Dict[str, Any]:
    parts = _split(measured)
    if not parts["timed"]:  # one step per epoch (max_steps_per_epoch=1): every step is an epoch's start
        parts["timed"], parts["starts"] = parts["starts"], []
    timed = parts["timed"] or parts["warmup"]  # check_probe makes sure there are timed steps; a guard only
    stats = step_stats(timed)
    step_s = stats["mean"]
    loader = measured["loader"]
    epoch_start_s = (statistics.fmean(parts["starts"]) - step_s) if parts["starts"] else loader["startup_s"]
    epoch_start_s = max(epoch_start_s, 0.0)
    warmup_extra_s = max(sum(parts["warmup"]) - len(parts["warmup"]) * step_s - epoch_start_s, 0.0)
    val = measured["val"]
    val_batch_s = statistics.median(val["batch_s"]) if val["batch_s"] else 0.0
    validations = (2 if cfg.model.ema else 1) if cfg.validate else 0  # the EMA is validated too
    val_s = validations * (val["startup_s"] + val_batches * val_batch_s)
    saved = measured["checkpoint"]
    save_s = saved.get("save_s", 0.0) if cfg.checkpoint.save != "none" else 0.0
    records = measured.get("records", {})
    records_s = records.get("per_epoch_s", 0.0)  # metrics.jsonl and curves.png after each epoch
    once_s = max(records.get("first_s", 0.0) - records_s, 0.0)  # the first plot imports matplotlib
    train_s = steps_per_epoch * step_s + epoch_start_s
    epoch_pm = 2 * stats["stderr"] * steps_per_epoch
    epochs_left = cfg.epochs - resume_point["epoch"] - resume_point["step"] / max(steps_per_epoch, 1)
    total_s = measured["setup_s"] + warmup_extra_s + once_s + epochs_left * (train_s + val_s + save_s + records_s)
    per_step = measured["images_per_step_per_rank"]
    bytes_per = {"all": saved.get("last_bytes"), "last": saved.get("last_bytes"),
                 "best": saved.get("best_bytes"), "none": 0}[str(cfg.checkpoint.save)]
    return {
        "what": "launch.probe=true: measured steps, nothing trained (no checkpoint, no metrics.jsonl)",
        "from_cache": from_cache,
        "config": {"arch": str(cfg.model.arch), "image_size": cfg.dataset.image_size,
                   "global_batch": cfg.dataset.batch_size, "world_size": world_size, "amp": str(cfg.amp.mode),
                   "dataset": str(cfg.dataset.name), "loader": resolve_loader(cfg.dataset)[0],
                   "workers": cfg.dataset.workers,
                   "epochs": cfg.epochs},
        "measured": {
            "steps": measured["steps"], "warmup_steps": len(parts["warmup"]), "timed_steps": stats["n"],
            "step_s": stats, "epoch_start_s": epoch_start_s, "warmup_extra_s": warmup_extra_s,
            "setup_s": measured["setup_s"],
            "images_per_s": {"per_device": per_step / step_s, "global": per_step * world_size / step_s},
            "loader": loader, "val": {**val, "median_batch_s": val_batch_s}, "memory": measured["memory"],
            "checkpoint": saved},
        "input": _verdict(cfg, world_size, measured, step_s),
        "predicted": {
            "steps_per_epoch": steps_per_epoch, "val_batches_per_rank": val_batches,
            "epoch_train_s": train_s, "val_s": val_s, "checkpoint_save_s": save_s, "epoch_records_s": records_s,
            "epoch_s": train_s + val_s, "epoch_s_pm": epoch_pm,
            "start_epoch": resume_point["epoch"], "start_step": resume_point["step"], "epochs_left": epochs_left,
            "total_s": total_s, "total_s_pm": epoch_pm * epochs_left,
            "checkpoint_bytes": bytes_per, "checkpoint_save": str(cfg.checkpoint.save)},
    }


def _gib(count: Optional[int]) -> str:
    return "?" if count is None else f"{count / 2 ** 30:.2f} GiB"


def describe(report: Dict[str, Any]) -> str:
    m, p, c = report["measured"], report["predicted"], report["config"]
    s = m["step_s"]
    lines = [f"probe: {c['arch']} {c['image_size']} px, global batch {c['global_batch']} on {c['world_size']} "
             f"rank(s), amp {c['amp']}" + (" (measurement reused from this sweep's probe cache)"
                                           if report["from_cache"] else ""),
             f"  step: {s['mean']:.3f} s mean, {s['median']:.3f} s median (p10 {s['p10']:.3f}, p90 {s['p90']:.3f}) "
             f"over {s['n']} timed steps after {m['warmup_steps']} warm-up",
             f"  images/s: {m['images_per_s']['per_device']:.1f} per device, {m['images_per_s']['global']:.1f} global",
             f"  input: {report['input']['text']}"]
    lines += [f"  memory rank {r['rank']} ({r['device']}): peak {_gib(r['peak_bytes'])} ({r['peak_is']}), "
              f"{_gib(r['free_bytes'])} free of {_gib(r['total_bytes'])}" for r in m["memory"]]
    lines += [f"  epoch: {clock(p['epoch_s'])} (+- {clock(p['epoch_s_pm'])}) = {p['steps_per_epoch']} steps "
              f"{clock(p['epoch_train_s'])} + validation {clock(p['val_s'])}",
              f"  run: {clock(p['total_s'])} (+- {clock(p['total_s_pm'])}) for {p['epochs_left']:g} epoch(s)"
              + (f" left from epoch {p['start_epoch']}" if p["start_epoch"] or p["start_step"] else ""),
              f"  checkpoint: {_gib(p['checkpoint_bytes'])} each (checkpoint.save={p['checkpoint_save']})"]
    return "\n".join(lines)


def write(run_dir: Path, report: Dict[str, Any]) -> None:
    """probe.json, the text on stdout and in the log, and result.json saying this job was a probe."""
    (run_dir / PROBE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    text = describe(report)
    log.info("%s", text)
    result = {"status": "probed", "probe": PROBE_FILE, "predicted_total_s": report["predicted"]["total_s"]}
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
