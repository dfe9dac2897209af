"""Leaving the process group: its threads end while the interpreter is still whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dist

# A fresh interpreter (no earlier import of torch.distributed.nn): a one-process gloo group, a DDP step as the
# trainer wraps it, the model dropped, shutdown(); then the names of the process's threads.
_LEAVE = """
import json, os, socket, torch, torch.distributed as dist
from resnet.engine.distributed import shutdown, wrap_ddp
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
model = wrap_ddp(torch.nn.Linear(3, 3), torch.device("cpu"), 25.0)
model(torch.ones(2, 3)).sum().backward()
out = [None]
dist.all_gather_object(out, [1.0])
del model
shutdown()
print(json.dumps([open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_shutdown_after_ddp_ends_gloos_threads_before_the_interpreter_exits():
    # gloo's threads alive at interpreter exit can abort a run that ended well (SIGABRT while one releases the
    # tensors of a finished collective); they end only when the group's last holder goes.
    done = subprocess.run([sys.executable, "-c", _LEAVE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [t for t in threads if "gloo" in t], threads
