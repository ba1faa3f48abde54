"""What the output and job tests share: the CLI in-process, a folder's files, a failing disk."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import medtl.files as files
from medtl.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
# a line of medtl.progress ("predict: 11/11 images (100%) done in 0:00:05"): stderr without a terminal
PROGRESS_LINE = re.compile(r"^[^:\n]+: \d[^\n]*(?: elapsed| done in \d+:\d\d:\d\d| stopped after )[^\n]*\n", re.M)


def cli(capsys, *args) -> tuple[int, str]:
    """The exit status and stderr of ``medtl ARGS`` run in-process, less its progress lines."""
    code = main([os.fspath(a) for a in args])
    captured = capsys.readouterr()
    return code, PROGRESS_LINE.sub("", captured.err)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (the lock file aside: it is rewritten by every try)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".medtl.lock"}  # fmt: skip


def predict_args(run, archive, out, *extra) -> list[str]:
    return ["predict", run, archive, "-o", out, "--batch-size", "4", "--workers", "0", *extra]


def fail_writes_after(monkeypatch, n: int) -> None:
    """Every write after the ``n``-th fails as a full disk does."""
    real, calls = files._write_all, {"n": 0}

    def write(fh, data):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(files, "_write_all", write)
