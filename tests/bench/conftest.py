"""Shared set-up for the bench tests: ``resnet bench`` through the CLI's own entry point, short and on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FAST = ["--iterations", "2", "--warmup", "1", "--device", "cpu", "--threads", "1", "--workers", "0"]


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """``--threads`` sets torch's global thread count; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class BenchCLI:
    """``resnet bench ARGV`` through ``resnet.cli.main`` (so the subcommand's wiring is tested too)."""

    fast = FAST

    def __init__(self, tmp_path: Path) -> None:
        self.json = tmp_path / "bench.json"

    def run(self, argv: list[str]) -> int:
        from resnet.cli import main

        return main(["bench", *argv])

    def record(self, argv: list[str]) -> dict:
        """The JSON record of a short CPU run of ``argv`` that must succeed."""
        assert self.run([*argv, *FAST, "--json", str(self.json)]) == 0
        return json.loads(self.json.read_text())

    @staticmethod
    def check_figures(record: dict, names: list[str]) -> None:
        """Rows ``names`` in order, every figure positive, the environment recorded."""
        results = {r["name"]: r for r in record["results"]}
        assert list(results) == names
        for r in results.values():
            assert r["img_s"] > 0 and r["ms_median"] > 0 and r["ms_mean"] > 0 and r["iterations"] == 2
            assert r["peak_mem_mib"] is None  # CPU: no CUDA memory figure
        env = record["environment"]
        for key in ("date", "torch", "torchvision", "device_name", "device_type"):
            assert env[key]
        assert all(v > 0 for v in record["ratios"].values())


@pytest.fixture
def bench(tmp_path: Path) -> BenchCLI:
    return BenchCLI(tmp_path)
