"""DataLoader workers end with the process that started them, even when it is killed with SIGKILL
while they are busy (a slow image) or just starting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

_SCRIPT = """
import os, sys, time, torch
from medtl.data.workers import worker_init

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        print(os.getpid(), flush=True)  # the worker's pid, from inside the worker
        time.sleep(60)                  # a slow image: torch's own check never runs meanwhile
        return i

loader = torch.utils.data.DataLoader(Slow(), num_workers=1, batch_size=1, worker_init_fn=worker_init())
next(iter(loader))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_busy_worker_dies_with_its_killed_parent():
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())
        assert worker != proc.pid and _alive(worker)
        proc.kill()
        proc.wait()
        deadline = time.time() + 5
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        proc.kill()


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    from medtl.data.workers import _bind_to_parent

    pid = os.fork()
    if pid == 0:  # the child: "its parent" is a process that is not its parent
        try:
            _bind_to_parent(os.getppid() + 1_000_000, None, 0)
        finally:
            os._exit(3)  # reached only if the worker went on working
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
