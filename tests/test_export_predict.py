"""Checkpoint -> export (ONNX, TorchScript, safetensors) -> predict, and evaluate=true's per-class pictures.

One tiny run (module fixture) gives the checkpoint every test here uses.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from resnext import export, predict
from resnext.data.synthetic import CLASSES, make_synthetic
from resnext.models.card import build_from_card, load_model
from tests.conftest import compose_config, needs, train_in_process

ONNX = needs("onnx", "onnxruntime", extra="export")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train_in_process(compose_config(["max_steps_per_epoch=2"]), run)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Five synthetic images as PNG files, one in a sub-folder (folders are searched recursively)."""
    from torchvision.transforms.functional import to_pil_image

    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    pictures, labels = make_synthetic(5, 16, seed=7)
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        (folder / ("sub" if i == 0 else "") / f"{i}_{CLASSES[label]}.png").parent.mkdir(exist_ok=True)
        to_pil_image(picture).save(folder / ("sub" if i == 0 else "") / f"{i}_{CLASSES[label]}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.slow
def test_checkpoint_carries_class_names_and_the_model_card(run_dir):
    state = torch.load(run_dir / "model_best.pth.tar", weights_only=True)
    assert state["class_names"] == list(CLASSES)
    card = state["model_card"]
    assert card["arch"] == "resnext50_32x4d" and card["num_classes"] == 10 and card["stem"] == "imagenet"
    assert card["image_size"] == 16 and card["resize"] == 16  # synthetic: the image is the crop
    dataset = compose_config().dataset
    assert card["mean"] == pytest.approx(list(dataset.mean)) and card["std"] == pytest.approx(list(dataset.std))


def _export(run_dir: Path, fmt: str, capsys) -> str:
    assert export.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", f"format={fmt}"]) == 0
    return capsys.readouterr().out


@ONNX
@pytest.mark.slow
def test_onnx_export_has_a_dynamic_batch_and_matches_pytorch(run_dir, capsys):
    import onnxruntime as ort

    out = _export(run_dir, "onnx", capsys)
    assert "max abs diff" in out
    assert json.loads(out.strip().splitlines()[-1])["max_abs_diff"] < 1e-3
    session = ort.InferenceSession(str(run_dir / "model_best.onnx"), providers=["CPUExecutionProvider"])
    card = json.loads(session.get_modelmeta().custom_metadata_map["resnext"])
    assert card["class_names"] == list(CLASSES)
    model, _ = load_model(str(run_dir / "model_best.pth.tar"))
    for batch in (1, 5):  # neither is the batch size traced with (2)
        x = torch.randn(batch, 3, 16, 16)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            assert torch.allclose(got, model(x), atol=1e-4)


@pytest.mark.slow
def test_torchscript_export_runs_without_the_python_model(run_dir, capsys):
    _export(run_dir, "torchscript", capsys)
    extra = {"resnext.json": ""}
    scripted = torch.jit.load(str(run_dir / "model_best.pt"), _extra_files=extra)
    assert json.loads(extra["resnext.json"])["arch"] == "resnext50_32x4d"
    model, _ = load_model(str(run_dir / "model_best.pth.tar"))
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


@needs("safetensors", extra="export")
@pytest.mark.slow
def test_safetensors_export_with_sidecar_loads_strictly_into_the_architecture(run_dir, capsys):
    from safetensors.torch import load_file

    _export(run_dir, "safetensors", capsys)
    card = json.loads((run_dir / "model_best.json").read_text())
    assert {"arch", "class_names", "mean", "std", "image_size", "resize"} <= card.keys()
    fresh = build_from_card(card).eval()
    fresh.load_state_dict(load_file(str(run_dir / "model_best.safetensors")))  # strict
    model, _ = load_model(str(run_dir / "model_best.pth.tar"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@ONNX
@pytest.mark.slow
def test_predict_from_checkpoint_and_from_onnx_agree(run_dir, images, tmp_path, capsys):
    if not (run_dir / "model_best.onnx").is_file():
        _export(run_dir, "onnx", capsys)
    table_csv, table_json = tmp_path / "p.csv", tmp_path / "p.json"
    assert predict.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", f"inputs={images}", "topk=3",
                         "batch_size=2", f"csv={table_csv}", f"json={table_json}"]) == 0
    printed = capsys.readouterr().out
    from_torch = json.loads(table_json.read_text())
    assert len(from_torch) == 5 and "0_" in from_torch[0]["file"] or any("sub" in r["file"] for r in from_torch)
    for result in from_torch:
        probs = [t["probability"] for t in result["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-5
        assert all(t["class"] == CLASSES[t["index"]] for t in result["top"])
        assert Path(result["file"]).name in printed
    with table_csv.open() as f:
        assert len(list(csv.DictReader(f))) == 15
    from_onnx, skipped = predict.predict(predict.toolargs.parse(predict.PredictArgs, [
        f"checkpoint={run_dir / 'model_best.onnx'}", f"inputs={images}/**/*.png", "topk=3"], predict.USAGE))
    assert skipped == []
    assert [r["file"] for r in from_onnx] == [r["file"] for r in from_torch]
    for a, b in zip(from_onnx, from_torch):
        assert a["top"][0]["class"] == b["top"][0]["class"]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)


# format=torchscript where the checkpoint is the mistake: it needs no optional package, so none is refused first.
@pytest.mark.parametrize("tool, args, message", [
    (export, ["checkpoint=/nonexistent/model_best.pth.tar", "format=torchscript"], "checkpoint=/nonexistent/model_best"
                                                                          ".pth.tar: no such file"),
    (export, ["checkpoint={garbage}", "format=torchscript"], "cannot be loaded: it is not a PyTorch checkpoint"),
    (export, ["checkpoint={ckpt}", "format=tflite"], "format='tflite' is not one of onnx, torchscript, safetensors"),
    (export, ["chekpoint={ckpt}", "format=onnx"], "Key 'chekpoint' not in 'ExportArgs'"),
    (export, ["format=onnx"], "checkpoint must be given"),
    (export, ["checkpoint={ckpt}", "format=torchscript", "ema=true"], "holds no EMA weights"),
    (predict, ["checkpoint={ckpt}", "inputs={tmp}/*.jpg"], "no images there"),
    (predict, ["checkpoint={ckpt}", "inputs={images}", "device=tpu"], "device=tpu cannot be used here"),
    pytest.param(predict, ["checkpoint={garbage_onnx}", "inputs={images}"], "is not a readable ONNX model",
                 marks=needs("onnxruntime", extra="export")),
    (predict, ["checkpoint={garbage}", "inputs={images}"], "cannot be loaded: it is not a PyTorch checkpoint"),
])
def test_user_mistakes_end_in_one_line_and_exit_2(run_dir, images, tmp_path, capsys, tool, args, message):
    (tmp_path / "garbage.pth.tar").write_bytes(b"not a checkpoint at all")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    paths = {"ckpt": run_dir / "model_best.pth.tar", "garbage": tmp_path / "garbage.pth.tar",
             "garbage_onnx": tmp_path / "garbage.onnx", "tmp": tmp_path, "images": images}
    assert tool.main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_export_with_huge_logits_passes_the_scaled_check(run_dir, tmp_path, capsys):
    """fc scaled by 1e5: logits of ~1e5, so ONNX differs by far more than the old fixed 1e-3 (a correct export)."""
    from resnext.models.checkpoint import save_atomic

    state = torch.load(run_dir / "model_best.pth.tar", weights_only=True)
    for key in ("fc.weight", "fc.bias"):
        state["state_dict"][key] = state["state_dict"][key] * 1e5
    save_atomic(state, tmp_path / "huge.pth.tar")
    assert export.main([f"checkpoint={tmp_path / 'huge.pth.tar'}", "format=onnx"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["max_abs_diff"] > 1e-3 and result["max_rel_diff"] < 1e-5  # refused before, passes now
    assert result["top1_agree"] == result["images"] == export.CHECK_BATCH


@needs("safetensors", extra="export")
def test_a_broken_export_fails_with_both_figures(run_dir, tmp_path, monkeypatch, capsys):
    """The written file's weights differ a little (as a bad write would): the check refuses it, exit 2."""
    import safetensors.torch

    real_load = safetensors.torch.load_file

    def damaged_load(path, *args, **kwargs):
        tensors = real_load(path, *args, **kwargs)
        tensors["fc.weight"] = tensors["fc.weight"] * 1.01
        return tensors

    monkeypatch.setattr(safetensors.torch, "load_file", damaged_load)
    out = tmp_path / "broken.safetensors"
    assert export.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", "format=safetensors", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"the safetensors export differs from PyTorch on {export.CHECK_BATCH} generated images: worst " in err
    assert "of the image's largest logit (allowed: atol 1e-05 + rtol 1e-05 x that), top-1 agrees on " in err
    assert f"{out} is kept for inspection" in err


def test_the_check_scales_with_each_images_logits_and_tolerates_ties():
    want = torch.tensor([[1e5, -3e4, 0.5], [2.0, 1.0, -1.0]])
    near_zero = want + torch.tensor([[1.0, 0.5, 0.8], [0.0, 0.0, 0.0]])  # 1e-5 of the row: 160% of the 0.5 logit
    assert export.compare(near_zero, want, rtol=1e-4, atol=1e-4)["ok"]
    assert not export.compare(want * 1.001, want, rtol=1e-4, atol=1e-4)["ok"]
    other_answer = export.compare(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 1.0]]), rtol=0.0, atol=10.0)
    assert not other_answer["ok"] and other_answer["top1_agree"] == 0  # a loose tolerance keeps the answers
    assert not export.compare(torch.full((1, 3), float("nan")), want[:1], rtol=1e-4, atol=1e-4)["ok"]


def test_the_check_images_are_the_cards_eval_preprocessing_of_pictures():
    card = {"resize": 256, "image_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    images = export.check_images(card, 2, seed=0)
    assert images.shape == (2, 3, 224, 224)
    mean, std = torch.tensor(card["mean"]).view(1, 3, 1, 1), torch.tensor(card["std"]).view(1, 3, 1, 1)
    pixels = images * std + mean  # back to [0, 1]: normalised pictures, not noise
    assert pixels.min() > -1e-5 and pixels.max() < 1 + 1e-5
    assert torch.equal(images, export.check_images(card, 2, seed=0))  # the seed fixes them


def test_predict_skips_unreadable_images_and_lists_them(run_dir, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(images.rglob("*.png"))[:2]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    broken = folder / "broken.png"
    broken.write_bytes(b"not a png at all")
    cut = folder / "cut.png"
    cut.write_bytes(good[0].read_bytes()[:60])
    table_json = tmp_path / "p.json"
    assert predict.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", f"inputs={folder}", f"json={table_json}"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"skipped {broken}: not a readable image (") and err[1].startswith(f"skipped {cut}: ")
    assert err[2:] == ["skipped 2 of 4 images that could not be read; predicted the other 2"]
    assert [Path(r["file"]).name for r in json.loads(table_json.read_text())] == [p.name for p in good]
    assert all(p.name in captured.out for p in good) and "broken.png" not in captured.out
    for path in good:
        (folder / path.name).unlink()
    assert predict.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", f"inputs={folder}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1] == f"error: inputs={folder}: none of the 2 images could be read"


def test_a_missing_export_package_is_named_with_the_pip_line(run_dir, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    hidden = ("onnx", "onnxruntime")  # both, so the message is the same whether or not the extra is installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    assert export.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", "format=onnx"]) == 2
    assert 'format=onnx needs onnx, onnxruntime, not installed: pip install -e ".[export]"' in capsys.readouterr().err


def test_evaluate_writes_per_class_table_and_confusion_picture(run_dir, tmp_path):
    eval_dir = tmp_path / "eval"
    acc1 = train_in_process(compose_config([f"resume={run_dir / 'model_best.pth.tar'}", "evaluate=true"]), eval_dir)
    with (eval_dir / "per_class.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(CLASSES)
    assert sum(int(r["samples"]) for r in rows) == 40  # TINY's dataset.val_size: every image once
    assert 100.0 * sum(int(r["correct"]) for r in rows) / 40 == pytest.approx(acc1)
    assert (eval_dir / "per_class.md").read_text().startswith("| class | samples | Acc@1 %")
    assert (eval_dir / "confusion.png").stat().st_size > 10_000


def test_confusion_picture_of_a_1000_class_set_shows_the_most_confused_classes(tmp_path):
    from resnext.loggers.plots import CONFUSION_TOP_N, most_confused, write_confusion

    matrix = torch.diag(torch.full((1000,), 50, dtype=torch.int64))
    planted = [(3, 997), (500, 501), (42, 7)]  # true -> predicted mistakes
    for true, pred in planted:
        matrix[true, true] -= 20
        matrix[true, pred] += 20
    assert most_confused(matrix, CONFUSION_TOP_N) == [3, 7, 42, 500, 501, 997]  # only classes with mistakes
    assert len(most_confused(matrix, 4)) == 4
    for true, pred in [(i, i + 1) for i in range(100, 140)]:
        matrix[true, pred] += 1
    assert len(most_confused(matrix, CONFUSION_TOP_N)) == CONFUSION_TOP_N
    names = [f"n{i:08d} class number {i}" for i in range(1000)]
    write_confusion(tmp_path / "confusion.png", matrix, names)
    assert (tmp_path / "confusion.png").stat().st_size > 10_000


@pytest.mark.slow
@needs("onnx", "onnxruntime", "onnxscript", extra="export")
def test_the_dynamo_onnx_exporter_gives_one_verified_file_too(run_dir, tmp_path, capsys):
    out = tmp_path / "dynamo.onnx"
    assert export.main([f"checkpoint={run_dir / 'model_best.pth.tar'}", "format=onnx", "dynamo=true",
                        f"out={out}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_abs_diff"] < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamo.json", "dynamo.onnx"]  # weights inside


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predict_on_cuda_gives_the_cpu_top1(run_dir, images):
    def top1(device):
        args = predict.toolargs.parse(predict.PredictArgs, [f"checkpoint={run_dir / 'model_best.pth.tar'}",
                                                           f"inputs={images}", f"device={device}"], predict.USAGE)
        return [r["top"][0]["class"] for r in predict.predict(args)[0]]

    assert top1("cuda") == top1("cpu")


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_per_class_counts_over_two_ranks_equal_one_process(run_dir, tmp_path):
    # Each rank evaluates its own shard; the confusion matrices are summed, so every image counts once.
    evaluate = [f"resume={run_dir / 'model_best.pth.tar'}", "evaluate=true", "device=cpu"]
    train_in_process(compose_config(evaluate), tmp_path / "one")
    train_in_process(compose_config([*evaluate, "distributed=spawn", "device.nprocs=2"]), tmp_path / "two")
    one, two = ((tmp_path / d / "per_class.csv").read_text() for d in ("one", "two"))
    assert one == two
