"""python -m resnext.predict checkpoint=PATH inputs=PATH_OR_GLOB [topk=5] [csv=FILE] [json=FILE]

Top-k classes with probabilities for images, a folder (searched recursively) or a glob, with the class
names and the eval preprocessing (resize, centre crop, mean/std) stored in the checkpoint's model card.
`checkpoint=` takes a training checkpoint (PyTorch, on any device) or an exported .onnx file (onnxruntime,
card from the ONNX metadata). Images go through the model in batches of `batch_size`.

A file that cannot be decoded is skipped, not fatal: it is listed on stderr (one line each, then the count)
and the rest are predicted; the exit code is 0 when at least one image was predicted, 2 when none could be.
"""
from __future__ import annotations

import csv
import glob
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from omegaconf import MISSING

from .config import toolargs
from .config.errors import ConfigError
from .data.robust import decode_image
from .models.card import card_from_json, class_name, eval_transform, load_model

USAGE = "python -m resnext.predict checkpoint=PATH(.pth.tar|.onnx) inputs=PATH_OR_GLOB [topk=5] [csv=FILE] [json=FILE]"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PredictArgs:
    checkpoint: str = MISSING
    inputs: str = MISSING
    topk: int = 5
    batch_size: int = 32
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N | npu ...; .pth.tar only
    ema: bool = False  # use the checkpoint's EMA weights
    csv: Optional[str] = None  # also write one row per (image, rank) here
    json: Optional[str] = None  # also write [{file, top: [{class, index, probability}]}] here


def find_images(inputs: str) -> List[Path]:
    """An image file, every image under a folder, or every image a glob matches; sorted."""
    path = Path(inputs)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in glob.glob(inputs, recursive=True) if p.lower().endswith(IMAGE_SUFFIXES)]
    if not found:
        raise ConfigError(f"inputs={inputs}: no images there (a file, a folder or a glob of "
                          f"{', '.join(IMAGE_SUFFIXES)})")
    return sorted(found)


def _onnx_backend(path: str) -> Tuple[Forward, Dict[str, Any]]:
    if importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError(f"checkpoint={path} is ONNX and needs onnxruntime: pip install -e \".[export]\"")
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ConfigError(f"checkpoint={path}: no such file")
    try:
        session = ort.InferenceSession(path, providers=ort.get_available_providers())
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        reason = str(err).splitlines()[0][:200]
        raise ConfigError(f"checkpoint={path} is not a readable ONNX model ({reason})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "resnext" not in meta:
        raise ConfigError(f"checkpoint={path} carries no resnext model card: export it with python -m resnext.export")
    name = session.get_inputs()[0].name
    card = card_from_json(meta["resnext"], f"checkpoint={path}")
    return (lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])), card


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("npu") and importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401 - registers the npu device type with torch
    try:
        device = torch.device(name)
        torch.empty(1, device=device)  # a device that is named right but absent fails here, before any work
    except (RuntimeError, AssertionError) as err:
        raise ConfigError(f"device={name} cannot be used here ({str(err).splitlines()[0][:160]}); "
                          "try device=auto or device=cpu") from None
    return device


def _torch_backend(args: Any) -> Tuple[Forward, Dict[str, Any]]:
    device = _device(args.device)
    model, card = load_model(args.checkpoint, ema=args.ema)
    model = model.to(device)

    @torch.no_grad()
    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).float().cpu()

    return forward, card


Skipped = List[Tuple[Path, str]]  # (file, why it could not be read)


def _read_batch(paths: List[Path], transform: Any, skipped: Skipped) -> Tuple[List[Path], List[torch.Tensor]]:
    """The images of `paths` that decode, transformed; the others are added to `skipped`, not fatal: one bad
    file in a folder of thousands should cost its own answer, not everyone's."""
    kept, tensors = [], []
    for path in paths:
        image, error = decode_image(str(path))
        if error is None:
            kept.append(path)
            tensors.append(transform(image))
        else:
            skipped.append((path, error))
    return kept, tensors


def predict(args: Any) -> Tuple[List[Dict[str, Any]], Skipped]:
    """([{file, top: [{class, index, probability}, ...]}] for every readable image in file order, the files
    that could not be read with why)."""
    if args.topk < 1 or args.batch_size < 1:
        raise ConfigError(f"topk={args.topk} and batch_size={args.batch_size} must be at least 1")
    files = find_images(args.inputs)
    forward, card = _onnx_backend(args.checkpoint) if args.checkpoint.endswith(".onnx") else _torch_backend(args)
    transform = eval_transform(card)
    k = min(args.topk, card["num_classes"])
    results: List[Dict[str, Any]] = []
    skipped: Skipped = []
    for start in range(0, len(files), args.batch_size):
        chunk, tensors = _read_batch(files[start:start + args.batch_size], transform, skipped)
        if not chunk:
            continue
        values, indices = forward(torch.stack(tensors)).softmax(dim=1).topk(k, dim=1)
        for path, vals, idxs in zip(chunk, values.tolist(), indices.tolist()):
            results.append({"file": str(path), "top": [
                {"class": class_name(card, i), "index": i, "probability": round(v, 6)} for v, i in zip(vals, idxs)]})
    return results, skipped


def _report_skipped(args: Any, skipped: Skipped, total: int) -> None:
    """Each unreadable file on stderr, then the count; none readable at all is a refusal (exit 2)."""
    for path, error in skipped:
        print(f"skipped {path}: not a readable image ({error})", file=sys.stderr)
    if len(skipped) == total:
        raise ConfigError(f"inputs={args.inputs}: none of the {total} images could be read")
    if skipped:
        print(f"skipped {len(skipped)} of {total} images that could not be read; predicted the other "
              f"{total - len(skipped)}", file=sys.stderr)


def format_table(results: List[Dict[str, Any]]) -> str:
    width = max(len("file"), *(len(r["file"]) for r in results))
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for r in results:
        lines.append(f"{r['file']:<{width}}  " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))
    return "\n".join(lines)


def _write_outputs(args: Any, results: List[Dict[str, Any]]) -> None:
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "rank", "class", "index", "probability"])
            for r in results:
                for rank, t in enumerate(r["top"], start=1):
                    writer.writerow([r["file"], rank, t["class"], t["index"], t["probability"]])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _main(argv: List[str]) -> int:
    args = toolargs.parse(PredictArgs, argv, USAGE)
    results, skipped = predict(args)
    _report_skipped(args, skipped, len(results) + len(skipped))
    print(format_table(results))
    _write_outputs(args, results)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return toolargs.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
