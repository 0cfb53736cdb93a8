"""Damaged checkpoint and weights files: refused in one line naming key and file, never a traceback.

Every reader of a user's file goes through resnext.models.checkpoint.load_checkpoint; the fuzz test feeds it
600 damaged copies of a small checkpoint in the trainer's own format (a tiny module instead of ResNeXt-50,
so each load takes a millisecond), the rest show that each entry point (resume, model.weights, evaluate,
export/predict, sweep resume, torchvision's hub cache, the command lines) uses it.
"""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest
import torch
from torch import nn

from resnext import export, predict
from resnext.models import card, checkpoint, pretrained
from resnext.models.checkpoint import CheckpointError
from resnext.training import resume
from resnext.training.optim import build_scheduler
from resnext.training.trainer import _checkpoint_state
from tests.conftest import TINY, cli_in_process, compose_config

SEED = 19


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """checkpoint.pth.tar as the trainer writes it (its keys, its save function), around a tiny model."""
    cfg = compose_config()
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 3, 3)).sum().backward()
    optimizer.step()  # momentum buffers, as a real checkpoint has
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.epochs, 4)
    ctx = SimpleNamespace(device=SimpleNamespace(rng_state=lambda: None))
    state = _checkpoint_state(cfg, model, optimizer, scheduler, SimpleNamespace(state_dict=dict), 1, 50.0, ctx, 10,
                              4, [f"c{i}" for i in range(10)], {})
    run_dir = tmp_path_factory.mktemp("small")
    checkpoint.save_checkpoint(state, run_dir, is_best=True)
    return run_dir / checkpoint.LAST


def damaged_copies(data: bytes, rng: random.Random) -> List[Tuple[str, bytes]]:
    """600 (kind, bytes): truncations, bit flips, random bytes, pickle- and zip-headed random bytes."""
    cuts = sorted({0, 1, 2, 3, len(data) - 1, *rng.sample(range(len(data)), 195)})
    files = [("truncated", data[:cut]) for cut in cuts]
    for _ in range(200):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        files.append(("bit-flipped", bytes(flipped)))
    for head, kind, count in ((b"", "random", 70), (b"\x80\x02", "pickle-headed", 70), (b"PK", "zip-headed", 30),
                              (b"PK\x03\x04", "zip-headed", 30)):
        files += [(kind, head + rng.randbytes(rng.randint(0, 4096))) for _ in range(count)]
    return files


def same_values(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    return a == b


def load_outcome(path: Path, mmap: bool, original: Dict[str, Any]) -> str:
    """"loaded" (with the original's values), the refusal's reason (after "resume=<path>: "), or what went
    wrong: a leak, a bad message, or a file that loaded with a value changed."""
    try:
        state = checkpoint.load_checkpoint(path, "resume", mmap=mmap)
    except CheckpointError as err:
        message, named = str(err), f"resume={path}: "
        if not message.startswith(named) or "\n" in message or "weights_only" in message:
            return f"LEAK: a message that does not name the file in one line: {message}"
        return message[len(named):].removeprefix("cannot be loaded: ").split(". Point ")[0]
    except BaseException as err:  # noqa: BLE001 - what the test is looking for
        return f"LEAK: {type(err).__name__}: {err}"
    if not isinstance(state, dict):
        return f"LEAK: returned a {type(state).__name__}"
    return "loaded" if same_values(state, original) else "LEAK: loaded with a value changed"


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mapped"])  # the pre-launch check maps the file
def test_no_damaged_file_leaks_an_exception(small_checkpoint, tmp_path, mmap):
    files = damaged_copies(small_checkpoint.read_bytes(), random.Random(SEED))
    assert len(files) == 600
    original = checkpoint.load_checkpoint(small_checkpoint)
    outcomes = {}
    for i, (kind, data) in enumerate(files):
        path = tmp_path / f"{i:03d}.pth.tar"
        path.write_bytes(data)
        outcomes.setdefault(kind, []).append(load_outcome(path, mmap, original))
        path.unlink()
    leaks = [(kind, o) for kind, found in outcomes.items() for o in found if o.startswith("LEAK")]
    assert not leaks, f"{len(leaks)} of 600 leaked, e.g. {leaks[:5]}"
    # The diagnosis follows the damage: a cut file is truncated once its zip header is whole.
    assert set(outcomes["truncated"][4:]) == {"it is truncated or its archive is damaged (an interrupted copy or "
                                              "download?)"}
    assert outcomes["truncated"][0] == "it is empty"
    assert set(outcomes["random"]) == {"it is not a PyTorch checkpoint or state dict"}
    # torch checks no CRC-32; load_checkpoint does: a flip inside a member's bytes is refused by name. Flips in
    # bytes nobody reads (alignment padding, unused header fields) still load, with every value intact (above).
    crc = [o for o in outcomes["bit-flipped"] if "fails its CRC-32 check" in o]
    assert len(crc) > 150 and "loaded" in outcomes["bit-flipped"]


def test_memory_and_interrupts_are_not_mistaken_for_damage(small_checkpoint, monkeypatch):
    # MemoryError: a damaged size field is how a file asks for more than there is: one line naming both causes.
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(CheckpointError, match=r"^model.weights=.*: cannot be loaded: reading it asked for more memory"):
        checkpoint.load_checkpoint(small_checkpoint, "model.weights")
    # Ctrl-C while reading is the user's, not the file's: it goes through.
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.load_checkpoint(small_checkpoint)


@pytest.fixture
def truncated(small_checkpoint, tmp_path) -> Path:
    data = small_checkpoint.read_bytes()
    path = tmp_path / "half.pth.tar"
    path.write_bytes(data[:len(data) // 2])
    return path


def _refusal(call) -> str:
    with pytest.raises(CheckpointError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message
    return message


@pytest.mark.parametrize("key, extra", [("resume", []), ("resume", ["evaluate=true"]), ("model.weights", [])])
def test_the_pre_launch_check_refuses_a_truncated_file(truncated, key, extra):
    message = _refusal(lambda: resume.check_input_files(compose_config([f"{key}={truncated}", *extra])))
    assert message.startswith(f"{key}={truncated}: cannot be loaded: it is truncated")


def test_sweep_resume_refuses_an_interrupted_jobs_damaged_checkpoint(truncated, tmp_path):
    """sweep.resume=true sets resume=auto for an interrupted job; train.main checks what that resolves to."""
    job_dir = tmp_path / "3"
    job_dir.mkdir()
    (job_dir / checkpoint.LAST).write_bytes(truncated.read_bytes())
    message = _refusal(lambda: resume.check_input_files(compose_config(["resume=auto"]), job_dir))
    assert message.startswith(f"resume={job_dir / checkpoint.LAST}: cannot be loaded")


def test_export_and_predict_read_through_the_same_loader(truncated):
    assert _refusal(lambda: card.load_model(str(truncated))).startswith(f"checkpoint={truncated}: cannot be loaded")


def test_a_damaged_torchvision_cache_file_is_refused_with_the_cure(truncated, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = pretrained.cached_file(pretrained.resolve("resnext50_32x4d", "torchvision:IMAGENET1K_V2"))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(truncated.read_bytes())
    for call in (pretrained.ensure_cached, pretrained.read_state_dict):  # before the ranks; in each rank
        message = _refusal(lambda: call("resnext50_32x4d", "torchvision:IMAGENET1K_V2"))
        assert message.startswith(f"model.weights={cached}: cannot be loaded") and "delete it" in message


def _one_line_naming(text: str, path: Path) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) == 1 and str(path) in lines[0], text


@pytest.mark.parametrize("key", ["resume", "model.weights"])
def test_train_refuses_a_damaged_file_with_exit_2(truncated, tmp_path, monkeypatch, capsys, key):
    path = truncated
    if key == "model.weights":
        path = tmp_path / "random.pth"
        path.write_bytes(random.Random(SEED).randbytes(3000))
    assert cli_in_process(monkeypatch, tmp_path, [*TINY, f"{key}={path}"]) == 2
    captured = capsys.readouterr()  # the train CLI logs its refusals (Hydra's console handler)
    _one_line_naming(captured.out + captured.err, path)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("tool, args", [(export, ["format=torchscript"]), (predict, ["inputs={image}"])])
def test_export_and_predict_refuse_a_damaged_file_with_exit_2(truncated, tmp_path, capsys, tool, args):
    from PIL import Image

    image = tmp_path / "one.png"
    Image.new("RGB", (20, 20), "orange").save(image)
    assert tool.main([f"checkpoint={truncated}", *(a.format(image=image) for a in args)]) == 2
    captured = capsys.readouterr()
    _one_line_naming(captured.err, truncated)


@pytest.mark.parametrize("garble", ["a flipped key", "no card, a foreign config"])
def test_a_checkpoint_that_loads_with_a_garbled_card_is_refused_naming_it(small_checkpoint, tmp_path, capsys, garble):
    """A file written with a garbled card (no CRC can tell: it was written that way, by a bug or another tool):
    export and predict check the card they read."""
    state = checkpoint.load_checkpoint(small_checkpoint)
    if garble == "a flipped key":
        state["model_card"]["arcH"] = state["model_card"].pop("arch")
    else:  # a checkpoint from before the card, rebuilt from its config: this one is not resnext's
        del state["model_card"]
        state["config"] = {"model": 1}
    path = tmp_path / "garbled.pth.tar"
    checkpoint.save_atomic(state, path)
    assert export.main([f"checkpoint={path}", "format=torchscript"]) == 2  # needs no extra
    err = capsys.readouterr().err
    _one_line_naming(err, path)
    assert "its model card is damaged or not resnext's (missing or wrong: arch" in err
