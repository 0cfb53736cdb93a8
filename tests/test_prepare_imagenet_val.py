"""scripts/prepare_imagenet_val.py on a fake flat ILSVRC2012 val folder (bytes only: nothing is decoded)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.conftest import compose_config
from resnext.data import check_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_imagenet_val.py"
LABELS = {f"ILSVRC2012_val_{i:08d}": wnid for i, wnid in
          enumerate(["n01440764", "n01443537", "n01484850", "n01440764", "n01443537", "n01484850"], start=1)}


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_imagenet_val", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = _load_script()


def write_solution(path: Path, labels: Dict[str, str] = LABELS, header: str = "ImageId,PredictionString") -> Path:
    # Kaggle form: the class, then a box, then possibly more (class, box) groups.
    rows = [f"{image_id},{wnid} 12 34 56 78 {wnid} 1 2 3 4" for image_id, wnid in labels.items()]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """A flat val folder: one small file per listed image, its content its own name."""
    folder = tmp_path / "val"
    folder.mkdir()
    for image_id in LABELS:
        (folder / f"{image_id}.JPEG").write_bytes(image_id.encode())
    write_solution(tmp_path / "LOC_val_solution.csv")
    return folder


def run(flat: Path, *extra: str) -> int:
    return prepare.main(["--val-dir", str(flat), "--solution", str(flat.parent / "LOC_val_solution.csv"), *extra])


def sorted_files(out: Path) -> List[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("n*/*"))


EXPECTED = sorted(f"{wnid}/{image_id}.JPEG" for image_id, wnid in LABELS.items())


def test_sorts_in_place_by_moving_and_a_rerun_changes_nothing(flat, capsys):
    assert run(flat) == 0
    assert sorted_files(flat) == EXPECTED
    assert not list(flat.glob("*.JPEG"))  # moved, not copied
    for name in EXPECTED:
        assert (flat / name).read_bytes() == Path(name).stem.encode()
    assert "sorted 6 images into 3 class folders" in capsys.readouterr().out

    assert run(flat) == 0
    assert sorted_files(flat) == EXPECTED
    assert "0 moved, 6 already in place" in capsys.readouterr().out


def test_out_copies_by_default_and_leaves_the_source_alone(flat, tmp_path, capsys):
    out = tmp_path / "sorted"
    assert run(flat, "--out", str(out)) == 0
    assert sorted_files(out) == EXPECTED
    assert len(list(flat.glob("*.JPEG"))) == 6
    assert "6 copied" in capsys.readouterr().out
    assert not list(out.rglob("*.partial"))
    assert run(flat, "--out", str(out)) == 0
    assert "0 copied, 6 already in place" in capsys.readouterr().out


def test_symlink_links_to_the_flat_files(flat, tmp_path):
    out = tmp_path / "links"
    assert run(flat, "--out", str(out), "--symlink") == 0
    link = out / "n01440764" / "ILSVRC2012_val_00000001.JPEG"
    assert link.is_symlink() and link.resolve() == (flat / "ILSVRC2012_val_00000001.JPEG").resolve()
    assert run(flat, "--out", str(out), "--symlink") == 0  # existing links are kept, not an error


def test_move_to_another_folder_empties_the_flat_one(flat, tmp_path):
    out = tmp_path / "sorted"
    assert run(flat, "--out", str(out), "--move") == 0
    assert sorted_files(out) == EXPECTED and not list(flat.iterdir())


def test_dry_run_changes_nothing(flat, capsys):
    before = sorted(p.name for p in flat.iterdir())
    assert run(flat, "--dry-run") == 0
    assert sorted(p.name for p in flat.iterdir()) == before
    assert "dry run: would sort 6 images into 3 class folders" in capsys.readouterr().out


def test_the_sorted_folder_passes_check_dataset_as_imagenet_val(flat, tmp_path):
    root = tmp_path / "imagenet"
    assert run(flat, "--out", str(root / "val")) == 0
    run(flat, "--out", str(root / "train"))  # the same class folders stand in for train/
    cfg = compose_config(["dataset=imagenet", f"dataset.root={root}", "dataset.num_classes=3"])
    assert check_dataset(cfg.dataset) == 3


def refused(flat: Path, capsys, *extra: str) -> str:
    assert run(flat, *extra) == 2
    return capsys.readouterr().err


def test_a_missing_csv_is_refused(flat, capsys):
    (flat.parent / "LOC_val_solution.csv").unlink()
    assert "LOC_val_solution.csv does not exist" in refused(flat, capsys)


def test_a_bad_header_is_refused(flat, capsys):
    write_solution(flat.parent / "LOC_val_solution.csv", header="id,label")
    assert "the header is id,label, expected ImageId,PredictionString" in refused(flat, capsys)


def test_a_row_without_a_wnid_is_refused(flat, capsys):
    write_solution(flat.parent / "LOC_val_solution.csv", {"ILSVRC2012_val_00000001": "dog"})
    assert "LOC_val_solution.csv:2: expected `ImageId,<wnid> <box> ...`" in refused(flat, capsys)


def test_a_listed_image_that_is_missing_is_refused_before_anything_moves(flat, capsys):
    (flat / "ILSVRC2012_val_00000004.JPEG").unlink()
    message = refused(flat, capsys)
    assert "1 images listed in the CSV are neither in" in message and "ILSVRC2012_val_00000004" in message
    assert not sorted_files(flat) and len(list(flat.glob("*.JPEG"))) == 5  # nothing was touched


def test_copy_without_out_is_refused(flat, capsys):
    with pytest.raises(SystemExit) as caught:
        run(flat, "--copy")
    assert caught.value.code == 2 and "--copy needs --out" in capsys.readouterr().err
