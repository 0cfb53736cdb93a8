"""Read a W&B offline run file (run-*.wandb) back in a test: the records W&B would upload on `wandb sync`.

wandb >= 0.19 reads these files only from its Go core, so this is the documented LevelDB-log framing
(a 7-byte ":W&B" header, 32 KiB blocks, records of [crc32 uint32, length uint16, type uint8] + data, type
FULL=1 or FIRST=2 / MIDDLE=3 / LAST=4) around wandb's own protobuf Record messages.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Dict, Iterator, List

BLOCK = 32768
HEADER = 7
EXIT_WAIT_S = 30  # how long read_run waits for wandb to finish writing the file


def _payloads(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        pos += HEADER
        pending += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST: one whole record
            yield pending
            pending = b""


def read_run(path: Path) -> Dict[str, object]:
    """{"config": {key: value}, "history": [{key: value}, ...]} from the run file, values JSON-decoded."""
    from wandb.proto import wandb_internal_pb2

    records = []
    deadline = time.monotonic() + EXIT_WAIT_S
    # run.finish() can return before wandb's core process has flushed the file: wait for its closing exit record.
    while True:
        try:
            records = [wandb_internal_pb2.Record.FromString(payload) for payload in _payloads(path)]
        except Exception:  # noqa: BLE001 - a record cut off mid-write: read again
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    config: Dict[str, object] = {}
    history: List[Dict[str, object]] = []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):  # the config given to wandb.init, then run.config.update()s
            items = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return {"config": config, "history": history}
