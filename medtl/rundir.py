"""Output folders medtl writes: what they hold, who may write them, and how files land in them.

Weeks of work sit in a run directory, and results go into papers, so every command that writes
follows the same rules (../shared/DESIGN.md, "Runs"):

* **Each output folder says what it is.** ``medtl.json`` names the command that wrote it
  (``train``, ``evaluate``, ``audit``, ``adapt``), the medtl version, when, and whether it is
  complete. A folder without it that holds ``model.pt`` or ``config.yaml`` is a run from before
  this file existed.
* **Nothing is overwritten by accident.** :func:`output_folder` refuses a folder that already
  holds a run or another command's output unless ``overwrite`` is given, and then replaces it
  whole (never a mix of old and new files). A folder holding files medtl did not write is never
  deleted; a path that is a file, or a folder that cannot be written, is refused up front.
  Evaluation output never goes into a run directory, with or without ``overwrite``.
* **One writer at a time.** :class:`RunLock` holds an exclusive ``flock`` on ``.medtl.lock`` while
  a command writes; a second writer gets an error naming the holder (process, host, command,
  start). The lock dies with its process, so a killed run never leaves a stale lock.
* **No half-written file.** :func:`write_text`, :func:`write_json` and :func:`save_torch` write to a
  temporary name in the same folder and ``os.replace`` it: a kill leaves the old file or the new
  one, never a torn one.

This module imports neither torch nor Lightning at import time.

>>> import tempfile, os
>>> with output_folder(os.path.join(tempfile.mkdtemp(), "eval"), "evaluate") as out:
...     _ = write_json(out / "metrics.json", {"auroc": 0.9})
...     mark_complete(out, "evaluate")
>>> describe(out)["command"], describe(out)["complete"]
('evaluate', True)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError, LockedError, OutputError

__all__ = [
    "MARKER",
    "LOCK",
    "describe",
    "is_run",
    "output_folder",
    "mark_complete",
    "RunLock",
    "write_text",
    "write_bytes",
    "write_csv",
    "write_json",
    "save_torch",
    "atomic_path",
    "read_spec",
    "read_json",
    "weights_digest",
    "KEPT_FILES",
]

#: The file that says which command wrote a folder.
MARKER = "medtl.json"
#: The lock file held while a command writes a folder.
LOCK = ".medtl.lock"
# Files that make a folder a run directory even without a marker (runs older than the marker).
_RUN_FILES = ("model.pt", "config.yaml", "checkpoints")
# Commands whose output is a run directory (evaluate, explain, predict and report only read runs).
RUN_COMMANDS = ("train", "adapt")
# Commands whose unfinished output holds finished work: it is resumed (--resume), never cleared unasked.
RESUMABLE_COMMANDS = ("train", "predict")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def describe(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What medtl output ``folder`` holds: its ``medtl.json`` (``command``, ``complete`` ...), a
    reconstruction for a run written before the marker existed, or ``None`` (not medtl's)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and "command" in record:
            return record
        return {"command": "unknown", "complete": False, "note": f"unreadable {MARKER}"}
    if any((folder / name).exists() for name in _RUN_FILES):
        return {"command": "train", "complete": (folder / "model.pt").is_file(), "note": "run without a marker"}
    return None


def is_run(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a run directory (``medtl train`` or ``medtl adapt`` output).

    >>> import tempfile
    >>> is_run(tempfile.mkdtemp())
    False
    """
    found = describe(folder) if Path(folder).is_dir() else None
    return found is not None and found.get("command") in RUN_COMMANDS


def _what(found: dict[str, Any]) -> str:
    command = found.get("command", "unknown")
    state = "a finished" if found.get("complete") else "an unfinished"
    return f"{state} run (medtl {command})" if command in RUN_COMMANDS else f"{state} `medtl {command}` output"


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".medtl-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(folder, f"cannot write here ({exc.strerror or exc})") from None


#: Files that no ``--overwrite`` deletes: reviewers' verdicts are data, not output. A report rebuilt
#: in place keeps them; any other command refuses a folder holding them.
KEPT_FILES = frozenset({"verdicts.sqlite", "verdicts.sqlite-wal", "verdicts.sqlite-shm", "verdicts.sqlite-journal"})


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []


def _prepare(folder: Path, command: str, overwrite: bool, resume: bool) -> None:
    """The checks and the clean-up of :func:`output_folder`, under its lock."""
    found = describe(folder)
    if found is not None:
        if command not in RUN_COMMANDS and found.get("command") in RUN_COMMANDS:
            raise OutputError(folder, f"holds {_what(found)}; `medtl {command}` never writes into a run's own "
                              "files: give another -o")  # fmt: skip
        if resume and found.get("command") == command:
            return
        # the same command's unfinished output (it failed: a typo, a missing file) holds nothing to
        # keep, and refusing it would block the corrected command; a run is resumed instead (above)
        unfinished = found.get("command") == command and not found.get("complete")
        retry = unfinished and command not in RESUMABLE_COMMANDS
        if not (overwrite or retry):
            hint = "--resume to finish it, " if unfinished and command in RESUMABLE_COMMANDS else ""
            raise OutputError(folder, f"already holds {_what(found)}; pass {hint}--overwrite to replace it whole, "
                              "or give another -o")  # fmt: skip
        kept = [n for n in _contents(folder) if n in KEPT_FILES]
        if kept and command != "report":
            raise OutputError(folder, f"holds reviewers' verdicts ({kept[0]}), which medtl never deletes: give "
                              "another -o")  # fmt: skip
        for name in _contents(folder):  # medtl's own output, replaced whole (verdicts excepted)
            if name in KEPT_FILES:
                continue
            child = folder / name
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    elif _contents(folder) and command in RUN_COMMANDS:
        names = _contents(folder)
        raise OutputError(folder, f"holds files medtl did not write ({', '.join(names[:3])}"
                          f"{' ...' if len(names) > 3 else ''}): a run needs an empty or new folder")  # fmt: skip
    write_json(folder / MARKER, {"command": command, "medtl_version": _version(), "started": _now(),
                                 "complete": False, "argv": _argv()})  # fmt: skip


@contextlib.contextmanager
def output_folder(
    folder: str | os.PathLike, command: str, *, overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Hold ``folder`` for ``command``'s output: refuse what must not be written, lock it,
    replace old output when told to, and mark it as being written (a context manager; call
    :func:`mark_complete` inside it when the output is whole).

    Args:
        folder: the output folder (created if absent).
        command: ``train``, ``adapt``, ``evaluate``, ``audit`` ... (recorded in ``medtl.json``).
        overwrite: replace a folder that holds medtl output (a run, another command's output)
            whole; a folder holding files medtl did not write is never deleted, and reviewers'
            verdicts (:data:`KEPT_FILES`) are kept by ``report`` and refused by every other command.
        resume: keep output of the same command in place (``train`` continuing its run; the
            caller checks that the configuration matches).

    Raises:
        OutputError: ``folder`` is a file or cannot be written; it is a run directory and
            ``command`` does not write runs; it holds medtl output and neither ``overwrite`` nor
            ``resume`` applies; a run would go into a folder of other files. The message names what
            the folder holds and how to go on.
        LockedError: another process is writing ``folder``.

    >>> import tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "out")
    >>> with output_folder(d, "evaluate") as out:
    ...     _ = write_json(out / "metrics.json", {})
    ...     mark_complete(out, "evaluate")
    >>> with output_folder(d, "evaluate"):
    ...     pass
    Traceback (most recent call last):
    ...
    medtl.errors.OutputError: ...: already holds a finished `medtl evaluate` output; pass --overwrite to replace it whole, or give another -o
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "is a file, not a folder: give a folder for the output")
    _check_writable(folder)
    with RunLock(folder, command):
        _prepare(folder, command, overwrite, resume)
        yield folder


def mark_complete(folder: str | os.PathLike, command: str, **extra: Any) -> None:
    """Record in ``medtl.json`` that ``command`` finished writing ``folder`` (``extra`` is added)."""
    folder = Path(folder)
    record = describe(folder) or {}
    record.update(command=command, complete=True, finished=_now(), medtl_version=_version(), **extra)
    record.setdefault("argv", _argv())
    write_json(folder / MARKER, record)


def _version() -> str:
    from . import __version__

    return __version__


def _argv() -> list[str]:
    """The command line, without absolute paths (they may name patients); with ``--redact-paths``
    without any path at all."""
    args = sys.argv[1:]
    if "--redact-paths" in args:
        return ["<path>" if os.path.exists(a) else a for a in args]
    return [os.path.basename(a) if os.path.isabs(a) else a for a in args]


class RunLock:
    """An exclusive lock on a folder while one process writes it (a context manager).

    The lock is an ``flock`` on ``folder/.medtl.lock``: the operating system releases it when the
    process ends, however it ends, so there are no stale locks to clean up. The file records the
    holder, which a second writer's error names.

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
        fh.write(f"process {os.getpid()} on {socket.gethostname()} (medtl {self.command}, since {_now()})")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fh is None else self

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` only if the block
    finishes, so readers see the old file or the whole new one.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> open(target).read()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    share_like_open(fd)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a PNG, say)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    """One CSV row per dict, atomically; columns in first-seen order unless given, ``None`` as an
    empty cell. Returns the columns.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> write_csv(p, [{"a": 1, "b": None}, {"a": 2, "c": "x"}])
    ['a', 'b', 'c']
    >>> open(p).read().splitlines()
    ['a,b,c', '1,,', '2,,x']
    """
    import csv
    import io

    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    write_text(path, buffer.getvalue())
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
    """``torch.save`` atomically (weights, checkpoints)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- the files of a run
CONFIG_FILE, SPLIT_FILE, SPEC_FILE, LABELS_FILE, WEIGHTS_FILE = (
    "config.yaml", "split.json", "preprocess.json", "labels.json", "model.pt",
)  # fmt: skip


def _not_a_run(run_dir: Path, missing: str) -> ConfigError:
    return ConfigError(run_dir, f"not a run directory (no {missing}): train one with `medtl train`")


def save_config(run_dir: str | os.PathLike, cfg) -> Path:
    """Write the resolved :class:`~medtl.train.config.TrainConfig` as ``config.yaml`` (atomically)."""
    import yaml

    return write_text(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_config(run_dir: str | os.PathLike, *, missing_ok: bool = False):
    """The :class:`~medtl.train.config.TrainConfig` a run was trained with (``None`` when absent
    and ``missing_ok``).

    Raises:
        ConfigError: no ``config.yaml`` (unless ``missing_ok``), or one medtl cannot read.
    """
    import yaml

    from .train.config import TrainConfig

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise _not_a_run(Path(run_dir), CONFIG_FILE)
    try:
        values = yaml.safe_load(path.read_text())
        return TrainConfig(**values)
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise ConfigError(path, f"unreadable run configuration ({exc})") from None


def save_split(run_dir: str | os.PathLike, split: dict[str, Any]) -> Path:
    """Write ``split.json``: which images (by key) and patients trained, validated and tested."""
    return write_json(Path(run_dir) / SPLIT_FILE, split)


def read_json(path: str | os.PathLike, what: str = "record") -> Any:
    """A JSON file medtl wrote, or ``None`` when it is absent.

    Raises:
        ConfigError: the file exists but cannot be read or parsed (``what`` names it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"unreadable {what} ({exc})") from None


def read_split(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``split.json``, or ``None`` for a run written before splits were stored."""
    return read_json(Path(run_dir) / SPLIT_FILE, "split record")


def environment_versions() -> dict[str, str]:
    """Python and the versions of the libraries that shape a result: what a run, a prediction job
    and a paper's methods section record."""
    import platform

    out = {"python": platform.python_version()}
    for name in ("medtl", "torch", "lightning", "monai", "numpy", "scikit-learn", "pydicom", "nibabel", "captum"):
        module = {"scikit-learn": "sklearn"}.get(name, name)
        try:
            out[name] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version is informative only
            out[name] = "unknown"
    return out


def weights_digest(run_dir: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a run's ``model.pt``: which weights an output came
    from (predict, evaluate and explain record it; report checks it).

    Raises:
        ConfigError: the run holds no ``model.pt`` (its training has not finished).
    """
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(run_dir, f"holds no {WEIGHTS_FILE}: its training has not finished")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_spec(run_dir: str | os.PathLike):
    """The run's :class:`~medtl.data.transforms.PreprocessSpec` (how it maps an image to network
    input), without loading the network.

    Raises:
        ConfigError: the run holds no ``preprocess.json`` (its training has not finished).
    """
    from .data.transforms import PreprocessSpec

    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise ConfigError(run_dir, f"holds no {SPEC_FILE}: its training has not finished (resume it with the same "
                          "`medtl train` command)")  # fmt: skip
    spec_d = json.loads(path.read_text())
    return PreprocessSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_d.items()})


def load_run(run_dir: str | os.PathLike):
    """``(model in eval mode, PreprocessSpec, labels)`` from a run directory, from any working
    directory, with nothing else needed.

    Raises:
        ConfigError: not a run directory, or one whose training has not finished.
    """
    import torch

    from .models import create

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    for name in (WEIGHTS_FILE, SPEC_FILE, LABELS_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(run_dir, f"holds no {name}: its training has not finished (resume it with the same "
                              "`medtl train` command)")  # fmt: skip
    spec = read_spec(run_dir)
    labels = json.loads((run_dir / LABELS_FILE).read_text())

    def network():
        return create(cfg.backbone, None, in_channels=spec.channels, num_classes=len(labels),
                      spatial_dims=cfg.spatial_dims, dropout=cfg.dropout)  # fmt: skip

    if getattr(cfg, "ensemble", 1) > 1:  # K members averaged in probability, saved as one state dict
        from .models import EnsembleClassifier

        task = (read_json(run_dir / "metrics.json", "metrics record") or {}).get("task", "binary")
        model = EnsembleClassifier([network() for _ in range(cfg.ensemble)], task)
    else:
        model = network()
    model.load_state_dict(torch.load(run_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec, labels
