"""Data-loading worker processes that end with the process that started them.

A ``kill -9`` of ``medtl predict`` or ``medtl train`` cannot run any clean-up, so its DataLoader
workers must notice on their own. torch's workers poll their parent's pid between batches, and
two gaps remain: a worker busy with a slow image (a large DICOM series) does not poll, and a
worker that starts just as its parent is killed records the new parent (init) as the one to
watch, and then waits for work forever. Seen in the docs' own kill-and-resume example: an
orphaned worker held the job's output pipe open for a quarter of an hour.

:func:`worker_init` closes both: on Linux the kernel kills the worker when its parent dies
(``PR_SET_PDEATHSIG``), and a worker whose parent is already gone when it starts exits at once.

>>> import os
>>> init = worker_init()
>>> init.args[0] == os.getpid()
True
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["worker_init"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _bind_to_parent(parent: int, then: Callable[[int], None] | None, worker_id: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (a libc without it): torch's own polling remains
            pass
    if os.getppid() != parent:  # the parent died before this worker could ask to die with it
        os._exit(0)
    if then is not None:
        then(worker_id)


def worker_init(then: Callable[[int], None] | None = None) -> functools.partial:
    """A DataLoader ``worker_init_fn`` that ties each worker's life to this process, then calls
    ``then(worker_id)`` (MONAI's re-seeding, say).

    Example:
        >>> import torch
        >>> loader = torch.utils.data.DataLoader(range(4), num_workers=1, worker_init_fn=worker_init())
        >>> sorted(int(x) for batch in loader for x in batch)
        [0, 1, 2, 3]
    """
    return functools.partial(_bind_to_parent, os.getpid(), then)
