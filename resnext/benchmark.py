"""python -m resnext.benchmark [overrides]: images/s of this project against the plain PyTorch ImageNet example.

One process, one device, the same conf/ tree as training (so model=, amp=, device=, dataset=,
model.compile=, model.channels_last=, dataset.loader= all apply). Each measurement runs for
benchmark.seconds after benchmark.warmup_steps (compile, cuDNN autotune and cold caches excluded):

  baseline_step  the ImageNet example's step, written plainly here: fp32, NCHW, eager, SGD, data on device
  step           this project's step as configured (amp, channels_last, compile): engine.train_one_epoch
  loader_torch   images/s the torch DataLoader delivers, no model
  loader_dali    the same for the DALI pipeline (when DALI imports)
  e2e_plain      the ImageNet example's loop (fp32 eager) over the loader, for benchmark.seconds
  e2e            this project's trainer (trainer.fit) on the same data, for as many steps as took e2e_plain
                 benchmark.seconds (fit stops after a step count, not a time): each at most benchmark.e2e_steps

Every part is bounded: its warm-up steps, then benchmark.seconds (the time of warm-up steps, such as
torch.compile's first step, is not bounded by anything but warmup_steps). The log says what will run, and
after each part how long it took and about how long the rest will take. Every figure is divided by
baseline_step in `ratios`. Without a dataset root, the loader and e2e figures
use a temporary JPEG folder of ImageNet-like sizes (jpeg_tree.py), deleted afterwards.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import hydra
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from .training import launch
from .runtime.amp import MixedPrecision
from .config.errors import ConfigError
from .config.eval_size import val_crop, val_resize
from .config.hydra_errors import one_line_refusals
from .config.schema import check_config, register_configs
from .config.suggest import check_added_keys
from .data import build_loaders, check_dataset
from .data.dali import DALI_DATASETS, PIP_LINE, import_dali
from .data.jpeg_tree import make_jpeg_tree
from .runtime.devices import Device
from .training.engine import LoopSettings, train_one_epoch
from .runtime.devices import RankContext
from .models.build import build_model
from .training.optim import build_optimizer, build_scheduler, effective_lr
from .runtime.speed import apply_tf32, use_channels_last
from .training.trainer import fit

log = logging.getLogger("resnext")
register_configs()

# e2e_plain before e2e: its step time says how many steps of fit fill benchmark.seconds.
MEASURES = ("baseline_step", "step", "loader_torch", "loader_dali", "e2e_plain", "e2e")
NEEDS_DATA = ("loader_torch", "loader_dali", "e2e", "e2e_plain")
EPOCH_OF_STEPS = 10 ** 9  # the schedule's horizon for `step`: the lr stays at its start


@dataclass
class Result:
    img_per_s: float
    step_ms_median: Optional[float]  # None where the engine times the steps (it keeps no per-step times)


def _timed(step: Callable[[], int], device: Device, seconds: float, warmup: int,
           max_steps: Optional[int] = None) -> Result:
    """Run `step` (returns its images) warmup times, then for `seconds` (at most max_steps); synchronised per step."""
    for _ in range(warmup):
        step()
    device.synchronize()
    times: List[float] = []
    images, start = 0, time.perf_counter()
    while not times or (time.perf_counter() - start < seconds and (max_steps is None or len(times) < max_steps)):
        begin = time.perf_counter()
        images += step()
        device.synchronize()
        times.append(time.perf_counter() - begin)
    return Result(images / (time.perf_counter() - start), 1000 * statistics.median(times))


# ---- training steps with data on the device ----------------------------------------------------------

def _device_batch(cfg: DictConfig, device: Device, classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    size, batch = cfg.dataset.image_size, cfg.dataset.batch_size
    images = torch.randn(batch, 3, size, size, device=device.torch_device)
    return images, torch.randint(classes, (batch,), device=device.torch_device)


def baseline_step(cfg: DictConfig, device: Device, classes: int) -> Result:
    """The PyTorch ImageNet example's step, kept plain on purpose: it is the reference, not our code."""
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch's defaults
    model = build_model(cfg.model, classes).to(device.torch_device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    images, target = _device_batch(cfg, device, classes)
    model.train()

    def step() -> int:
        loss = criterion(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return images.shape[0]

    return _timed(step, device, cfg.benchmark.seconds, cfg.benchmark.warmup_steps)


class _TimedBatches:
    """The same on-device batch, again and again, until `seconds` have passed after the warm-up batches."""

    def __init__(self, batch: Tuple[torch.Tensor, torch.Tensor], seconds: float, warmup: int) -> None:
        self.batch, self.seconds, self.warmup = batch, seconds, warmup

    def __len__(self) -> int:
        return EPOCH_OF_STEPS

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.warmup + 1):
            yield self.batch
        start = time.perf_counter()
        while time.perf_counter() - start < self.seconds:
            yield self.batch


def project_step(cfg: DictConfig, ctx: RankContext, classes: int) -> Result:
    """This project's components and hot loop (engine.train_one_epoch), fed a batch already on the device."""
    device, channels_last = ctx.device, use_channels_last(cfg.model, ctx.device.type)
    apply_tf32(cfg.amp, device.type)
    model = build_model(cfg.model, classes).to(device.torch_device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model, device, effective_lr(cfg.optim, cfg.dataset.batch_size))
    amp = MixedPrecision(cfg.amp, device)
    model, optimizer = amp.prepare(model, optimizer)
    scheduler = build_scheduler(cfg.schedule, optimizer, 1, EPOCH_OF_STEPS)
    train_model = torch.compile(model) if cfg.model.compile else model
    images, target = _device_batch(cfg, device, classes)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    settings = LoopSettings(print_freq=EPOCH_OF_STEPS, fps_warmup_steps=cfg.benchmark.warmup_steps, max_steps=None,
                            progress_bar=False, channels_last=channels_last)
    batches = _TimedBatches((images, target), cfg.benchmark.seconds, cfg.benchmark.warmup_steps)
    stats = train_one_epoch(train_model, batches, nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing),
                            optimizer, scheduler, amp, ctx, 0, settings)
    return Result(stats["fps"], None)


# ---- loaders and whole loops on JPEGs ---------------------------------------------------------------------

def _endless(loader: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.train_sampler.set_epoch(epoch)
        yield from loader.train
        epoch += 1


def _loaders(cfg: DictConfig, device: Device, loader: str) -> Any:
    dcfg = copy.deepcopy(cfg.dataset)
    dcfg.loader = loader
    return build_loaders(dcfg, seed=cfg.seed or 0, rank=0, world_size=1, device_type=device.type,
                         channels_last=use_channels_last(cfg.model, device.type))


def loader_speed(cfg: DictConfig, device: Device, loader: str) -> Result:
    batches = _endless(_loaders(cfg, device, loader))
    return _timed(lambda: len(next(batches)[1]), device, cfg.benchmark.seconds, cfg.benchmark.warmup_steps)


def e2e(cfg: DictConfig, ctx: RankContext, steps: int) -> Result:
    """The real trainer for `steps` steps (warm-up included); its FPS@all (warm-up steps left out) is the figure."""
    run = copy.deepcopy(cfg)
    with open_dict(run):
        run.epochs, run.validate, run.tensorboard, run.progress_bar = 1, False, False, False
        run.max_steps_per_epoch, run.fps_warmup_steps = steps, cfg.benchmark.warmup_steps
        run.print_freq, run.resume, run.evaluate = EPOCH_OF_STEPS, None, False
    ctx = RankContext(0, 0, 1, ctx.device, ctx.run_dir / "e2e")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    fit(run, ctx)
    fps = json.loads((ctx.run_dir / "result.json").read_text())["fps"]
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):  # hundreds of MB that nobody needs here
        (ctx.run_dir / name).unlink(missing_ok=True)
    return Result(fps, None)


def e2e_steps(cfg: DictConfig, plain: Optional[Result]) -> int:
    """Steps for e2e: warm-up plus what fills benchmark.seconds at e2e_plain's median step, at most e2e_steps.

    Without an e2e_plain figure (benchmark.only=[e2e]) the cap alone bounds it, and the log says so.
    """
    bench = cfg.benchmark
    if plain is None or not plain.step_ms_median:
        log.info("e2e without e2e_plain before it: bounded by benchmark.e2e_steps=%d, not by benchmark.seconds",
                 bench.e2e_steps)
        return bench.e2e_steps
    timed = math.ceil(bench.seconds / (plain.step_ms_median / 1000))
    return max(min(bench.warmup_steps + timed, bench.e2e_steps), bench.warmup_steps + 1)


def e2e_plain(cfg: DictConfig, device: Device, classes: int) -> Result:
    """The ImageNet example's loop over the same loader: copy to device, fp32 eager step."""
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_model(cfg.model, classes).to(device.torch_device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    batches = _endless(_loaders(cfg, device, cfg.dataset.loader))
    model.train()
    bench = cfg.benchmark
    return _timed(lambda: _plain_step(model, optimizer, criterion, next(batches), device), device, bench.seconds,
                  bench.warmup_steps, max_steps=max(bench.e2e_steps - bench.warmup_steps, 1))


def _plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                batch: Tuple[torch.Tensor, torch.Tensor], device: Device) -> int:
    images = batch[0].to(device.torch_device, non_blocking=True)
    target = batch[1].to(device.torch_device, non_blocking=True)
    loss = criterion(model(images), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return images.shape[0]


# ---- the run ----------------------------------------------------------------------------------------------

def _wanted(cfg: DictConfig) -> List[str]:
    asked = list(cfg.benchmark.only)
    unknown = [name for name in asked if name not in MEASURES]
    if unknown:
        raise ConfigError(f"benchmark.only={asked}: {', '.join(unknown)} not among {', '.join(MEASURES)}")
    if "loader_dali" in asked:
        import_dali()  # asked for by name: a missing DALI is an error with the pip line
        return asked
    if asked:
        return asked
    try:
        import_dali()
        return list(MEASURES)
    except ConfigError:
        log.info("loader_dali left out: NVIDIA DALI does not import (%s)", PIP_LINE)
        return [name for name in MEASURES if name != "loader_dali"]


def _use_jpeg_folder(cfg: DictConfig, workdir: Path) -> str:
    """Point cfg.dataset at the configured JPEG folder, or at a temporary one made here; say which."""
    if cfg.dataset.name in DALI_DATASETS and cfg.dataset.root:
        return f"{cfg.dataset.name} at {cfg.dataset.root}"
    bench = cfg.benchmark
    per_class = max(bench.jpeg_images // bench.jpeg_classes, 1)
    root = make_jpeg_tree(workdir, bench.jpeg_classes, per_class, max(per_class // 4, 1))
    with open_dict(cfg):
        cfg.dataset.name, cfg.dataset.root, cfg.dataset.num_classes = "folder", str(root), None
        cfg.dataset.train_subset = cfg.dataset.val_subset = None
        cfg.dataset.val_resize = max(val_resize(cfg.dataset), val_crop(cfg.dataset))
    return (f"a temporary JPEG folder ({bench.jpeg_classes * per_class} train images of 400x300 to 640x480 px, "
            "quality 90, made by this run and deleted afterwards)")


def _environment(device: Device) -> Dict[str, Any]:
    env: Dict[str, Any] = {"device": str(device), "torch": torch.__version__, "torchvision": torchvision.__version__,
                           "cpu_cores": os.cpu_count() or 1, "python": platform.python_version(),
                           "cpu": platform.processor() or platform.machine(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           # Other processes on the machine lower every figure: say how busy it was.
                           "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device.index or 0)
    try:
        env["dali"] = import_dali().__version__
    except ConfigError:
        env["dali"] = None
    return env


def run_benchmark(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Measure what benchmark.only asks for (all by default); write benchmark.json and benchmark.md."""
    cfg = copy.deepcopy(cfg)
    check_config(cfg)
    plan = launch.plan(cfg)
    if plan.world_size != 1:
        raise ConfigError(f"the benchmark measures one device; this config starts {plan.world_size} processes: "
                          "use device=cpu, cuda_1p or npu_1p and distributed=none")
    if cfg.dataset.batch_size == "auto" or cfg.optim.accum_steps != 1:
        raise ConfigError("the benchmark measures one given batch without accumulation: set dataset.batch_size=N "
                          "and optim.accum_steps=1 (train with dataset.batch_size=auto to find the N that fits)")
    wanted = _wanted(cfg)
    ctx = RankContext(0, 0, 1, plan.devices[0], Path(run_dir))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    ctx.device.activate()
    torch.manual_seed(cfg.seed or 0)
    with tempfile.TemporaryDirectory(prefix="resnext-bench-") as workdir:
        data = _use_jpeg_folder(cfg, Path(workdir)) if set(wanted) & set(NEEDS_DATA) else "none needed"
        classes = check_dataset(cfg.dataset) if data != "none needed" else (cfg.dataset.num_classes or 1000)
        log.info("benchmark on %s; data: %s", ctx.device, data)
        measures = {
            "baseline_step": lambda: baseline_step(cfg, ctx.device, classes),
            "step": lambda: project_step(cfg, ctx, classes),
            "loader_torch": lambda: loader_speed(cfg, ctx.device, "torch"),
            "loader_dali": lambda: loader_speed(cfg, ctx.device, "dali"),
            "e2e_plain": lambda: e2e_plain(cfg, ctx.device, classes),
            "e2e": lambda: e2e(cfg, ctx, e2e_steps(cfg, results.get("e2e_plain"))),
        }
        results: Dict[str, Result] = {}
        log.info("%s", _plan_line(cfg, wanted))
        began = time.perf_counter()
        for done, name in enumerate(wanted):
            log.info("[%d/%d] measuring %s ...", done + 1, len(wanted), name)
            part_began = time.perf_counter()
            results[name] = measures[name]()
            log.info("%s: %.1f img/s (%.0f s)%s", name, results[name].img_per_s, time.perf_counter() - part_began,
                     _time_left(time.perf_counter() - began, done + 1, len(wanted)))
    report = _report(cfg, ctx.device, data, results)
    (ctx.run_dir / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    (ctx.run_dir / "benchmark.md").write_text(markdown(report))
    return report


def _plan_line(cfg: DictConfig, wanted: List[str]) -> str:
    bench = cfg.benchmark
    return (f"benchmark: {len(wanted)} parts ({', '.join(wanted)}), each benchmark.warmup_steps={bench.warmup_steps} "
            f"warm-up steps then benchmark.seconds={bench.seconds:g} s: at least {len(wanted) * bench.seconds:.0f} s "
            "plus building models and loaders and the warm-up steps")


def _time_left(elapsed: float, done: int, total: int) -> str:
    """The parts cost alike (each: a build, warm-up, then benchmark.seconds): the mean so far times those left."""
    return f"; about {elapsed / done * (total - done):.0f} s left" if done < total else ""


def _report(cfg: DictConfig, device: Device, data: str, results: Dict[str, Result]) -> Dict[str, Any]:
    base = results.get("baseline_step")
    return {
        "env": _environment(device),
        "config": {"model": cfg.model.arch, "amp": cfg.amp.mode, "batch_size": cfg.dataset.batch_size,
                   "image_size": cfg.dataset.image_size, "channels_last": use_channels_last(cfg.model, device.type),
                   "compile": bool(cfg.model.compile), "loader": cfg.dataset.loader, "data": data,
                   "seconds": cfg.benchmark.seconds, "command": " ".join(["python -m resnext.benchmark",
                                                                          *sys.argv[1:]])},
        "results": {name: asdict(result) for name, result in results.items()},
        "ratios": {name: r.img_per_s / base.img_per_s for name, r in results.items()} if base else {},
    }


def markdown(report: Dict[str, Any]) -> str:
    env, config, ratios = report["env"], report["config"], report["ratios"]
    lines = [f"# resnext benchmark, {env['date']}", "",
             f"`{config['command']}`", "",
             f"{env['device']} ({env.get('gpu') or env['cpu']}, {env['cpu_cores']} CPU cores, load average "
             f"{env['load_avg_1min']}), torch {env['torch']}, "
             f"DALI {env['dali'] or 'not installed'}; {config['model']}, {config['image_size']} px, batch "
             f"{config['batch_size']}, amp {config['amp']}, channels_last {config['channels_last']}, compile "
             f"{config['compile']}; data: {config['data']}", "",
             "| measure | img/s | median step ms | x baseline_step |", "| --- | ---: | ---: | ---: |"]
    for name, result in report["results"].items():
        ms = "-" if result["step_ms_median"] is None else f"{result['step_ms_median']:.1f}"
        ratio = f"{ratios[name]:.2f}" if name in ratios else "-"
        lines.append(f"| {name} | {result['img_per_s']:.1f} | {ms} | {ratio} |")
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        check_added_keys(cfg)
        report = run_benchmark(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)
    print(markdown(report))


def cli() -> None:
    """The console script and `python -m resnext.benchmark`: Hydra's refusals in one line and exit 2, as train's."""
    with one_line_refusals(sys.argv[1:], main.__wrapped__):
        main()


if __name__ == "__main__":
    cli()
