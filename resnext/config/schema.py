"""Structured-config schemas for every config group.

The dataclasses are registered in Hydra's ConfigStore as `resnext_schema`, which the primary
config (conf/config.yaml) lists first in its defaults. Every YAML file and every command-line
override is therefore merged into typed nodes: an unknown key or a value of the wrong type
fails at composition time with Hydra's own error, before any work starts. A key with a closed set of
values (amp.mode, model.arch ...) is typed with an Enum of resnext/config/choices.py, so Hydra refuses any
other value too and lists the valid ones.

What a type cannot express (a positive batch, options that exclude each other) is checked in
`check_config`, which `train.main` runs before launching anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .choices import (AmpMode, Arch, Augment, BadImages, CheckpointSave, DatasetName, DeviceType, DistributedMode,
                      Interpolation, Loader, Loss, LrScaling, Norm, OptimName, ScheduleName, Stem)
from .batch import check_batch_keys
from .errors import ConfigError


@dataclass
class ModelConfig:
    # A torchvision ResNet-family builder: resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, resnet50.
    arch: Arch = Arch.resnext50_32x4d
    zero_init_residual: bool = False
    # imagenet: 7x7 stride-2 stem + max-pool; cifar: 3x3 stride-1 stem, no max-pool (32 px inputs).
    stem: Stem = Stem.imagenet
    # batch: BatchNorm2d; group: GroupNorm(32) (batch-independent); frozen: FrozenBatchNorm2d.
    norm: Norm = Norm.batch
    # Path to a torchvision-format state dict, or torchvision:<weights enum name> (e.g. torchvision:IMAGENET1K_V2)
    # from torch's hub cache / download; the head is re-initialised if the class count differs.
    weights: Optional[str] = None
    # Exponential moving average of the weights (resnext/training/ema.py), validated beside the raw model every epoch.
    # Defaults are torchvision's --model-ema-steps 32 --model-ema-decay 0.99998 (adjusted for batch and epochs).
    ema: bool = False
    ema_steps: int = 32
    ema_decay: float = 0.99998
    # None: on for CUDA (Tensor Cores want NHWC), off elsewhere (slower on CPU; see README Performance).
    channels_last: Optional[bool] = None
    compile: bool = False


@dataclass
class DatasetConfig:
    name: DatasetName = DatasetName.synthetic  # synthetic | cifar10 | imagenet | folder
    root: Optional[str] = None
    download: bool = False  # cifar10 only: fetch into root when online
    num_classes: Optional[int] = None  # None: inferred from the data (folder)
    # Global batch across all ranks; each rank gets batch_size / world_size (/ optim.accum_steps per micro-step).
    # auto: the largest per-device batch that fits (resnext/training/batch_fit.py) x world size. Typed Any
    # (int or "auto"): resnext/config/batch.py refuses anything else.
    batch_size: Any = 256
    max_batch_size: int = 1024  # per device: the cap of the batch_size=auto / optim.accum_steps=auto search
    # CPU only: the memory batch_size=auto may fill, in GiB for all ranks of the node; None: half the available RAM.
    auto_memory_gib: Optional[float] = None
    val_batch_size: Optional[int] = None  # global as well; None: same as batch_size
    workers: int = 4  # DataLoader workers per rank
    pin_memory: bool = True
    image_size: int = 224  # the training crop side (the train_crop) / synthetic image side
    # The shorter side validation resizes to before the centre crop; None: derived from the crop by ImageNet's
    # 256/224 (resnext/config/eval_size.py). The synthetic preset sets its image side: no resize.
    val_resize: Optional[int] = None
    val_crop: Optional[int] = None  # validation centre crop; None: image_size (train small, test large: FixRes)
    # Base training augmentation (resnext/data/transforms.py): imagenet (RandomResizedCrop over crop_scale and
    # crop_ratio) | light (pad by 1/8 and random crop, as CIFAR) | none (the validation resize and centre crop).
    # Each is followed by a horizontal flip when hflip is true.
    augment: Augment = Augment.imagenet
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: List[float] = field(default_factory=lambda: [0.75, 1.3333333333333333])
    hflip: bool = True
    interpolation: Interpolation = Interpolation.bilinear  # bilinear | bicubic | nearest, for every resize and crop
    # Regularisers, all off by default. auto_augment: null | ta_wide | randaugment | autoaugment.
    auto_augment: Optional[str] = None
    auto_augment_magnitude: int = 9  # randaugment: magnitude bin of 31 (torchvision's default 9)
    auto_augment_num_ops: int = 2  # randaugment: operations per image
    random_erase: float = 0.0  # probability of torchvision's RandomErasing per image
    # Batch mixing after collation (resnext/data/mixing.py): one of MixUp / CutMix per batch when both are set.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ra_reps: int = 1  # repeated augmentation: each sample N times per epoch across the ranks (RASampler)
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Use only the first N (train) / M (val) samples: quick checks on a slice of a real dataset.
    train_subset: Optional[int] = None
    val_subset: Optional[int] = None
    # Input pipeline (issue #9): auto uses NVIDIA DALI for imagenet/folder when it imports, else torch.
    loader: Loader = Loader.auto  # auto | torch | dali
    dali_threads: Optional[int] = None  # DALI CPU threads per rank; None: the cores per local rank
    # An image that cannot be decoded: error (stop, naming the file) | skip (replace the sample, log the
    # path once, count it per epoch in metrics.jsonl). Issue #10.
    bad_images: BadImages = BadImages.error


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    """dataset=synthetic: the common keys plus the set's size, which means nothing for a dataset on disk."""

    train_size: int = 5000
    val_size: int = 1000


@dataclass
class DeviceConfig:
    type: DeviceType = DeviceType.auto  # auto | cpu | cuda | npu
    # Device indices this node trains on, one process each (the seed's --device-list 0,...,7).
    # None: [0] for cuda/npu. Ignored for cpu, which uses nprocs.
    device_list: Optional[List[int]] = None
    nprocs: int = 1  # cpu only: processes that train together over gloo
    addr: str = "127.0.0.1"  # rendezvous address for distributed=spawn
    port: Optional[int] = None  # None: a free port is picked
    # NPU: torch.npu.set_compile_mode(jit_compile=...); None leaves torch_npu's default.
    jit_compile: Optional[bool] = None
    # Multirun with N jobs at once (joblib n_jobs): job k trains on device k mod N of device_list (when it
    # lists several, else of all visible), or with spawn on the k mod N-th of N equal groups. 0: off.
    spread_jobs: int = 0


@dataclass
class AmpConfig:
    mode: AmpMode = AmpMode.off  # off | fp16 | bf16 | apex
    # fp16 / apex: "dynamic" or a number such as 1024 for a static scale.
    loss_scale: Any = "dynamic"
    opt_level: Optional[str] = None  # apex: O1 | O2
    combine_grad: bool = False  # Ascend apex: fuse gradients before the all-reduce
    tf32: Optional[bool] = None  # CUDA fp32 matmul/conv on TF32 Tensor Cores; None: on for CUDA


@dataclass
class DistributedConfig:
    # none: one process; spawn: one process per listed device on this node;
    # env: join ranks that torchrun or SLURM started (multi-node).
    mode: DistributedMode = DistributedMode.none
    backend: Optional[str] = None  # None: gloo (cpu), nccl (cuda), hccl (npu)
    sync_bn: bool = False
    # Bounds every collective and the hang watchdog (resnext/runtime/watchdog.py); a float so tests can use seconds.
    timeout_min: float = 30


@dataclass
class CheckpointConfig:
    # What the run directory keeps: all (checkpoint.pth.tar every epoch + model_best.pth.tar, weights only),
    # last (checkpoint.pth.tar only), best (model_best.pth.tar only), none (nothing: no resume possible).
    save: CheckpointSave = CheckpointSave.all
    # Mid-epoch checkpoints (off by default; the epoch checkpoint is written as `save` says) and the
    # number of per-epoch copies kept next to checkpoint.pth.tar. All three need save=all or last.
    every_steps: Optional[int] = None
    every_minutes: Optional[float] = None
    keep_last: int = 0


@dataclass
class TrialConfig:
    """The Optuna trial a job reports to: set by hydra/sweeper=resnext on each job, None otherwise (issue 17)."""
    storage: Optional[str] = None  # the study's SQLAlchemy URL
    study_name: Optional[str] = None
    number: Optional[int] = None  # the trial number, also the job's directory name
    slot: Optional[int] = None  # the sweeper's slot running it: picks the job's devices (device.spread_jobs)


@dataclass
class SweepConfig:
    # Issue #10: re-running a multirun with the same hydra.sweep.dir skips completed jobs, resumes
    # interrupted ones from their checkpoints and reruns failed ones (resnext/sweeps/resume.py).
    resume: bool = False
    trial: TrialConfig = field(default_factory=TrialConfig)  # resnext/training/trial.py


@dataclass
class LaunchConfig:
    dry_run: bool = False  # print the process plan and exit without touching hardware
    # Issue 18: run probe_steps real steps, write probe.json (time, memory, predictions) and exit (training/probe.py).
    probe: bool = False
    probe_steps: int = 20


@dataclass
class OptimConfig:
    name: OptimName = OptimName.sgd  # sgd | adamw | lamb
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    # Apply no weight decay to norm weights and biases (torchvision's --norm-weight-decay 0).
    no_decay_norm_bias: bool = False
    # Scale lr by global_batch / reference_batch: none | linear | sqrt.
    lr_scaling: LrScaling = LrScaling.none
    reference_batch: int = 256
    label_smoothing: float = 0.0
    # Gradient accumulation: micro-steps per optimizer step (int, or auto: the fewest whose micro-batch fits).
    accum_steps: Any = 1
    # adamw / lamb only (lamb's eps default is timm's 1e-6, set by conf/optim/lamb.yaml).
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8


@dataclass
class ScheduleConfig:
    name: ScheduleName = ScheduleName.cosine  # step | cosine
    warmup_epochs: float = 0.0  # linear warm-up, stepped per iteration
    warmup_start_factor: float = 0.01
    step_epochs: int = 30  # step: multiply lr by gamma every step_epochs
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine: the floor it anneals to


# The logger group (conf/logger/*.yaml): each option sets enabled=true in its own node, logger.<name>, so
# several compose (logger=[tensorboard,mlflow]); every node is always there, so its keys can be overridden
# whether or not it is chosen. metrics.jsonl is always written.
@dataclass
class TensorBoardLoggerConfig:
    enabled: bool = False
    dir: str = "tensorboard"  # inside the run directory


@dataclass
class CsvLoggerConfig:
    enabled: bool = False
    file: str = "metrics.csv"  # inside the run directory; one row per epoch


@dataclass
class MlflowLoggerConfig:
    enabled: bool = False
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else MLflow's local sqlite:///mlflow.db in the cwd
    experiment: str = "resnext"
    run_name: Optional[str] = None  # None: the run directory's name (a multirun job: sweep name + job number)
    log_artifacts: bool = False  # upload model_best.pth.tar and .hydra/ when the run ends


@dataclass
class WandbLoggerConfig:
    enabled: bool = False
    project: str = "resnext"
    entity: Optional[str] = None
    group: Optional[str] = None  # None: the sweep directory in a multirun, so its jobs group together
    mode: Optional[str] = None  # online | offline | disabled; None: $WANDB_MODE, else online
    log_artifacts: bool = False  # upload model_best.pth.tar as a model artifact when the run ends


@dataclass
class LoggerConfig:
    tensorboard: TensorBoardLoggerConfig = field(default_factory=TensorBoardLoggerConfig)
    csv: CsvLoggerConfig = field(default_factory=CsvLoggerConfig)
    mlflow: MlflowLoggerConfig = field(default_factory=MlflowLoggerConfig)
    wandb: WandbLoggerConfig = field(default_factory=WandbLoggerConfig)


@dataclass
class BenchmarkConfig:
    """python -m resnext.benchmark: what it measures and for how long (ignored by training)."""
    seconds: float = 10.0  # timed part of each measurement, warm-up excluded
    warmup_steps: int = 3  # steps (or loader batches) before the clock starts
    # Any of baseline_step, step, loader_torch, loader_dali, e2e, e2e_plain; empty: all that can run here.
    only: List[str] = field(default_factory=list)
    e2e_steps: int = 30  # training steps of the e2e runs (warm-up steps included)
    # Without a dataset root: a temporary JPEG folder of ImageNet-like sizes with this many images per split.
    jpeg_images: int = 512
    jpeg_classes: int = 8


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    device: DeviceConfig = MISSING
    amp: AmpConfig = MISSING
    distributed: DistributedConfig = MISSING
    optim: OptimConfig = MISSING
    schedule: ScheduleConfig = MISSING
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # what each run keeps on disk, and when
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # conf/logger: where metrics go besides metrics.jsonl
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    epochs: int = 90
    loss: Loss = Loss.ce  # ce: cross-entropy | bce: binary cross-entropy on (soft) targets, as ResNet Strikes Back
    seed: Optional[int] = 0
    deterministic: bool = False
    print_freq: int = 10
    # Path to a checkpoint.pth.tar to continue from, or "auto": the run directory's checkpoint.pth.tar
    # when there is one, else a fresh start (the same command can be requeued).
    resume: Optional[str] = None
    evaluate: bool = False  # validate only (model.weights or resume), then exit
    # Stop each epoch after this many training steps (performance runs; None: the whole epoch).
    max_steps_per_epoch: Optional[int] = None
    validate: bool = True  # run validation after every epoch
    fps_warmup_steps: int = 5  # steps left out of FPS (compile, cudnn autotune, warm caches)
    # Deprecated, kept so old command lines work: false drops the tensorboard sink, true adds it; None: logger= decides.
    tensorboard: Optional[bool] = None
    progress_bar: Optional[bool] = None  # None: a bar when stdout is a terminal


def default_checkpoint_save() -> str:
    """checkpoint.save's default: all for a single run; best (weights only) for each job of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "best" if multirun else "all"


# Dataset presets with a schema of their own (conf/dataset/<name>.yaml names it in its defaults list).
DATASET_SCHEMAS = {"synthetic": SyntheticDatasetConfig}


def typed_config(container: Dict[str, Any]) -> Any:
    """A resolved config (a spawned rank's) typed again by the schemas Hydra composed it with, without
    entering Hydra: the dataset's own schema for presets that have one."""
    name = container.get("dataset", {}).get("name")
    schema = Config(dataset=DATASET_SCHEMAS.get(name, DatasetConfig)())
    return OmegaConf.merge(OmegaConf.structured(schema), container)


def register_configs() -> None:
    OmegaConf.register_new_resolver("resnext.checkpoint_save", default_checkpoint_save, replace=True)
    store = ConfigStore.instance()
    store.store(name="resnext_schema", node=Config)
    # A dataset preset whose keys differ from the common ones names its schema in its defaults list
    # (conf/dataset/synthetic.yaml): its own keys are typed, and other presets do not show them.
    for name, schema in DATASET_SCHEMAS.items():
        store.store(group="resnext_dataset_schema", name=name, node=schema, package="dataset")


def check_config(cfg: Any) -> None:
    """Checks that need more than a type; raises ConfigError naming the key and the fix."""
    check_batch_keys(cfg)  # dataset.batch_size, optim.accum_steps: an int >= 1 or auto (resnext/config/batch.py)
    positive = {
        "epochs": cfg.epochs,
        "dataset.image_size": cfg.dataset.image_size,
        "print_freq": cfg.print_freq,
        "device.nprocs": cfg.device.nprocs,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    _check_reliability(cfg)
    if cfg.dataset.workers < 0:
        raise ConfigError(f"dataset.workers={cfg.dataset.workers} must be 0 or more")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr} must be positive")
    if cfg.evaluate and not (cfg.model.weights or cfg.resume):
        raise ConfigError("evaluate=true needs weights to evaluate: set model.weights=<state dict> "
                          "or resume=<checkpoint.pth.tar>")
    if cfg.amp.mode in ("fp16", "apex"):
        scale = cfg.amp.loss_scale
        if not (scale == "dynamic" or (isinstance(scale, (int, float)) and scale > 0)):
            raise ConfigError(f"amp.loss_scale={scale!r} must be 'dynamic' or a positive number such as 1024")
    if cfg.amp.mode == "apex" and cfg.amp.opt_level not in ("O1", "O2"):
        raise ConfigError(f"amp.opt_level={cfg.amp.opt_level!r}: apex needs O1 or O2 (amp=apex_o1 or amp=apex_o2)")


def _check_reliability(cfg: Any) -> None:
    """Issue #10's keys: checkpoint cadence, keep_last and the hang timeout."""
    ckpt = cfg.checkpoint
    if ckpt.every_steps is not None and ckpt.every_steps < 1:
        raise ConfigError(f"checkpoint.every_steps={ckpt.every_steps} must be at least 1, or null for off")
    if ckpt.every_minutes is not None and ckpt.every_minutes <= 0:
        raise ConfigError(f"checkpoint.every_minutes={ckpt.every_minutes} must be positive, or null for off")
    if ckpt.keep_last < 0:
        raise ConfigError(f"checkpoint.keep_last={ckpt.keep_last} must be 0 (keep none) or more")
    wants_last = [f"checkpoint.{key}={ckpt[key]}" for key in ("every_steps", "every_minutes") if ckpt[key]]
    wants_last += [f"checkpoint.keep_last={ckpt.keep_last}"] if ckpt.keep_last else []
    if wants_last and ckpt.save not in ("all", "last"):
        raise ConfigError(f"{wants_last[0]} writes or copies checkpoint.pth.tar, which checkpoint.save={ckpt.save} "
                          "does not keep: set checkpoint.save=last (or all)")
    if cfg.distributed.timeout_min <= 0:
        raise ConfigError(f"distributed.timeout_min={cfg.distributed.timeout_min} must be positive")
