"""python -m resnext.export checkpoint=PATH format=onnx|torchscript|safetensors [out=PATH] [ema=true]

Turns a training checkpoint (checkpoint.pth.tar or model_best.pth.tar) into a deployable file. Arch, class
count and preprocessing come from the checkpoint's model card and travel with the export: ONNX metadata,
a TorchScript extra file, and for every format a JSON sidecar (<out stem>.json).

Every export is checked against the PyTorch model on generated images put through the card's own eval
preprocessing (what predict feeds it, not raw noise), at a batch size other than the one traced with. The
check scales with the outputs: each logit may differ by atol + rtol x the largest |logit| of its image.
Why the image's largest logit and not each logit's own |b| (torch.testing's rule): rounding errors come
from the accumulations that produce the logits, so they scale with the image's activations; a logit that
happens to cancel to ~0 beside others of 1e5 carries the same absolute error as they do, and an elementwise
rule refuses correct exports (measured: a 1000-class head scaled by 1e5 gave 43 of 8000 ONNX logits over
torch.testing's rule at rtol 1e-4, worst 1.3e-6 of the image's largest logit). Top-1 must agree on every
image as well: within the default tolerances that follows unless two logits tie to ~1e-6 (not seen), and it
keeps the answers fixed when a user loosens rtol/atol.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from omegaconf import MISSING
from torch import nn
from torchvision.transforms.functional import to_pil_image

from .config import toolargs
from .config.errors import ConfigError
from .data.synthetic import make_synthetic
from .models.card import build_from_card, card_json, eval_transform, load_model

log = logging.getLogger("resnext")

USAGE = "python -m resnext.export checkpoint=PATH format=onnx|torchscript|safetensors [out=PATH] [ema=true]"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
# format -> packages it needs (and the extra that installs them)
NEEDS = {"onnx": ("onnx", "onnxruntime"), "safetensors": ("safetensors",), "torchscript": ()}
TRACE_BATCH, CHECK_BATCH = 2, 4  # checked at another batch size than traced: the batch axis is dynamic
# Allowed difference per format: |export - pytorch| <= atol + rtol * (the image's largest |logit|).
# onnx runs another runtime's kernels (fused BatchNorm, other conv algorithms and summation orders): measured
# up to 1.3e-6 of the largest logit and 5.7e-6 absolute (README "Export"), so 1e-4 leaves ~100x headroom and
# still refuses any real breakage (a lost or altered weight moves logits by percents). TorchScript and
# safetensors run PyTorch's own kernels on the same weights (measured: identical), so 1e-5 only allows for
# another algorithm choice at another batch size.
RTOL = {"onnx": 1e-4, "torchscript": 1e-5, "safetensors": 1e-5}
ATOL = {"onnx": 1e-4, "torchscript": 1e-5, "safetensors": 1e-5}


@dataclass
class ExportArgs:
    checkpoint: str = MISSING
    format: str = MISSING
    out: Optional[str] = None  # None: next to the checkpoint, <checkpoint stem><suffix>
    ema: bool = False  # export the EMA weights (the checkpoint must hold them)
    opset: Optional[int] = None  # None: 17 for the default exporter, the exporter's own default with dynamo=true
    dynamo: bool = False  # onnx: torch.export-based exporter (slower here, see the module docstring)
    rtol: Optional[float] = None  # None: the format's default (RTOL); relative to each image's largest |logit|
    atol: Optional[float] = None  # None: the format's default (ATOL); the absolute floor of the allowed difference
    tolerance: Optional[float] = None  # the old name of atol (an absolute bound, now with rtol on top)
    seed: int = 0  # of the generated check images


def check_format(fmt: str, dynamo: bool = False) -> None:
    if fmt not in SUFFIX:
        raise ConfigError(f"format={fmt!r} is not one of {', '.join(SUFFIX)}")
    missing = [p for p in NEEDS[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"format={fmt} needs {', '.join(missing)}, not installed: pip install -e \".[export]\"")
    if fmt == "onnx" and dynamo and importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("format=onnx dynamo=true needs onnxscript, not installed: pip install -e \".[export]\" "
                          "(or drop dynamo=true: the default exporter does not need it)")


def tolerances(args: Any) -> Tuple[float, float]:
    """(rtol, atol) for this export: the keys given, else the format's defaults; `tolerance` is atol's old name."""
    if args.tolerance is not None and args.atol is not None:
        raise ConfigError(f"atol={args.atol} and tolerance={args.tolerance}: give one (tolerance is atol's old name)")
    rtol = RTOL[args.format] if args.rtol is None else args.rtol
    atol = args.atol if args.atol is not None else args.tolerance if args.tolerance is not None else ATOL[args.format]
    if not (rtol >= 0 and atol >= 0):  # also refuses NaN
        raise ConfigError(f"rtol={rtol} and atol={atol} must be at least 0")
    return rtol, atol


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


def check_images(card: Dict[str, Any], count: int, seed: int) -> torch.Tensor:
    """`count` generated images through the card's eval preprocessing, as predict would feed them.

    Drawn a quarter larger than the resize, so resizing and cropping are exercised; the synthetic set's
    pictures (stripes, discs, ... in [0, 1]) have the pixel statistics the preprocessing expects, unlike noise.
    """
    side = round(1.25 * max(card["resize"], card["image_size"]))
    images, _ = make_synthetic(count, side, seed)
    transform = eval_transform(card)
    return torch.stack([transform(to_pil_image(image)) for image in images])


def compare(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> Dict[str, Any]:
    """How the export's logits (`got`) agree with PyTorch's (`want`); "ok" when within tolerance and top-1 agrees."""
    got, want = got.float(), want.float()
    diff = (got - want).abs()
    scale = want.abs().amax(dim=1, keepdim=True)  # each image's largest |logit| (see the module docstring)
    allowed = atol + rtol * scale
    top1_agree = int((got.argmax(dim=1) == want.argmax(dim=1)).sum())
    return {"max_abs_diff": diff.max().item(), "max_rel_diff": (diff / scale.clamp_min(1e-30)).max().item(),
            "top1_agree": top1_agree, "images": int(want.shape[0]), "rtol": rtol, "atol": atol,
            "ok": bool((diff <= allowed).all()) and top1_agree == want.shape[0]}  # NaN is never <= allowed


def _mismatch(fmt: str, check: Dict[str, Any], out: Path) -> ConfigError:
    return ConfigError(f"the {fmt} export differs from PyTorch on {check['images']} generated images: worst "
                       f"{check['max_abs_diff']:.3g} absolute, {check['max_rel_diff']:.3g} of the image's largest "
                       f"logit (allowed: atol {check['atol']:g} + rtol {check['rtol']:g} x that), top-1 agrees on "
                       f"{check['top1_agree']}/{check['images']}; {out} is kept for inspection")


def export(args: Any) -> Dict[str, Any]:
    """Write the export and its sidecar, then check it; returns what was done (path, seconds, size, agreement)."""
    check_format(args.format, args.dynamo)
    rtol, atol = tolerances(args)
    model, card = load_model(args.checkpoint, ema=args.ema)
    out = out_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = check_images(card, TRACE_BATCH + CHECK_BATCH, args.seed)
    example, check_inputs = inputs[:TRACE_BATCH], inputs[TRACE_BATCH:]
    started = time.perf_counter()
    with torch.no_grad():
        run_export = EXPORTERS[args.format](model, example, out, card, args)
        seconds = time.perf_counter() - started
        check = compare(run_export(check_inputs), model(check_inputs), rtol, atol)
    sidecar = out.with_suffix(".json")
    sidecar.write_text(card_json({**card, "format": args.format, "file": out.name, "ema": args.ema}) + "\n")
    if not check.pop("ok"):
        raise _mismatch(args.format, check, out)
    return {"out": str(out), "sidecar": str(sidecar), "seconds": round(seconds, 2), "bytes": out.stat().st_size,
            **check}


def _main(argv: List[str]) -> int:
    args = toolargs.parse(ExportArgs, argv, USAGE)
    check_format(args.format, args.dynamo)  # before loading anything
    result = export(args)
    print(f"exported {args.checkpoint} -> {result['out']} ({result['bytes'] / 1e6:.1f} MB, {result['seconds']} s); "
          f"card {result['sidecar']}")
    print(f"checked against PyTorch on {result['images']} generated images (the card's eval preprocessing): max abs "
          f"diff {result['max_abs_diff']:.3g}, max rel diff {result['max_rel_diff']:.3g} (of each image's largest "
          f"logit), top-1 agrees on {result['top1_agree']}/{result['images']} (rtol {result['rtol']:g}, atol "
          f"{result['atol']:g})")
    print(json.dumps(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return toolargs.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
