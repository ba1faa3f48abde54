"""The ground floor of everything medtl writes: whole files, shared permissions, one writer at a
time, and a record of every file an output folder gets.

* **No half-written file.** :func:`write_text`, :func:`write_bytes`, :func:`write_csv`,
  :func:`write_json` and :func:`save_torch` write to a temporary name beside the target and
  ``os.replace`` it: a kill leaves the old file or the new one, never a torn one.
* **A failed write is a stop, not a note.** Any ``OSError`` while writing (a full disk, a quota, a
  read-only device) becomes :class:`~medtl.errors.WriteError` naming the file, which no batch
  command records against an input and goes on from (:func:`medtl.errors.is_fatal`).
* **Permissions as ``open()`` gives them.** Temporary files get the umask's permissions before
  they are renamed into place, so colleagues can read a shared report folder.
* **One writer at a time.** :class:`RunLock` holds an exclusive ``flock`` on ``.medtl.lock``; the
  operating system releases it when the process ends, however it ends.
* **Every file recorded.** While a folder is held as an output (:func:`hold`, used by
  :func:`medtl.outputs.output_folder`), each file written into it through this module is first
  appended to the folder's ledger (``.medtl-files``), so ``--overwrite`` can later remove exactly
  what medtl wrote and nothing else. Writers that are not medtl's (Lightning's logs, MONAI's cache)
  get a whole sub-folder recorded with :func:`claim` ``(tree=True)``.

This module imports nothing of medtl's but :mod:`medtl.errors`, and torch only inside
:func:`save_torch`: :mod:`medtl.io` may use it.

>>> import tempfile, os
>>> target = os.path.join(tempfile.mkdtemp(), "a.json")
>>> _ = write_json(target, {"auroc": 0.9})
>>> open(target).read()
'{\\n  "auroc": 0.9\\n}\\n'
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import LockedError, WriteError

__all__ = [
    "LOCK",
    "LEDGER",
    "RunLock",
    "atomic_path",
    "share_like_open",
    "write_text",
    "write_bytes",
    "write_csv",
    "write_json",
    "save_torch",
    "open_append",
    "claim",
    "hold",
    "release",
    "adding_to",
    "settle",
    "MARKER",
    "INFRASTRUCTURE",
    "held_folder",
    "read_ledger",
    "now",
]

#: The lock file held while a command writes a folder.
LOCK = ".medtl.lock"
#: The file that says which command wrote a folder (:mod:`medtl.outputs`).
MARKER = "medtl.json"
#: The ledger of an output folder: one path (relative, ``/``-separated) per line of every file
#: medtl wrote there. A line ending in ``/`` records an output nested in this one (it has its own
#: ledger); one starting with ``~`` a folder a library writes into (Lightning's logs), whose files
#: are recorded one by one when the output is finished (:func:`settle`).
LEDGER = ".medtl-files"
# each folder's own bookkeeping: never recorded, never a user's
INFRASTRUCTURE = frozenset({LOCK, LEDGER, MARKER})
# what atomic writes name their temporary files: `.NAME.medtl-<8 random>.tmp` beside NAME
TEMPORARY_INFIX = ".medtl-"

# folders this process holds as outputs: resolved path -> the entries already in their ledger
_HELD: dict[Path, set[str]] = {}
# per held folder: files a user put in its library folders, which settling must not record
_FOREIGN: dict[Path, set[str]] = {}


def now() -> str:
    """The time in UTC, to the second, as ISO 8601 (what every record of medtl says)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the ledger
def _resolved(path: str | os.PathLike) -> Path:
    """``path`` with its folder resolved (links followed) but its own name kept: a link written
    into an output is the output's, wherever it points."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def hold(folder: str | os.PathLike) -> None:
    """Start recording, in ``folder``'s ledger, every file written into it from this process."""
    root = Path(os.path.realpath(folder))
    ledger = root / LEDGER
    if ledger.is_file() and ledger.stat().st_size:
        with open(ledger, "rb+") as fh:  # a line cut by a full disk: the next entry starts on its own
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    files, trees, pending = read_ledger(root, pending=True)
    _HELD[root] = files | {t + "/" for t in trees} | {"~" + t + "/" for t in pending}
    # a finished output continued (a run given more epochs): what its library folders hold that it
    # never recorded is a user's, and stays unrecorded when the output is settled again
    _FOREIGN[root] = set()
    if _finished(root):
        for rel in pending:
            for path in _files_under(root / rel):
                if path.relative_to(root).as_posix() not in files:
                    _FOREIGN[root].add(path.relative_to(root).as_posix())


def _finished(root: Path) -> bool:
    try:
        return bool(json.loads((root / MARKER).read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def _files_under(top: Path) -> list[Path]:
    """Every file below ``top`` (links not followed); nothing when it is not a real folder."""
    if not top.is_dir() or top.is_symlink():
        return []
    return [Path(d) / n for d, _, names in os.walk(top) for n in sorted(names)]


def release(folder: str | os.PathLike) -> None:
    """Stop recording writes into ``folder``."""
    root = Path(os.path.realpath(folder))
    _HELD.pop(root, None)
    _FOREIGN.pop(root, None)


@contextlib.contextmanager
def adding_to(folder: str | os.PathLike) -> Iterator[Path]:
    """Record in ``folder``'s ledger the files written into it inside the block: a finished output
    that a later command is allowed to add to (``medtl calibrate-ood`` giving a run its
    statistics). An output without a ledger (an older medtl's) is left without one: a ledger
    begun part-way would call its other files foreign."""
    folder = Path(folder)
    recording = (folder / LEDGER).is_file() and held_folder(folder) != Path(os.path.realpath(folder))
    if recording:
        hold(folder)
    try:
        yield folder
    finally:
        if recording:
            release(folder)


def held_folder(path: str | os.PathLike) -> Path | None:
    """The innermost folder this process holds as an output that contains ``path`` (or is it)."""
    target = _resolved(path)
    best = None
    for root in _HELD:
        if (target == root or root in target.parents) and (best is None or best in root.parents):
            best = root
    return best


def claim(path: str | os.PathLike, *, tree: bool = False, pending: bool = False) -> None:
    """Record ``path`` as written by medtl in the ledger of the output folder holding it (nothing
    when no held folder does). Called before the file is created, so a kill at any moment leaves
    no file of medtl's unrecorded. ``tree=True`` records an output nested in this one;
    ``pending=True`` a folder a library writes into, settled file by file at the end.

    Raises:
        WriteError: the ledger cannot be written (a full disk).
    """
    target = _resolved(path)
    root = held_folder(target)
    if root is None or target == root or target.name in INFRASTRUCTURE:  # each output's own bookkeeping
        return
    rel = target.relative_to(root).as_posix()
    entry = f"~{rel}/" if pending else rel + ("/" if tree else "")
    if "\n" in entry:
        raise WriteError(path, "a file name with a line break cannot be recorded")
    seen = _HELD[root]
    if entry in seen:
        return
    try:
        with open(root / LEDGER, "a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
    except OSError as exc:
        raise WriteError(root / LEDGER, f"could not be written ({exc.strerror or exc})") from None
    seen.add(entry)


def read_ledger(folder: str | os.PathLike, *, pending: bool = False):
    """``(files, nested outputs)`` a folder's ledger records, and with ``pending`` the library
    folders not yet settled as a third set (empty sets when it has no ledger)."""
    path = Path(folder) / LEDGER
    files: set[str] = set()
    trees: set[str] = set()
    waiting: set[str] = set()
    if path.is_file():
        # the last line without its newline was cut by a failed write: its file was never made
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]:
            entry = line.lstrip("~").rstrip("/")
            if line.startswith("#") or not _plain_relative(entry):
                continue  # an edited ledger names nothing outside its folder
            (waiting if line.startswith("~") else trees if line.endswith("/") else files).add(entry)
    return (files, trees, waiting) if pending else (files, trees)


def settle(folder: str | os.PathLike) -> None:
    """Record one by one the files that libraries wrote into ``folder``'s pending sub-folders
    (Lightning's logs): from now on a file added there is a user's, never removed by medtl."""
    folder = Path(folder)
    _, _, waiting = read_ledger(folder, pending=True)
    foreign = _FOREIGN.get(Path(os.path.realpath(folder)), set())
    for rel in sorted(waiting):
        for path in _files_under(folder / rel):
            if path.relative_to(folder).as_posix() not in foreign:
                claim(path)


def _plain_relative(entry: str) -> bool:
    """A path below a folder, as medtl records it: relative, no ``..``, no empty or ``.`` part."""
    parts = entry.split("/")
    return bool(entry) and not entry.startswith("/") and "\0" not in entry and all(
        p not in ("", ".", "..") for p in parts)  # fmt: skip


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` only if the block
    finishes, so readers see the old file or the whole new one.

    Raises:
        WriteError: the folder or the file cannot be written (a full disk, no permission ...).

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> open(target).read()
    'done'
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        claim(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMPORARY_INFIX}", suffix=".tmp")
        share_like_open(fd)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(path, f"could not be written ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def share_like_open(fd: int) -> None:
    """Give a file from :func:`tempfile.mkstemp` the permissions ``open()`` would have given it.

    mkstemp makes files readable by their owner only; renamed into place, a report or a CSV
    would then be unreadable to the colleagues the umask shares the folder with. The umask
    decides, as for any other program (``umask 077`` keeps everything private)."""
    if os.name == "posix":
        os.fchmod(fd, 0o666 & ~_umask())


def _umask() -> int:
    try:  # read without changing it: os.umask() sets as it reads, racing other threads
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_all(fh: BinaryIO, data: bytes) -> None:
    """Write, flush and sync: every byte medtl writes passes here (a test makes it fail)."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a PNG, say).

    Raises:
        WriteError: it could not be written; the old file, if any, is unchanged.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            _write_all(fh, data)
    return Path(path)


class _Appender:
    """A file medtl appends to (a journal, a CSV growing chunk by chunk): each :meth:`write`
    reaches the disk before it returns, and a failure is a :class:`~medtl.errors.WriteError`."""

    def __init__(self, path: Path, mode: str):
        self.path = path
        try:
            self.fh = open(path, mode)
        except OSError as exc:
            raise WriteError(path, f"could not be written ({exc.strerror or exc})") from None

    def write(self, data: bytes) -> None:
        try:
            _write_all(self.fh, data)
        except OSError as exc:
            raise WriteError(self.path, f"could not be written ({exc.strerror or exc})") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()

    def __enter__(self) -> _Appender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_append(path: str | os.PathLike, *, truncate: bool = False) -> _Appender:
    """``path`` opened to append bytes (``truncate``: emptied first), recorded in its output's
    ledger; every write is synced and a failed one raises :class:`~medtl.errors.WriteError`.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "journal")
    >>> with open_append(p) as fh:
    ...     fh.write(b"0 12 9\\n")
    >>> open(p).read()
    '0 12 9\\n'
    """
    path = Path(path)
    claim(path)
    return _Appender(path, "wb" if truncate else "ab")


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    """One CSV row per dict, atomically; columns in first-seen order unless given, ``None`` as an
    empty cell, a text a spreadsheet would run as a formula neutralised
    (:func:`medtl.csvcells.safe_cell`). Returns the columns.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> write_csv(p, [{"a": 1, "b": None}, {"a": 2, "c": "x"}])
    ['a', 'b', 'c']
    >>> open(p).read().splitlines()
    ['a,b,c', '1,,', '2,,x']
    """
    from .csvcells import csv_text

    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    write_text(path, csv_text(rows, columns))
    return columns


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as strict JSON (no NaN) atomically.

    Raises:
        ValueError: ``data`` holds NaN or infinity (write ``None`` for an undefined number).
    """
    return write_text(path, json.dumps(data, indent=indent, allow_nan=False, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (weights, checkpoints). Serialised in memory first: torch's own
    writer reports a full disk as an opaque ``RuntimeError``, the file system as ``ENOSPC``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- one writer at a time
# locks this process holds: a forked child (a DataLoader worker, a drawing process) closes its
# copies, so a parent killed with kill -9 releases its folder at once, not when its workers notice
_LOCKS: set[RunLock] = set()


def _close_inherited_locks() -> None:
    for lock in list(_LOCKS):
        if lock._fh is not None:
            with contextlib.suppress(OSError):
                lock._fh.close()  # the child's copy only: no unlock, which would free the parent's lock
            lock._fh = None
    _LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class RunLock:
    """An exclusive lock on a folder while one process writes it (a context manager).

    The lock is an ``flock`` on ``folder/.medtl.lock``: the operating system releases it when the
    process ends, however it ends, so there are no stale locks to clean up (forked children close
    their copy at once). The file records the holder, which a second writer's error names.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d, "train"):
    ...     try:
    ...         RunLock(d, "train").acquire()
    ...     except LockedError as exc:
    ...         print("refused:", "being written by" in str(exc))
    refused: True
    """

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder = Path(folder)
        self.command = command
        self._fh = None

    def acquire(self) -> RunLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LockedError(self.folder, f"is being written by {holder}; wait for it to finish or stop it, "
                              "or write elsewhere with another -o") from None  # fmt: skip
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()} (medtl {self.command}, since {now()})")
        fh.flush()
        self._fh = fh
        _LOCKS.add(self)
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        _LOCKS.discard(self)

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fh is None else self

    def __exit__(self, *exc) -> None:
        self.release()
