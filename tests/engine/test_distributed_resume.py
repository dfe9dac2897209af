"""Multi-node resume without a shared filesystem: every rank continues from rank 0's checkpoint."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from resnet.config import build_config

pytestmark = pytest.mark.dist


def _cfg(iterations: int):
    return build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "val_split": 0},
                         "optim": {"milestones": [6]},
                         "train": {"iterations": iterations, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4,
                                   "device": "cpu"}}, recipe="quick")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, root: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from resnet.classify import make_trainer
    from resnet.engine.distributed import shutdown

    trainer = make_trainer(_cfg(12), Path(root) / f"node{rank}", resume=True).setup()  # each node's own disk
    resumed_at = trainer.step
    final = trainer.run()
    Path(root, f"rank{rank}.json").write_text(json.dumps({"resumed_at": resumed_at, "final": final}))
    del trainer  # the DDP wrapper holds the process group: dropped first, so shutdown() ends its threads
    shutdown()


@pytest.mark.slow
def test_ranks_whose_disks_lack_the_checkpoint_resume_from_rank_0s(tmp_path):
    import torch.multiprocessing as mp

    from resnet.classify import train

    torch.set_num_threads(1)
    train(_cfg(8), tmp_path / "node0")  # rank 0's node holds the run; rank 1's folder does not exist
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["resumed_at"] == r1["resumed_at"] == 8
    assert r0["final"]["step"] == 12 and r0["final"]["replicas_identical"] is True
    assert not (tmp_path / "node1").exists() or not any((tmp_path / "node1").iterdir())
