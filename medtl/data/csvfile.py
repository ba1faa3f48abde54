"""Reading a CSV a user gives medtl (a manifest, predictions to audit, verdicts to import), strictly.

Python's ``csv`` module and pandas forgive a broken file: an unclosed quote swallows the rest of the
file into one field, and a row with too few or too many fields is padded or spread into odd
columns. Either way the mistake surfaces much later as a baffling "file not found" for a path
that is half the manifest. :func:`read_csv_rows` refuses such a file at once, naming the file,
the line and the reason:

- an **unclosed quote** (a quoted field that runs on past its line, or to the end of the file),
  at the line where the quoted field starts;
- a row with **more or fewer fields** than the header;
- a column named twice, text that is not UTF-8, an empty file.

A quoted field may span lines only in the columns a caller allows (a reviewer's comment); paths,
labels and scores never do. Blank lines are skipped, a UTF-8 byte-order mark is dropped, and
``\\r\\n`` line ends are read as written by Excel.

It lives in ``medtl.data`` (beside the manifest reader) so that ``evaluate`` and ``report``, to
the right of ``data``, import it without an upward arrow; it imports only :mod:`medtl.errors` and
:mod:`medtl.csvcells` (a cell medtl wrote as ``'=...``, safe to open in a spreadsheet, reads back as
``=...``).

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
>>> _ = p.write_text('path,label\\np001/a.dcm,1\\n"p002/b.dcm,0\\np003/c.dcm,1\\n')
>>> read_csv_rows(p)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
medtl.errors.ConfigError: ...m.csv: line 3: unclosed quote: the quoted field that starts on this line runs to the end of the file
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection

from ..csvcells import plain_cell
from ..errors import ConfigError, MedtlError

__all__ = ["CsvRow", "read_csv_rows"]


class CsvRow(dict):
    """One row of a CSV as ``{column: text}``, and ``line``: the line of the file it starts on
    (the header is line 1; blank lines and quoted line breaks count, as an editor counts them).

    >>> row = CsvRow({"path": "a.png"}, line=3)
    >>> row["path"], row.line
    ('a.png', 3)
    """

    def __init__(self, values: dict[str, str], line: int):
        super().__init__(values)
        self.line = line


def read_csv_rows(
    path: str | os.PathLike,
    *,
    error: type[MedtlError] = ConfigError,
    multiline: Collection[str] = (),
) -> tuple[list[str], list[CsvRow]]:
    """The header and the rows of a CSV file, or ``error(path, reason)`` naming the broken line.

    Args:
        path: the file (UTF-8, with or without a byte-order mark).
        error: the :class:`~medtl.errors.MedtlError` subclass to raise (the caller's own).
        multiline: columns whose quoted values may hold line breaks (free text such as a comment);
            a line break anywhere else is an unclosed quote.

    Returns:
        ``(columns, rows)``: the header's column names, and one :class:`CsvRow` per non-blank
        line, each with exactly the header's columns.

    Raises:
        error: the file cannot be read, is not UTF-8, is empty, names a column twice, has a row
            with the wrong number of fields or an unclosed quote.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = p.write_bytes(b'\\xef\\xbb\\xbfpath,label\\r\\n"a, b.png",1\\r\\n\\r\\nc.png,0\\r\\n')
        >>> columns, rows = read_csv_rows(p)
        >>> columns, [(r.line, r["path"]) for r in rows]
        (['path', 'label'], [(2, 'a, b.png'), (4, 'c.png')])
        >>> _ = p.write_text("path,label\\na.png,1\\nb.png,0,extra\\n")
        >>> read_csv_rows(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medtl.errors.ConfigError: ...m.csv: line 3: 3 fields, but the header has 2 (path, label): a comma too many, or a value that holds a comma without quotes around it
    """
    text = _text(path, error)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: list[str] | None = None
    rows: list[CsvRow] = []
    end = 0  # the last line of the previous record: the next one starts on the line after it
    while True:
        start = end + 1
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            raise error(path, _broken_quote(start, reader.line_num, str(exc))) from None
        if fields is None:
            break
        end = reader.line_num
        if not fields:  # a blank line
            continue
        if columns is None:
            columns = _header(path, fields, start, end, error)
            continue
        rows.append(_row(path, columns, fields, start, end, multiline, error))
    if columns is None:
        raise error(path, "empty file: no header line")
    return columns, rows


def _text(path: str | os.PathLike, error: type[MedtlError]) -> str:
    """The file's text; a byte that is not UTF-8 is an error naming its line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(path, f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text: save the file as UTF-8 "
                          "(in Excel: CSV UTF-8)") from None  # fmt: skip


def _header(path, fields: list[str], start: int, end: int, error: type[MedtlError]) -> list[str]:
    if end > start:
        raise error(path, f"line {start}: unclosed quote: the quoted column name that starts on this line runs on "
                          f"to line {end}")  # fmt: skip
    seen: set[str] = set()
    for name in fields:
        if name and name in seen:  # csv.DictReader would silently keep only the last one's values
            raise error(path, f"line 1: column '{name}' appears twice")
        seen.add(name)
    return fields


def _row(path, columns: list[str], fields: list[str], start: int, end: int, multiline, error) -> CsvRow:
    if end > start:  # the record runs over several lines: only free-text columns may do that
        for name, value in zip(columns, fields, strict=False):  # a ragged row is judged below
            if ("\n" in value or "\r" in value) and name not in multiline:
                raise error(path, f"line {start}: unclosed quote: the quoted field ('{name}' column) that starts on "
                                  f"this line runs on to line {end}")  # fmt: skip
    if len(fields) > len(columns) and not any(f.strip() for f in fields[len(columns):]):
        fields = fields[: len(columns)]  # trailing empty cells (a stray comma at the end) hold nothing to lose
    if len(fields) != len(columns):
        shown = ", ".join(columns[:8]) + (" ..." if len(columns) > 8 else "")
        why = ("a comma too many, or a value that holds a comma without quotes around it" if len(fields) > len(columns)
               else "a value or a comma is missing")  # fmt: skip
        raise error(path, f"line {start}: {len(fields)} field{'s' * (len(fields) != 1)}, but the header has "
                          f"{len(columns)} ({shown}): {why}")  # fmt: skip
    # a cell medtl wrote as '=... (safe to open in a spreadsheet) reads back as it was
    return CsvRow({c: plain_cell(f) for c, f in zip(columns, fields, strict=True)}, start)


def _broken_quote(start: int, at: int, detail: str) -> str:
    """The reason for a ``csv.Error`` raised while reading the record that starts on line ``start``."""
    if detail == "unexpected end of data":
        return f"line {start}: unclosed quote: the quoted field that starts on this line runs to the end of the file"
    if at > start:  # a later quote closed it, and text follows that quote
        return (f"line {start}: unclosed quote: the quoted field that starts on this line runs on to line {at} "
                f"(csv: {detail})")  # fmt: skip
    if "expected after" in detail:
        return f"line {start}: text after a closing quote (a quote inside a value must be doubled: \"\"); csv: {detail}"
    return f"line {start}: {detail}"
