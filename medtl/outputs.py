"""Where a command may write, and what ``--overwrite`` may remove: one rule for every command.

Weeks of work sit in a run directory, verdicts of clinicians in a report, and a user's own files
beside both, so every command that writes follows the same rule (``docs/runs.md``, "Output
folders"; ../shared/DESIGN.md, "Runs"):

* **An output is never an input, a run, a report or another command's output, nor inside or
  around one.** It may not be, contain, or sit inside any input of the command, nor sit inside
  a folder that holds medtl output (a run, a predict output, a report ...). Outputs that a
  command nests in its own folder (an ensemble's members, the folds of a cross-validation, the
  steps of ``medtl demo``) are the exception: the outer command holds their parent.
* **A folder says what it is and what it holds.** ``medtl.json`` names the command that wrote
  it, the medtl version, when, and whether it is complete; ``.medtl-files`` (the ledger,
  :mod:`medtl.files`) lists every file the command wrote there, recorded before each is created.
* **medtl removes only what it wrote.** A new output folder must be empty. ``--overwrite`` (or
  re-running a command that failed part-way) removes exactly the files the earlier output
  recorded; a folder holding anything else (a user's notes, another command's output, a report
  with verdicts) is refused, with ``--overwrite`` too, naming one such file. Reviewers' verdicts
  (:data:`KEPT_FILES`) are never removed: a report rebuilt in place keeps them, any other command
  refuses a folder holding them.
* **A single-file output** (``scan -o``, ``review export -o``, ``convert``) never replaces a
  folder, an input, a file inside medtl output, or a file of another kind (a manifest with
  labels, a verdicts database); an earlier file of its own kind is replaced only with
  ``--overwrite`` (:func:`check_output_file`).
* **Finished means finished.** :func:`mark_complete` is called only after every write succeeded.

This module imports neither torch nor Lightning.

>>> import tempfile, os
>>> with output_folder(os.path.join(tempfile.mkdtemp(), "eval"), "evaluate") as out:
...     _ = write_json(out / "metrics.json", {"auroc": 0.9})
...     mark_complete(out, "evaluate")
>>> describe(out)["command"], describe(out)["complete"], sorted(read_ledger(out)[0])
('evaluate', True, ['metrics.json'])
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputError
from .files import (
    INFRASTRUCTURE,
    LEDGER,
    LOCK,
    MARKER,
    TEMPORARY_INFIX,
    RunLock,
    claim,
    held_folder,
    hold,
    now,
    read_ledger,
    release,
    settle,
    write_json,
)

__all__ = [
    "MARKER",
    "KEPT_FILES",
    "RUN_COMMANDS",
    "describe",
    "is_run",
    "what",
    "output_folder",
    "check_destination",
    "check_not_reading",
    "mark_complete",
    "check_output_file",
    "csv_with_header",
]

# Commands whose output is a run directory (evaluate, explain, predict and report only read runs).
RUN_COMMANDS = ("train", "adapt")
# Commands whose unfinished output holds finished work: it is resumed (--resume), never cleared unasked.
RESUMABLE_COMMANDS = ("train", "predict")
# Commands whose earlier output is simply made again (a second `make demo`).
REPEATABLE_COMMANDS = ("demo",)
#: Files that no ``--overwrite`` deletes: reviewers' verdicts are data, not output. A report rebuilt
#: in place keeps them; any other command refuses a folder holding them.
KEPT_FILES = frozenset({"verdicts.sqlite", "verdicts.sqlite-wal", "verdicts.sqlite-shm", "verdicts.sqlite-journal"})
_INFRASTRUCTURE = INFRASTRUCTURE
# first line of the ledger of an output an older medtl began (resumed since): what it wrote is unknown
_UNRECORDED = "# begun by a medtl that did not record its files"
# what atomic writes leave behind when killed: `.NAME.medtl-<8 random>.tmp` beside NAME
_TEMPORARY = re.compile(rf"\.(?P<name>.+){re.escape(TEMPORARY_INFIX)}[a-z0-9_]{{8}}\.tmp")


# ----------------------------------------------------------------------------- what a folder is
def describe(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What medtl output ``folder`` holds: its ``medtl.json`` (``command``, ``complete`` ...), a
    reconstruction for a run written before the marker existed, or ``None`` (not medtl's).

    >>> import tempfile
    >>> describe(tempfile.mkdtemp()) is None
    True
    """
    import json

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
    # a run of a medtl older than the marker: its configuration beside its weights or checkpoints
    # (a config.yaml alone is any project's)
    if (folder / "config.yaml").is_file() and ((folder / "model.pt").is_file() or (folder / "checkpoints").is_dir()):
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


def what(found: dict[str, Any]) -> str:
    """``"a finished run (medtl train)"``, ``"an unfinished `medtl predict` output"`` ...

    >>> what({"command": "report", "complete": True})
    'a finished `medtl report` output'
    """
    command = {"predict-merge": "predict merge"}.get(found.get("command", "unknown"), found.get("command", "unknown"))
    state = "a finished" if found.get("complete") else "an unfinished"
    return f"{state} run (medtl {command})" if command in RUN_COMMANDS else f"{state} `medtl {command}` output"


# ----------------------------------------------------------------------------- where an output may go
def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _check_inputs(out: Path, inputs: Iterable[str | os.PathLike | None], noun: str = "output") -> None:
    """Refuse an output that is, holds or sits inside one of ``inputs``."""
    target = _real(out)
    for given in inputs:
        if given is None or not os.path.exists(given):
            continue  # npz:// items, or a missing input its command reports itself
        source = _real(given)
        if source == target:
            found = describe(source) if source.is_dir() else None
            kind = f"{what(found)} that this command reads" if found else f"an input of this command ({given})"
            raise OutputError(out, f"is {kind}: medtl never writes into what it reads; give another -o")
        if source in target.parents:
            raise OutputError(out, f"sits inside the input {given}: give an {noun} outside it (a later "
                              f"command reading {given} would read this {noun} too)")  # fmt: skip
        if target in source.parents:
            raise OutputError(out, f"holds the input {given}: give an {noun} that holds no input")


def _check_enclosing(out: Path, noun: str = "output") -> None:
    """Refuse an output inside a folder that holds medtl output, unless this process is writing
    that folder (an output nested in its own: an ensemble's members, a fold, the demo's steps)."""
    for ancestor in _real(out).parents:
        if held_folder(ancestor) == ancestor:
            return  # its own parents were checked when it was opened
        found = describe(ancestor)
        if found is not None:
            raise OutputError(out, f"sits inside {what(found)} ({ancestor}): medtl never adds to another command's "
                              f"folder; give an {noun} outside it")  # fmt: skip


def check_destination(folder: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """The checks of :func:`output_folder` that need no lock, for a command to run before a long
    read (a scan of thousands of files) rather than after it.

    Raises:
        OutputError: ``folder`` is a file; is, holds or sits inside an input; sits inside medtl
            output.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "is a file, not a folder: give a folder for the output")
    _check_inputs(folder, inputs)
    _check_enclosing(folder)


def check_not_reading(folder: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> None:
    """Refuse an output that a command would also read from: an input reached through a link
    that leads into ``folder`` (a scan follows linked folders).

    Raises:
        OutputError: one of ``paths``, links followed, lies inside ``folder``.
    """
    target = _real(folder)
    if not target.is_dir():
        return  # a new folder holds nothing yet
    for path in paths:
        if os.fspath(path).startswith("npz://"):
            continue
        real = _real(path)
        if real == target or target in real.parents:
            raise OutputError(folder, f"is read as an input too: {path} leads into it (a link in an input folder?); "
                              "give an output the inputs do not reach")  # fmt: skip


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".medtl-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(folder, f"cannot write here ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------- what medtl wrote
def _is_temporary_of(rel: str, files: set[str]) -> bool:
    head, _, name = rel.rpartition("/")
    match = _TEMPORARY.fullmatch(name)
    return bool(match) and (f"{head}/{match['name']}" if head else match["name"]) in files


def _not_ours(folder: Path) -> tuple[str, str] | None:
    """The first thing in ``folder`` that its ledger does not record as medtl's: ``(path relative
    to folder, why)``, or ``None`` when everything there is medtl's. Outputs nested in it are
    checked against their own ledgers; a library's folder (Lightning's logs) is the output's whole
    only while the output is unfinished (a killed run's last files), file by file once finished."""
    ledger = folder / LEDGER
    if not ledger.is_file() or ledger.read_text(encoding="utf-8", errors="replace").startswith(_UNRECORDED):
        return (LEDGER, "missing: written by a medtl that did not record its files, so they cannot be told from "
                "yours; delete what you no longer need yourself")  # fmt: skip
    files, nested, pending = read_ledger(folder, pending=True)
    if (describe(folder) or {}).get("complete"):
        pending = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        rel_dir = here.relative_to(folder).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(dirnames):
            rel, path = prefix + name, here / name
            if path.is_symlink():  # a link to a folder is judged like a file: medtl's only if recorded
                dirnames.remove(name)
                filenames.append(name)
            elif rel in nested and (path / MARKER).is_file():
                dirnames.remove(name)
                inner = _not_ours(path)
                if inner is not None:
                    return (f"{rel}/{inner[0]}", inner[1])
            elif rel in pending:
                dirnames.remove(name)
            elif (found := describe(path)) is not None:
                return (rel + "/", f"{what(found)} that this one did not write")
        for name in sorted(filenames):
            rel = prefix + name
            if not prefix and (name in _INFRASTRUCTURE or name in KEPT_FILES):
                continue
            if rel not in files and not _is_temporary_of(rel, files):
                return (rel, "medtl did not write it")
    return None


def _remove_own(folder: Path, *, nested: bool = False) -> None:
    """Remove every file ``folder``'s ledger records (and the folders they leave empty); reviewers'
    verdicts stay wherever they are, and a folder still holding them keeps its marker. Outputs
    nested in it go first, each by its own ledger. ``nested``: this is such an output, which goes
    whole (marker, ledger and lock too) unless verdicts keep it."""
    files, trees, pending = read_ledger(folder, pending=True)
    unfinished = not (describe(folder) or {}).get("complete")
    root = _real(folder)
    emptied: set[Path] = set()
    for rel in sorted(trees):  # nested outputs first: their markers say what they are
        path = folder / rel
        if _within(root, path) and not path.is_symlink() and (path / MARKER).is_file():
            _remove_own(path, nested=True)
            emptied.add(path)
    for rel in sorted(files - _INFRASTRUCTURE):
        path = folder / rel
        if path.name in KEPT_FILES or not _within(root, path):  # verdicts; a link that leads out
            continue
        for leftover in path.parent.glob(f".{_glob_escape(path.name)}{TEMPORARY_INFIX}*.tmp") if path.parent.is_dir() else ():
            leftover.unlink(missing_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        emptied.add(path.parent)
    for rel in sorted(pending):  # a killed run's library folders: theirs whole, as _not_ours judged
        path = folder / rel
        if unfinished and _within(root, path) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        emptied.add(path)
    for path in sorted({p for e in emptied for p in (e, *e.parents) if folder in p.parents},
                       key=lambda p: len(p.parts), reverse=True):  # fmt: skip
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty: a folder a user made files in stays
    kept = any(n in KEPT_FILES for n in os.listdir(folder))
    # an output nested here that verdicts kept stays this folder's own
    survivors = [f"{rel}/\n" for rel in sorted(trees) if ((folder / rel) / MARKER).is_file()]
    (folder / LEDGER).write_text("".join(survivors))
    if not kept:
        (folder / MARKER).unlink(missing_ok=True)
    if nested and not kept:  # nobody holds its lock: this process holds the folder around it
        for name in (LEDGER, LOCK):
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _within(root: Path, path: Path) -> bool:
    """True when ``path``'s folder, links followed, is ``root`` or below it (the entry itself may
    be a link: removing a link removes the link only)."""
    parent = _real(path.parent)
    return parent == root or root in parent.parents


def _glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    import glob

    return glob.escape(name)


def _prepare(folder: Path, command: str, overwrite: bool, resume: bool, restart: bool = False) -> None:
    """The checks and the clean-up of :func:`output_folder`, under its lock."""
    found = describe(folder)
    if found is None:
        names = sorted(n for n in os.listdir(folder) if n not in _INFRASTRUCTURE)
        outputs = [f"{n}/ ({what(inner)})" for n in names if (inner := describe(folder / n)) is not None]
        if outputs:
            raise OutputError(folder, f"holds medtl output of its own: {', '.join(outputs[:2])}: give a new or empty "
                              "folder; medtl never removes another command's output from around it")  # fmt: skip
        if names:
            raise OutputError(folder, f"holds files medtl did not write ({', '.join(names[:3])}"
                              f"{' ...' if len(names) > 3 else ''}): give an empty or new folder; medtl never "
                              "removes files it did not write, with --overwrite neither")  # fmt: skip
    else:
        if command not in RUN_COMMANDS and found.get("command") in RUN_COMMANDS:
            raise OutputError(folder, f"holds {what(found)}; `medtl {command}` never writes into a run's own "
                              "files: give another -o")  # fmt: skip
        if resume and found.get("command") == command:
            if not (folder / LEDGER).is_file():  # an older medtl's output, continued: its files are unrecorded
                (folder / LEDGER).write_text(_UNRECORDED + "\n")
            return
        # the same command's unfinished output (it failed: a typo, a missing file) holds nothing to
        # keep, and refusing it would block the corrected command; a run is resumed instead (above)
        same = found.get("command") == command
        unfinished = same and not found.get("complete")
        retry = (unfinished and command not in RESUMABLE_COMMANDS) or (same and (restart or command in
                                                                               REPEATABLE_COMMANDS))  # fmt: skip
        if not (overwrite or retry):
            hint = "--resume to finish it, " if unfinished and command in RESUMABLE_COMMANDS else ""
            raise OutputError(folder, f"already holds {what(found)}; pass {hint}--overwrite to replace it (medtl "
                              "removes only the files it wrote there), or give another -o")  # fmt: skip
        kept = [n for n in os.listdir(folder) if n in KEPT_FILES]
        if kept and command != "report":
            raise OutputError(folder, f"holds reviewers' verdicts ({kept[0]}), which medtl never deletes: give "
                              "another -o")  # fmt: skip
        foreign = _not_ours(folder)
        if foreign is not None:
            raise OutputError(folder, f"holds {foreign[0]} ({foreign[1]}): medtl removes only the files it wrote, "
                              "so it does not write here, with --overwrite neither; move it or give another -o")  # fmt: skip
        _remove_own(folder)
    (folder / LEDGER).touch()
    write_json(folder / MARKER, {"command": command, "medtl_version": _version(), "started": now(),
                                 "complete": False, "argv": _argv()})  # fmt: skip


@contextlib.contextmanager
def output_folder(
    folder: str | os.PathLike,
    command: str,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    resume: bool = False,
    restart: bool = False,
) -> Iterator[Path]:
    """Hold ``folder`` for ``command``'s output: refuse what must not be written, lock it, remove
    the earlier output's own files when told to, record every file written into it, and mark it
    as being written (a context manager; call :func:`mark_complete` inside it when the output is
    whole).

    Args:
        folder: the output folder (created if absent).
        command: ``train``, ``adapt``, ``evaluate``, ``audit`` ... (recorded in ``medtl.json``).
        inputs: every file and folder the command reads (runs, manifests, image folders, other
            outputs): the output may not be, contain or sit inside one.
        overwrite: replace the medtl output in ``folder`` (another command's too, never a run
            unless ``command`` writes runs): exactly the files it recorded are removed.
        resume: keep output of the same command in place (``train`` continuing its run,
            ``predict --resume``; the caller checks that the job matches).
        restart: replace an earlier output of the same command (``train --restart``), and only
            that: another command's output still needs ``overwrite``.

    Raises:
        OutputError: ``folder`` is a file or cannot be written; it is, holds or sits inside an
            input, or sits inside another medtl output; it holds files medtl did not write; it is
            a run directory and ``command`` does not write runs; it holds medtl output and neither
            ``overwrite`` nor ``resume`` applies. The message names what it found and how to go on.
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
    medtl.errors.OutputError: ...: already holds a finished `medtl evaluate` output; pass --overwrite to replace it (medtl removes only the files it wrote there), or give another -o
    """
    folder = Path(folder)
    check_destination(folder, inputs=inputs)
    if held_folder(folder.parent) is not None:
        claim(folder, tree=True)  # an output nested in one this process writes belongs to it
    _check_writable(folder)
    with RunLock(folder, command):
        try:
            _prepare(folder, command, overwrite, resume, restart)
            hold(folder)
            yield folder
        finally:
            release(folder)


def mark_complete(folder: str | os.PathLike, command: str, **extra: Any) -> None:
    """Record in ``medtl.json`` that ``command`` finished writing ``folder`` (``extra`` is added).
    Call it last: a write that fails before it leaves the output unfinished."""
    folder = Path(folder)
    settle(folder)  # Lightning's log files, one by one: a file added there later is a user's
    record = describe(folder) or {}
    record.update(command=command, complete=True, finished=now(), medtl_version=_version(), **extra)
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


# ----------------------------------------------------------------------------- single-file outputs
def csv_with_header(columns: Iterable[str]) -> Callable[[Path], str | None]:
    """A :func:`check_output_file` ``same_kind`` test: ``None`` when a file is a CSV whose header
    is exactly ``columns`` (one this command wrote), else what it is instead.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(p, "w").write("path,label\\n")
    >>> csv_with_header(["path", "format"])(Path(p))
    'a CSV with other columns (path, label ...)'
    """
    wanted = list(columns)

    def same(path: Path) -> str | None:
        import csv

        head = path.read_bytes()[:16]
        if head.startswith(b"SQLite format 3"):
            return "a SQLite database"
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return "not a CSV medtl wrote"
        if header != wanted:
            return f"a CSV with other columns ({', '.join(header[:2])} ...)" if header else "not a CSV medtl wrote"
        return None

    return same


def check_output_file(
    target: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    same_kind: Callable[[Path], str | None] | None = None,
    example: str = "out.csv",
) -> Path:
    """Check, before any work, that ``target`` may be written as a single file; create its folder.

    Args:
        inputs: what the command reads: the file may not be one, nor sit inside one.
        overwrite: an existing file may be replaced, if ``same_kind`` says it is one of its kind.
        same_kind: ``path -> None`` when an existing file is what this command writes, else a
            description of what it is (:func:`csv_with_header`); ``None``: any file may be replaced.
        example: a file name for the error message.

    Raises:
        OutputError: ``target`` is a folder, an input or inside one, inside medtl output (a run,
            a report ...), or an existing file without ``overwrite`` or of another kind.

    >>> check_output_file("/")
    Traceback (most recent call last):
    ...
    medtl.errors.OutputError: /: is a folder: give a file name such as out.csv
    """
    path = Path(target)
    if path.is_dir():
        raise OutputError(path, f"is a folder: give a file name such as {example}")
    _check_inputs(path, inputs, noun="output file")
    _check_enclosing(path, noun="output file")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise OutputError(path, "is not a plain file: give another name")
        if not overwrite:
            raise OutputError(path, "exists: pass --overwrite to replace it, or give another name")
        kind = same_kind(path) if same_kind is not None else None
        if kind is not None:
            raise OutputError(path, f"is {kind}, not an earlier output of this command: medtl never replaces it, "
                              "with --overwrite neither; give another name")  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".medtl-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(path, f"cannot be written ({exc.strerror or exc})") from None
    return path
