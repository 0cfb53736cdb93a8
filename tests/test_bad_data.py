"""Bad images (dataset.bad_images=error|skip), python -m resnext.verify_data, and per-sample augmentation seeds."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from resnext.data.loaders import ResumableSampler
from resnext.data.robust import BadImageError, GuardedSamples, bad_image_message
from resnext.loggers.metrics import read_metrics
from resnext.verify_data import main as verify_main
from tests.conftest import compose_config, run_cli, train_in_process
from tests.test_data import write_image_tree


def damage(root: Path) -> tuple:
    """One truncated JPEG in train/, one file of garbage in val/; returns their paths."""
    truncated = root / "train" / "bee" / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage = root / "val" / "cat" / "2.jpg"
    garbage.write_bytes(b"not an image at all" * 10)
    return truncated, garbage


def folder_overrides(root: Path, *extra: str) -> list:
    # loader=torch: these tests are about data/robust.py (test_dali.py covers DALI's report of a bad file).
    return ["dataset=folder", f"dataset.root={root}", "dataset.loader=torch", "dataset.image_size=16",
            "dataset.val_resize=18",
            "dataset.batch_size=6", "dataset.val_batch_size=6", "model.norm=group", *extra]


@pytest.mark.slow
def test_a_truncated_jpeg_stops_the_run_naming_the_file_and_the_option(tmp_path):
    root = write_image_tree(tmp_path / "data", per_class=4)
    truncated, _ = damage(root)
    with pytest.raises(BadImageError) as err:
        train_in_process(compose_config(folder_overrides(root, "dataset.workers=1")), tmp_path / "run")
    message = bad_image_message(err.value)
    assert str(truncated) in message and "dataset.bad_images=skip" in message
    assert "Traceback" not in message


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_bad_image_in_a_spawned_rank_comes_back_as_one_clean_error(tmp_path):
    root = write_image_tree(tmp_path / "data", per_class=4)
    truncated, _ = damage(root)
    cfg = compose_config(folder_overrides(root, "dataset.workers=0", "device=cpu", "distributed=spawn",
                                          "device.nprocs=2"))
    with pytest.raises(BadImageError) as err:
        train_in_process(cfg, tmp_path / "run")
    assert str(err.value).startswith(f"cannot decode {truncated}") and "Traceback" not in str(err.value)


@pytest.mark.slow
def test_the_cli_reports_a_bad_image_in_one_line_without_a_traceback(tmp_path):
    root = write_image_tree(tmp_path / "data", per_class=4)
    truncated, _ = damage(root)
    proc = run_cli([*folder_overrides(root, "dataset.workers=1"), "epochs=1", "tensorboard=false"], tmp_path,
                   check=False, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot decode {truncated}" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_skip_replaces_bad_images_logs_each_once_and_counts_them_per_epoch(tmp_path, caplog):
    root = write_image_tree(tmp_path / "data", per_class=4)
    truncated, garbage = damage(root)
    cfg = compose_config(folder_overrides(root, "dataset.workers=1", "dataset.bad_images=skip", "epochs=2"))
    with caplog.at_level(logging.WARNING, logger="resnext"):
        train_in_process(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    # Each epoch reads the truncated train image once and the garbage val image once.
    assert [r["skipped_images"] for r in records] == [2, 2]
    warnings = [r.getMessage() for r in caplog.records if "skipped an undecodable image" in r.getMessage()]
    assert sorted(warnings) == sorted(f"skipped an undecodable image (dataset.bad_images=skip): {p}"
                                      for p in (truncated, garbage))
    assert records[-1]["val_samples"] == 12  # the bad one was replaced, not dropped


@pytest.mark.slow
def test_verify_data_lists_every_bad_file_and_fails(tmp_path, capsys):
    root = write_image_tree(tmp_path / "data", per_class=3)
    assert verify_main(["dataset=folder", f"dataset.root={root}"]) == 0
    assert "checked 18 images" in capsys.readouterr().out
    truncated, garbage = damage(root)
    assert verify_main(["dataset=folder", f"dataset.root={root}"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {truncated}: OSError" in out and f"BAD {garbage}:" in out
    assert "18 images" in out and ": 2 bad" in out
    assert verify_main(["dataset=folder", f"dataset.root={tmp_path / 'nowhere'}"]) == 2


class _Draws(Dataset):
    """A 'transform' that only draws random numbers, the way augmentations do."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.rand(4), index


def _guarded(rank: int, epoch: int) -> GuardedSamples:
    samples = GuardedSamples(_Draws(), split="train", seed=7, rank=rank, bad_images="error", skip_log=None,
                             seeded=True)
    samples.set_epoch(epoch)
    return samples


def test_augmentation_draws_depend_on_seed_epoch_rank_and_index_only():
    before = torch.get_rng_state()
    first = _guarded(0, 0)[3][0]
    assert torch.equal(first, _guarded(0, 0)[3][0])  # any process, any time: the same draw
    assert not torch.equal(first, _guarded(1, 0)[3][0])  # each rank its own stream
    assert not torch.equal(first, _guarded(0, 1)[3][0])  # a new draw every epoch
    assert not torch.equal(first, _guarded(0, 0)[4][0])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched


def test_the_resumable_sampler_starts_inside_the_epoch_order():
    full = ResumableSampler(range(40), num_replicas=2, rank=1, shuffle=True, seed=3, drop_last=True)
    full.set_epoch(5)
    order = list(full)
    full.skip = 6
    assert list(full) == order[6:] and len(full) == len(order) - 6


def test_a_transform_bug_on_a_good_image_is_not_called_a_bad_image(tmp_path):
    from torchvision.datasets import ImageFolder

    def broken_transform(image):
        raise RuntimeError("a bug in a transform")

    root = write_image_tree(tmp_path / "data", per_class=1)
    samples = GuardedSamples(ImageFolder(str(root / "train"), transform=broken_transform), split="train", seed=0,
                             rank=0, bad_images="skip", skip_log=tmp_path / "skips.tsv", seeded=True)
    with pytest.raises(RuntimeError, match="a bug in a transform"):
        samples[0]
    assert not (tmp_path / "skips.tsv").exists()
