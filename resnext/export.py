"""python -m resnext.export checkpoint=PATH format=onnx|torchscript|safetensors [out=PATH] [ema=true]

Turns a training checkpoint (checkpoint.pth.tar or model_best.pth.tar) into a deployable file. Arch, class
count and preprocessing come from the checkpoint's model card and travel with the export: ONNX metadata,
a TorchScript extra file, and for every format a JSON sidecar (<out stem>.json). Every export is checked
against the PyTorch model on random inputs of a batch size other than the one traced with, and the max
abs difference is printed; above `tolerance` the tool fails.

ONNX uses torch's TorchScript-based exporter (dynamo=False): on this model it is several times faster
than the dynamo exporter and needs no onnxscript (measured, see README "Export").
"""
from __future__ import annotations

import importlib.util
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from omegaconf import MISSING
from torch import nn

from .config import toolargs
from .config.errors import ConfigError
from .models.card import build_from_card, card_json, load_model

log = logging.getLogger("resnext")

USAGE = "python -m resnext.export checkpoint=PATH format=onnx|torchscript|safetensors [out=PATH] [ema=true]"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
# format -> packages it needs (and the extra that installs them)
NEEDS = {"onnx": ("onnx", "onnxruntime"), "safetensors": ("safetensors",), "torchscript": ()}
TRACE_BATCH, CHECK_BATCH = 2, 3  # checked at another batch size than traced: the batch axis is dynamic


@dataclass
class ExportArgs:
    checkpoint: str = MISSING
    format: str = MISSING
    out: Optional[str] = None  # None: next to the checkpoint, <checkpoint stem><suffix>
    ema: bool = False  # export the EMA weights (the checkpoint must hold them)
    opset: Optional[int] = None  # None: 17 for the default exporter, the exporter's own default with dynamo=true
    dynamo: bool = False  # onnx: torch.export-based exporter (slower here, see the module docstring)
    tolerance: float = 1e-3  # max abs logit difference allowed between the export and PyTorch
    seed: int = 0  # random check inputs


def check_format(fmt: str, dynamo: bool = False) -> None:
    if fmt not in SUFFIX:
        raise ConfigError(f"format={fmt!r} is not one of {', '.join(SUFFIX)}")
    missing = [p for p in NEEDS[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"format={fmt} needs {', '.join(missing)}, not installed: pip install -e \".[export]\"")
    if fmt == "onnx" and dynamo and importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("format=onnx dynamo=true needs onnxscript, not installed: pip install -e \".[export]\" "
                          "(or drop dynamo=true: the default exporter does not need it)")


def out_path(args: Any) -> Path:
    if args.out:
        return Path(args.out)
    ckpt = Path(args.checkpoint)
    return ckpt.with_name(ckpt.name.split(".")[0] + SUFFIX[args.format])


def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path, card: Dict[str, Any], args: Any) -> Callable:
    import onnx
    import onnxruntime as ort

    names = {"input_names": ["images"], "output_names": ["logits"]}
    if args.dynamo:
        torch.onnx.export(model, (example,), str(out), dynamo=True, opset_version=args.opset, **names,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    else:
        with warnings.catch_warnings():  # chosen on purpose (see the module docstring): no deprecation notice
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX", category=DeprecationWarning)
            torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=args.opset or 17, **names,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(out))  # with any external weights file, which the save below folds back in
    entry = proto.metadata_props.add()
    entry.key, entry.value = "resnext", card_json(card)  # predict.py reads the card back from here
    onnx.save(proto, str(out))
    out.with_name(out.name + ".data").unlink(missing_ok=True)  # one self-contained file
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _export_torchscript(model: nn.Module, example: torch.Tensor, out: Path, card: Dict[str, Any], args: Any):
    with warnings.catch_warnings():  # torch marks TorchScript deprecated; the README says so once
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out), _extra_files={"resnext.json": card_json(card)})
        loaded = torch.jit.load(str(out), map_location="cpu")
    return lambda x: loaded(x)


def _export_safetensors(model: nn.Module, example: torch.Tensor, out: Path, card: Dict[str, Any], args: Any):
    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out),
              metadata={"resnext": card_json(card)})
    # Loaded back strictly into a fresh model of the card's arch: what a user of the file would do.
    reloaded = build_from_card(card)
    reloaded.load_state_dict(load_file(str(out)))
    return lambda x: reloaded.eval()(x)


EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript, "safetensors": _export_safetensors}


def export(args: Any) -> Dict[str, Any]:
    """Write the export and its sidecar; returns what was done (path, seconds, max abs difference, size)."""
    check_format(args.format, args.dynamo)
    model, card = load_model(args.checkpoint, ema=args.ema)
    out = out_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    side = card["image_size"]
    example = torch.randn(TRACE_BATCH, 3, side, side, generator=gen)
    started = time.perf_counter()
    with torch.no_grad():
        run_export = EXPORTERS[args.format](model, example, out, card, args)
        seconds = time.perf_counter() - started
        check = torch.randn(CHECK_BATCH, 3, side, side, generator=gen)
        diff = (run_export(check).float() - model(check)).abs().max().item()
    sidecar = out.with_suffix(".json")
    sidecar.write_text(card_json({**card, "format": args.format, "file": out.name, "ema": args.ema}) + "\n")
    result = {"out": str(out), "sidecar": str(sidecar), "seconds": round(seconds, 2), "max_abs_diff": diff,
              "bytes": out.stat().st_size}
    if not diff <= args.tolerance:  # also catches NaN
        raise ConfigError(f"the {args.format} export differs from PyTorch by {diff:.3g} (> tolerance={args.tolerance})"
                          f"; {out} is kept for inspection")
    return result


def _main(argv: List[str]) -> int:
    args = toolargs.parse(ExportArgs, argv, USAGE)
    check_format(args.format, args.dynamo)  # before loading anything
    result = export(args)
    print(f"exported {args.checkpoint} -> {result['out']} ({result['bytes'] / 1e6:.1f} MB, {result['seconds']} s); "
          f"card {result['sidecar']}")
    print(f"checked against PyTorch on {CHECK_BATCH} random inputs: max abs diff {result['max_abs_diff']:.3g}")
    print(json.dumps(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return toolargs.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
