"""Shared set-up for the experiment tests: a tiny digits split and one run cache for the whole session.

The studies train 2 iterations per net at batch 8 (hidden ``--iterations`` / ``--batch-size``) on 64 training
and 40 test digits, so the whole folder fits in minutes on two busy cores. Run folders are shared across the
tests (as ``resnet experiment all`` shares them), so ResNet-20 trains once for all the studies that use it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import resnet.data.digits as digits

TRAIN_IMAGES, TEST_IMAGES = 64, 40
TINY = ["--iterations", "2", "--batch-size", "8", "--seeds", "1", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def tiny_digits() -> Iterator[None]:
    """Shrink the embedded digits for in-process runs, per test module so other folders never see it
    (child processes of --jobs N see the full set). One intra-op thread: at batch 8 a second thread only spins,
    which on shared cores costs more than it gains."""
    full = digits._load
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def small(size: int = digits.DIGITS_SIZE):
        xtr, ytr, xte, yte = full(size)
        return xtr[:TRAIN_IMAGES], ytr[:TRAIN_IMAGES], xte[:TEST_IMAGES], yte[:TEST_IMAGES]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digits, "_load", small)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiment-runs")
