"""Sinks that write files into the run directory: TensorBoard event files and a per-epoch CSV."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

from .base import FINISHED, Sink, scalars


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, run_dir: Path, subdir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / subdir))

    def log_params(self, params: Dict[str, str], tags: Dict[str, str]) -> None:
        # One text entry: TensorBoard's hparams plugin wants a final metric dict we do not have yet.
        table = "\n".join(f"| {k} | {v} |" for k, v in {**tags, **params}.items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table, 0)

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        for key, value in scalars(values).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def log_step(self, step: int, values: Dict[str, float]) -> None:
        for key, value in scalars(values).items():
            self.writer.add_scalar(f"step/{key}", value, step)

    def close(self, run_dir: Path, status: str = FINISHED) -> None:
        self.writer.close()


class CsvSink(Sink):
    """metrics.csv: one row per epoch. The header is the first record's keys; later new keys are appended."""

    name = "csv"

    def __init__(self, run_dir: Path, file: str) -> None:
        self.path = run_dir / file
        self.rows: List[Dict[str, str]] = []
        if self.path.is_file():  # a resumed run continues the table it started
            with self.path.open(newline="") as f:
                self.rows = list(csv.DictReader(f))

    def log_epoch(self, epoch: int, values: Dict[str, float]) -> None:
        self.rows.append(dict(values))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        # Rewritten whole each epoch (a few hundred rows at most): the header always covers every column.
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)
