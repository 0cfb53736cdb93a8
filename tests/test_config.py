"""The real conf/ tree composes for every option, and mistakes are refused before anything runs."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

import resnext
from resnext.config import ConfigError, check_config
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


@pytest.mark.parametrize("override, message", [
    ("model.arch=vgg16", "model.arch='vgg16' is not one of"),
    ("model.stem=tiny", "model.stem"),
    ("schedule.name=poly", "schedule.name"),
    ("optim.lr_scaling=cubic", "optim.lr_scaling"),
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
