"""Helpers for the fault-injection tests, and (run as a script) ``resnet`` with a fault planted in it.

``python tests/reliability/_util.py train ...`` is ``python -m resnet train ...`` after installing the fault
that the ``RESNET_TEST_FAULT`` environment variable describes (JSON), for example::

    {"kill": "step", "step": 3}            SIGKILL itself as iteration 3 begins (its batch being drawn)
    {"kill": "tensor_write", "step": 4}     SIGKILL with ckpt-4's tensor file half written (only the .tmp exists)
    {"kill": "sidecar", "step": 6}          SIGKILL after ckpt-6's tensors were renamed, before its sidecar
    {"kill": "final_weights"}               SIGKILL with .model.safetensors.tmp written but not renamed
    {"slow": 0.3}                           sleep 0.3 s per iteration (a window to send a signal in)
    {"rank": 1, ...}                        the fault applies on that torchrun rank only
    {"pid": PATH, ...}                      write the process id to PATH (to signal one torchrun worker)
    {"mark": PATH, ...}                     write time.time() to PATH just before the SIGKILL

The kills are real ``SIGKILL``s: no ``finally``, no atexit, nothing flushed, exactly as ``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()
FAULT_ENV = "RESNET_TEST_FAULT"

# A tiny run of the quick recipe (ResNet-20 on the embedded digits): 12 iterations of 32 images, a learning-rate
# drop at 8 (so the schedule must resume too), an evaluation every 6 and a checkpoint every 2 iterations.
TRAIN_ARGS = ["--recipe", "quick", "--iterations", "12", "--batch-size", "32", "--eval-every", "6",
              "--checkpoint-every", "2", "--milestones", "8", "--device", "cpu", "--workers", "0"]


def subprocess_env(fault: dict[str, Any] | None = None) -> dict[str, str]:
    """One thread per process: on a few shared cores, oversubscribed OpenMP threads are ~10x slower."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = json.dumps(fault)
    return env


def resnet_cmd(*args: str, fault: dict[str, Any] | None = None) -> list[str]:
    """The command line of ``resnet ARGS`` (through this file when a fault is to be planted)."""
    if fault is None:
        return [sys.executable, "-m", "resnet", *args]
    return [sys.executable, str(HERE), *args]


def run_resnet(*args: str, fault: dict[str, Any] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``resnet ARGS`` to its end in a fresh process; returns the completed process (text output)."""
    return subprocess.run(resnet_cmd(*args, fault=fault), env=subprocess_env(fault), capture_output=True,
                          text=True, timeout=timeout)


def start_resnet(*args: str, fault: dict[str, Any] | None = None, log: Path,
                 own_group: bool = False) -> subprocess.Popen:
    """Start ``resnet ARGS`` in the background; stdout and stderr go to ``log`` (never a pipe that could fill).
    ``own_group``: in a process group of its own (``os.killpg(proc.pid, sig)`` signals it and its workers, as
    ``timeout``, systemd and Slurm do)."""
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(resnet_cmd(*args, fault=fault), env=subprocess_env(fault), stdout=handle,
                                stderr=subprocess.STDOUT, text=True, start_new_session=own_group)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` every 50 ms; fail (killing ``proc``) if it does not hold within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before: {what}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.05)


def read_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path) -> None:
    """Bit-identical: same keys, dtypes, shapes and values (no tolerance)."""
    import torch

    ta, tb = read_tensors(a), read_tensors(b)
    assert sorted(ta) == sorted(tb)
    different = [k for k in ta if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ between {a} and {b}, e.g. {different[:3]}"


def metric_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the checkpoints with a sidecar, oldest first."""
    return sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.json"))


def one_line_error(text: str) -> str:
    """The single ``error: ...`` line of a failed command; asserts there is no traceback."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def one_thread():
    """In-process training on one thread (as the subprocesses run), restoring the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``resnet ARGV`` in this process: (exit code, stdout, stderr)."""
    from resnet.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def iteration_of_next_batch(stream) -> int:
    """The (1-based) training iteration that a TrainStream's next batch is drawn for (one batch per iteration)."""
    return stream.epoch * stream.batches_per_epoch + stream.position // stream.batch_size + 1


def poison_batch(monkeypatch, iteration: int) -> None:
    """Make iteration ``iteration``'s training batch all NaN (a data hook in this process)."""
    import torch

    from resnet.data.streams import TrainStream

    next_fn = TrainStream.next

    def next_batch(self):
        poisoned = iteration_of_next_batch(self) == iteration
        x, y = next_fn(self)
        return (torch.full_like(x, float("nan")) if poisoned else x), y

    monkeypatch.setattr(TrainStream, "next", next_batch)


# ------------------------------------------------------------------------------------------- the fault runner


def _sigkill(fault: dict[str, Any]) -> None:
    if fault.get("mark"):  # when it happened, for the test to time what follows
        Path(fault["mark"]).write_text(repr(time.time()))
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: dict[str, Any]) -> None:
    from resnet.data.streams import TrainStream
    from resnet.engine import checkpoint
    from resnet.models import weights

    if "rank" in fault and int(os.environ.get("RANK", "0")) != int(fault["rank"]):
        return
    if fault.get("pid"):
        Path(fault["pid"]).write_text(str(os.getpid()))
    kill, at = fault.get("kill"), fault.get("step")
    next_fn = TrainStream.next

    def next_batch(self):  # hooked at the data stream: whatever runs the step, one batch is one iteration
        iteration = iteration_of_next_batch(self)
        if kill == "step" and iteration == at:  # iteration `at` has begun: its batch is being drawn
            _sigkill(fault)
        if fault.get("slow"):
            time.sleep(float(fault["slow"]))
        return next_fn(self)

    TrainStream.next = next_batch
    save_tensors, atomic = checkpoint.save_file, checkpoint.write_atomic

    def save_file(tensors, filename, metadata=None):
        save_tensors(tensors, filename, metadata=metadata)
        if kill == "tensor_write" and f"ckpt-{at:08d}." in filename:
            with open(filename, "r+b") as f:  # torn: the first half of the bytes made it to disk
                f.truncate(os.path.getsize(filename) // 2)
            _sigkill(fault)

    def atomic_write(path, write):
        if kill == "sidecar" and path.name == f"ckpt-{at:08d}.json":
            _sigkill(fault)
        atomic(path, write)

    checkpoint.save_file, checkpoint.write_atomic = save_file, atomic_write
    save_weights_file = weights.save_file

    def save_final(tensors, filename, metadata=None):
        save_weights_file(tensors, filename, metadata=metadata)
        if kill == "final_weights":
            _sigkill(fault)

    weights.save_file = save_final


if __name__ == "__main__":
    if os.environ.get(FAULT_ENV):
        _install(json.loads(os.environ[FAULT_ENV]))
    from resnet.cli import main

    raise SystemExit(main(sys.argv[1:]))
