"""The review study of one report: who its readers are, and verdicts moved in and out as CSV.

A study lead adds each reader with :func:`add_reader` (``medtl review add-reader REPORT NAME``),
which prints that reader's personal link: ``/r/<secret>/`` on the review server. The server
attributes every verdict posted through a link to its reader; the name is never read from the
form. Only a digest of the secret is kept (in ``verdicts.sqlite``), so a lost link is replaced
with ``--new-link``, which ends the old one. A report without readers is a single-user review:
the one reviewer the server was started for, on this machine only.

>>> import inspect
>>> list(inspect.signature(add_reader).parameters)
['report_dir', 'name', 'new_link', 'base_url']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .build import REPORT_FILE, VERDICTS_FILE
from .verdicts import VerdictStore

__all__ = ["read_report", "add_reader", "remove_reader", "list_readers", "import_verdicts", "export_verdicts",
           "DEFAULT_BASE_URL"]  # fmt: skip

#: Where ``medtl review`` listens by default: the base of the links :func:`add_reader` prints.
DEFAULT_BASE_URL = "http://127.0.0.1:8765"


def read_report(report_dir: str | Path) -> dict[str, Any]:
    """A report folder's ``report.json``.

    Raises:
        ConfigError: the folder holds no finished ``medtl report``.
    """
    from ..rundir import describe, is_run

    folder = Path(report_dir)
    found = describe(folder) if folder.is_dir() else None
    if is_run(folder):
        raise ConfigError(folder, "is a run directory, which stays as training left it: verdicts live in a report "
                          "folder (`medtl report RUN PREDICTIONS -o REPORT`); give that folder")  # fmt: skip
    if not found or found.get("command") != "report" or not (folder / REPORT_FILE).is_file():
        raise ConfigError(folder, "is not a `medtl report` folder: build one with `medtl report RUN PREDICTIONS -o "
                          "FOLDER`")  # fmt: skip
    if not found.get("complete"):
        raise ConfigError(folder, "holds an unfinished report: build it again with `medtl report ... --overwrite`")
    return json.loads((folder / REPORT_FILE).read_text())


def _store(report_dir: str | Path) -> VerdictStore:
    read_report(report_dir)
    return VerdictStore(Path(report_dir) / VERDICTS_FILE)


def add_reader(report_dir: str | Path, name: str, *, new_link: bool = False,
               base_url: str = DEFAULT_BASE_URL) -> str:  # fmt: skip
    """Add a reader to a report's review and return their personal link (shown once: only a
    digest of its secret is stored). ``new_link`` replaces a reader's link (the old one stops
    working); ``base_url``: the address readers open the server at.

    Raises:
        ConfigError: not a report; a bad name (empty, over 100 characters, a line break or other
            control character); the reader exists (without ``new_link``) or not (with it).
    """
    with _store(report_dir) as store:
        secret = store.add_reader(name, new_link=new_link)
    return f"{base_url.rstrip('/')}/r/{secret}/"


def remove_reader(report_dir: str | Path, name: str) -> None:
    """End a reader's personal link; the verdicts they recorded stay.

    Raises:
        ConfigError: not a report, or no current reader of that name.
    """
    with _store(report_dir) as store:
        store.remove_reader(name)


def list_readers(report_dir: str | Path) -> list[dict[str, Any]]:
    """Every reader of a report (``name``, ``added_at``, ``removed_at``, ``verdicts``)."""
    if not (Path(report_dir) / VERDICTS_FILE).is_file():
        read_report(report_dir)
        return []
    with _store(report_dir) as store:
        return store.readers()


def import_verdicts(csv_path: str | Path, report_dir: str | Path) -> dict[str, int]:
    """Bring verdicts exported elsewhere into a report's database, marked as imported from this
    file (name and SHA-256): all or nothing, and only verdicts on cases of this report (a file
    from another report is refused, not merged). Returns ``{"imported", "skipped"}`` (skipped:
    already here).

    Raises:
        ConfigError: not a report folder; the file is unreadable, holds a bad value (named by
            line) or a case this report does not hold.
    """
    from ..data.csvfile import read_csv_rows

    report = read_report(report_dir)
    keys = {c["key"] for c in report["cases"]}
    path = Path(csv_path)
    for row in read_csv_rows(path, multiline=("comment",))[1]:
        study = str(row.get("study") or "").strip()
        if study and study not in keys:
            raise ConfigError(path, f"line {row.line}: case {study} is not in this report (a verdicts file of "
                              "another report?); nothing was imported")  # fmt: skip
    with VerdictStore(Path(report_dir) / VERDICTS_FILE) as store:
        return store.import_csv(path)


def export_verdicts(report_dir: str | Path, csv_path: str | Path, *, overwrite: bool = False) -> int:
    """Write every verdict of a report, oldest first, as CSV (each cell safe to open in a
    spreadsheet); returns the number of rows.

    Args:
        overwrite: replace an earlier export at ``csv_path``; nothing else (the verdicts
            database, a manifest, a file inside the report) is ever replaced.

    Raises:
        ConfigError: not a report folder.
        OutputError: ``csv_path`` is a folder, inside the report or other medtl output, or an
            existing file (without ``overwrite``, or one that is not an export of verdicts).
    """
    from ..outputs import check_output_file
    from .verdicts import EXPORT_COLUMNS

    read_report(report_dir)
    check_output_file(csv_path, inputs=[report_dir], overwrite=overwrite, same_kind=_an_export(EXPORT_COLUMNS),
                      example="verdicts.csv")  # fmt: skip
    if not (Path(report_dir) / VERDICTS_FILE).is_file():  # nothing recorded yet: the report stays as it is
        from ..files import write_csv

        write_csv(csv_path, [], list(EXPORT_COLUMNS))
        return 0
    with VerdictStore(Path(report_dir) / VERDICTS_FILE) as store:
        return store.export_csv(csv_path)


def _an_export(columns):
    """An earlier export may be replaced, from this medtl or one before readers (seven columns)."""
    from ..outputs import csv_with_header

    now, before = csv_with_header(columns), csv_with_header(columns[:7])
    return lambda path: None if before(path) is None else now(path)
