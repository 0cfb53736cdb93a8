"""The real conf/ tree composes for every option, and mistakes are refused before anything runs."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

import resnext
from resnext.models import checkpoint
from resnext.config.errors import ConfigError
from resnext.config.schema import check_config
from tests.conftest import compose_config

CONF = Path(resnext.__file__).parent / "conf"


def options(group: str):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_are_the_embedded_cpu_job():
    cfg = compose_config(tiny=False)
    assert (cfg.model.arch, cfg.dataset.name, cfg.device.type, cfg.amp.mode, cfg.distributed.mode) == \
           ("resnext50_32x4d", "synthetic", "auto", "off", "none")
    check_config(cfg)


@pytest.mark.parametrize("group", ["model", "dataset", "device", "amp", "distributed", "optim", "schedule",
                                   "experiment"])
def test_every_option_of_every_group_composes(group):
    found = options(group)
    assert found, f"conf/{group}/ is empty"
    for option in found:
        cfg = compose_config([f"{group}={option}", "dataset.root=/data"], tiny=False)
        assert cfg[group if group != "experiment" else "epochs"] is not None


def test_group_options_the_issue_names_exist():
    assert set(options("model")) >= {"resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "resnet50"}
    assert set(options("dataset")) >= {"synthetic", "cifar10", "imagenet", "folder"}
    assert set(options("device")) >= {"auto", "cpu", "cuda_1p", "cuda_8p", "npu_1p", "npu_8p"}
    assert set(options("amp")) >= {"off", "fp16", "bf16", "apex_o1", "apex_o2"}
    assert set(options("distributed")) >= {"none", "spawn", "env"}
    assert set(options("schedule")) >= {"step", "cosine"}


def test_multi_device_options_select_spawn_unless_overridden():
    assert compose_config(["device=npu_8p"]).distributed.mode == "spawn"
    assert compose_config(["device=cuda_8p"]).distributed.mode == "spawn"
    assert compose_config(["device=npu_8p", "distributed=env"]).distributed.mode == "env"


def test_dataset_recipes_set_their_own_length_and_the_command_line_wins():
    assert compose_config(["dataset=imagenet"], tiny=False).epochs == 90
    assert compose_config(["dataset=cifar10"], tiny=False).model.stem == "cifar"
    assert compose_config(["dataset=imagenet", "epochs=3"], tiny=False).epochs == 3


@pytest.mark.parametrize("override, error", [
    ("dataset.bogus=1", ConfigKeyError),  # a typo in a key
    ("epochs=abc", ValidationError),  # a wrong type
    ("model.zero_init_residual=maybe", ValidationError),
    ("optim.lr=fast", ValidationError),
])
def test_typos_and_wrong_types_fail_at_composition(override, error):
    with pytest.raises((ConfigCompositionException, error)) as info:
        compose_config([override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) or "abc" in str(info.value) \
        or "maybe" in str(info.value) or "fast" in str(info.value)


def test_unknown_group_option_fails():
    with pytest.raises(ConfigCompositionException, match="resnext51"):
        compose_config(["model=resnext51"])


@pytest.mark.parametrize("override, valid", [
    ("model.arch=vgg16", "[resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, resnet50]"),
    ("model.stem=tiny", "[imagenet, cifar]"),
    ("schedule.name=poly", "[step, cosine]"),
    ("optim.lr_scaling=cubic", "[none, linear, sqrt]"),
    ("amp.mode=fp8", "[off, fp16, bf16, apex]"),
    ("dataset.name=mnist", "[synthetic, cifar10, imagenet, folder]"),
    ("checkpoint.save=some", "[all, last, best, none]"),
    ("dataset.bad_images=ignore", "[error, skip]"),
    ("dataset.augment=heavy", "[imagenet, light, none]"),
    ("dataset.interpolation=lanczos", "[bilinear, bicubic, nearest]"),
    ("dataset.loader=opencv", "[auto, torch, dali]"),
    ("device.type=tpu", "[auto, cpu, cuda, npu]"),
    ("distributed.mode=mpi", "[none, spawn, env]"),
    ("model.norm=layer", "[batch, group, frozen]"),
    ("loss=mse", "[ce, bce]"),
    ("optim.name=rmsprop", "[sgd, adamw, lamb]"),
])
def test_a_value_outside_a_keys_choices_is_refused_by_hydra_listing_the_valid_ones(override, valid):
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as info:
        compose_config([override])
    message = f"{info.value} {info.value.__cause__}"
    assert f"Invalid value '{value}', expected one of {valid}" in message and f"full_key: {key}" in message


def test_a_choice_reads_compares_and_serialises_as_its_plain_value(tmp_path):
    """The code compares with strings and keys dicts by them; messages, YAML, JSON, CSV and checkpoints show
    the value (fp16), never AmpMode.fp16; a spawned rank's re-typed config holds the same member."""
    import json

    import torch
    from omegaconf import OmegaConf

    from resnext.config.choices import AmpMode
    from resnext.config.schema import typed_config

    cfg = compose_config(["amp=fp16"])
    mode = cfg.amp.mode
    assert mode is AmpMode.fp16 and mode == "fp16" and {"fp16": 1}[mode] == 1 and mode in ("fp16", "apex")
    assert f"{mode}|{mode:>5}|{str(mode)}|%s" % mode == "fp16| fp16|fp16|fp16"
    assert "mode: fp16\n" in OmegaConf.to_yaml(cfg.amp) and json.dumps({"m": mode}) == '{"m": "fp16"}'
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert type(container["amp"]["mode"]) is str
    assert typed_config(container).amp.mode is AmpMode.fp16
    checkpoint.save_atomic({"amp": {"mode": mode}, "modes": [mode], "t": torch.ones(1)}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)  # a pickled member would be refused here
    assert loaded["modes"] == ["fp16"] and type(loaded["amp"]["mode"]) is str


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs=0 must be at least 1"),
    ("dataset.batch_size=0", "dataset.batch_size=0"),
    ("optim.lr=-0.1", "optim.lr=-0.1 must be positive"),
    ("evaluate=true", "evaluate=true needs weights"),
    ("amp=fp16 amp.loss_scale=huge", "amp.loss_scale='huge'"),
])
def test_values_no_type_can_catch_are_refused_with_the_key(override, message):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert message in str(info.value)
