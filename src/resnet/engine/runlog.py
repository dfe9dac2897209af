"""What a run writes while it trains: metrics.jsonl, TensorBoard events, a progress bar (rank 0 only)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

PLAIN_EVERY_S = 10.0
"""Seconds between plain progress lines when stderr is not a terminal."""


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as metrics.jsonl holds it: non-finite floats as null (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def last_line(*paths: Path) -> str:
    """The line that says why a training process failed: the last ``error: ...`` line of its logs (the CLI's one-line
    form), else the last non-empty line (a traceback's exception), else "no output"."""
    lines = [ln for p in paths if p.is_file() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1]


TRAIN_FILE = "train.jsonl"
"""One row per progress report (every 10 iterations): the training figures the curves draw between evaluations."""
TIMING = ("img_s",)


class RunLog:
    """One JSON object per evaluation in ``metrics.jsonl``, mirrored to TensorBoard; tqdm on stderr."""

    def __init__(self, out: Path, total: int, start: int, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start if start else None)
        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True,
                        file=sys.stderr, disable=None, mininterval=1.0)
        self._last_t = time.perf_counter()

    def progress(self, step: int, n: int, **values: float) -> None:
        """Advance the bar by ``n`` iterations and show loss, error, lr, images/s (ETA is tqdm's); the same figures
        go to TensorBoard (``train/...``, every report) and, when stderr is not a terminal (a pipe, a log file, a
        batch job), to a plain line at most every :data:`PLAIN_EVERY_S` seconds, so a log is never silent for long."""
        if not self.enabled or self.bar is None:
            return
        self.bar.update(n)
        self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()},
                             refresh=False)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, step)
        figures = {k: v for k, v in values.items() if k not in TIMING}  # what the run computed, not how fast
        with open(self.out / TRAIN_FILE, "a") as f:
            f.write(json.dumps(json_row({"step": step, **figures})) + "\n")
        now = time.perf_counter()
        if self.bar.disable and now - self._last_t >= PLAIN_EVERY_S:
            self._last_t = now
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            print(f"step={step}/{self.bar.total} {shown}", file=sys.stderr, flush=True)

    def record(self, row: dict[str, Any]) -> None:
        """Append one evaluation line and its scalars to TensorBoard."""
        if not self.enabled:
            return
        clean = json_row(row)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step",) and math.isfinite(value):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()
        if self.bar is not None:
            # metrics.jsonl keeps one key for the held-out error and says which split in eval_split; the line a
            # person reads names the split (Sec. 4.2's 45k/5k runs evaluate on the validation images)
            split = clean.get("eval_split", "test")
            # every task's columns: step, lr, the train_* figures and the evaluation's test_* ones (losses of the
            # evaluation and the epoch stay in metrics.jsonl)
            msg = " ".join(f"{k.replace('test_', split + '_', 1)}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in clean.items()
                           if k in ("step", "lr")
                           or (k.startswith(("train_", "test_")) and not k.startswith("test_loss")))
            self.bar.write(msg, file=sys.stderr)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl (a torn last line from a killed run is ignored)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint being resumed (they will be logged again): in
    ``metrics.jsonl`` (``path``) and in the per-report ``train.jsonl`` beside it."""
    for file in (path, path.with_name(TRAIN_FILE)):
        rows = [r for r in read_metrics(file) if r.get("step", 0) <= step]
        if file.is_file():
            file.write_text("".join(json.dumps(r) + "\n" for r in rows))
