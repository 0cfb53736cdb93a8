"""The default job (every newcomer's first run): its recipe is the one composed, starts sanely, and
README quotes the figures that scripts/measure_default_job.py measured for this recipe and data."""
import importlib.util
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "resnext" / "conf" / "dataset").glob("*.yaml"))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_dataset_preset_keeps_every_recipe_key_it_sets(preset):
    """The presets set warm-up, nesterov, the stem...: a group later in the defaults list must not undo them."""
    raw = OmegaConf.to_container(OmegaConf.load(preset))
    raw.pop("defaults", None)
    roots = {"dataset.root=/data"} if raw["dataset"].get("root") == "???" else set()
    cfg = compose_config([f"dataset={preset.stem}", *roots], tiny=False)
    for key, value in leaves(raw):
        if key.startswith("dataset.") or value == "???" or isinstance(value, str) and "${" in value:
            continue
        assert OmegaConf.select(cfg, key) == value, f"{preset.name} sets {key}={value}, the run gets " \
                                                    f"{OmegaConf.select(cfg, key)}"


def test_each_preset_shows_only_keys_that_mean_something_for_it():
    imagenet = compose_config(["dataset=imagenet"], tiny=False).dataset
    assert "train_size" not in imagenet and "val_size" not in imagenet
    synthetic = compose_config([], tiny=False).dataset
    assert synthetic.train_size == 4000 and synthetic.val_resize == synthetic.image_size == 32


@pytest.mark.slow
def test_the_default_recipe_starts_near_chance_loss_not_far_above_it():
    """Ten classes: chance is ln 10 = 2.3. Before the fix (no warm-up took effect) the mean of the first 10 steps
    was ~10; of the first 5, which this checks, 6.3 (2026-11-28: 2.4 with the fix)."""
    rows = load_script("first_steps").first_losses([], steps=5)
    mean = sum(loss for _, _, loss in rows) / len(rows)
    assert rows[0][1] == pytest.approx(0.001), "the first step must run at the warm-up's start lr"
    assert mean < 3.0, f"first 5 steps' mean loss {mean:.2f}"


def test_readme_quotes_the_measured_default_job_and_the_recipe_is_the_one_measured():
    measure = load_script("measure_default_job")
    recorded = json.loads(measure.RECORD.read_text())
    readme = (REPO / "README.md").read_text()
    quick_start = " ".join(readme[readme.index("## Quick start"):readme.index("## Composing a run")].split())
    spread = recorded["spread"]
    assert len(recorded["runs"]) >= 3, "one run of a job that is not bit-reproducible is not a figure"

    def span(low_high, unit=""):
        low, high = low_high
        return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"

    assert f"{len(recorded['runs'])} runs" in quick_start
    assert f"{span(spread['wall_time_s'])} s" in quick_start
    assert f"Acc@1 {span(spread['best_acc1'], '%')}" in quick_start
    assert f"{span(spread['acc1_per_epoch'][0], '%')} after the first epoch" in quick_start
    assert f"{span(spread['acc1_per_epoch'][1], '%')} after the second" in quick_start
    assert f"{span(spread['others_cpu_share'])} of a core" in quick_start
    assert ("bit-identical" in quick_start) == spread["bit_identical"]
    for run in recorded.get("other_torch", []):  # other builds of torch: each run's curve, by version
        curve = "/".join(str(acc) for acc in run["acc1_per_epoch"])
        assert f"torch {run['torch'].split('+')[0]}: {curve}%" in quick_start
    now = measure.recipe_fingerprint()
    assert now["synthetic_data_sha256"] == recorded["synthetic_data_sha256"], \
        "the synthetic data changed: run python scripts/measure_default_job.py --record and update README"
    # Keys added later with their defaults do not matter; a recorded value that changed does.
    changed = {k: (v, OmegaConf.select(OmegaConf.create(now["recipe"]), k))
               for k, v in leaves(recorded["recipe"])
               if OmegaConf.select(OmegaConf.create(now["recipe"]), k) != v}
    assert not changed, f"the default recipe changed {changed}: run python scripts/measure_default_job.py " \
                        "--record and update README's quick start"
    assert re.search(r"2-core\s+x86\s+CPU", quick_start)
