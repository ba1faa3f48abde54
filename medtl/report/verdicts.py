"""Clinicians' verdicts on a model's outputs, kept in SQLite: append-only, safe for several readers
at once and for a server killed mid-write, and honest about where each verdict came from.

Every verdict is a row that is never changed or deleted (triggers refuse it): a reviewer who
changes their mind adds a new row. The database runs in WAL mode with ``synchronous=FULL``, so a
verdict whose :meth:`~VerdictStore.record` returned survives a killed process or a power cut, and
readers never block the writer.

Where a verdict came from is part of it (``source``):

- ``live``: posted to ``medtl review`` and attributed by the server; ``via`` says how: ``link``
  (the reader's personal link) or ``single-user`` (the one reviewer of a review without readers,
  named when the server started); ``recorded_at`` is the server's clock.
- ``import``: read from a CSV by ``medtl review import``; ``reviewer`` and ``recorded_at`` are what
  the file claims, and ``import_file`` / ``import_sha256`` name the file (its SHA-256), so a claim
  can be traced. Whatever the file says in its own ``source`` column is ignored.

:meth:`~VerdictStore.latest` (what the index shows) takes each reviewer's newest *live* verdict,
and an imported one only where that reviewer has none: a file cannot overrule what a reader
recorded here, however it is dated. The readers of a study (:meth:`~VerdictStore.add_reader`)
live in the same file; only a digest of each personal link's secret is stored.

>>> import tempfile, os
>>> store = VerdictStore(os.path.join(tempfile.mkdtemp(), "verdicts.sqlite"))
>>> _ = store.record("a1b2c3", "dr_lee", "agree", probability=0.91)
>>> _ = store.record("a1b2c3", "dr_lee", "disagree", comment="rib fracture, not a nodule")
>>> store.latest()["a1b2c3"]["dr_lee"]["verdict"], len(store.history("a1b2c3"))
('disagree', 2)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import secrets
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["VerdictStore", "VERDICTS", "EXPORT_COLUMNS", "CHANNELS", "check_name", "secret_digest"]

#: What a reviewer may say about one study.
VERDICTS = ("agree", "disagree", "uncertain")
#: Columns of an export; an import reads the first six and ``recorded_at``.
EXPORT_COLUMNS = ("study", "reviewer", "verdict", "comment", "probability", "recorded_at", "source", "via",
                  "stored_at", "import_file", "import_sha256")  # fmt: skip
#: How a live verdict reached the server: a reader's personal link, or a single-user review.
CHANNELS = ("link", "single-user")
_MAX_REVIEWER, _MAX_COMMENT, _MAX_STUDY = 100, 5000, 200
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # letters in Unicode, blank on screen
_LIVE_SOURCES = ("live", "review")  # "review": how medtl before readers marked a live verdict
_VERSION = 2  # PRAGMA user_version of the current schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study TEXT NOT NULL CHECK (length(study) BETWEEN 1 AND 200),
    reviewer TEXT NOT NULL CHECK (length(reviewer) BETWEEN 1 AND 100),
    verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'uncertain')),
    comment TEXT NOT NULL DEFAULT '',
    probability REAL CHECK (probability IS NULL OR (probability >= 0 AND probability <= 1)),
    recorded_at TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'live'
);
CREATE INDEX IF NOT EXISTS verdicts_study ON verdicts (study, reviewer, id);
CREATE UNIQUE INDEX IF NOT EXISTS verdicts_once ON verdicts (study, reviewer, recorded_at, verdict, comment);
CREATE TRIGGER IF NOT EXISTS verdicts_no_update BEFORE UPDATE ON verdicts
    BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: record a new one'); END;
CREATE TRIGGER IF NOT EXISTS verdicts_no_delete BEFORE DELETE ON verdicts
    BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: they are never deleted'); END;
CREATE TABLE IF NOT EXISTS readers (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    secret_sha256 TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    removed_at TEXT
);
"""
# columns added after the first schema (a report reviewed with an older medtl gains them, empty)
_ADDED = ("stored_at", "import_file", "import_sha256", "via")


def _statements(script: str) -> list[str]:
    """The statements of an SQL script (a trigger's body holds semicolons of its own)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def check_name(name: Any, what: str = "reviewer's name") -> str:
    """A reviewer's name as stored: printable text of 1-100 characters (no line break, tab or
    other control character), without surrounding spaces.

    Raises:
        ConfigError: an empty, too long or unprintable name; the message says which.

    >>> check_name("  dr_lee ")
    'dr_lee'
    >>> check_name("dr_a\\ndr_b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: the reviewer's name must be printable text: 'dr_a\\ndr_b' holds a line break ...
    """
    text = unicodedata.normalize("NFC", str(name or "")).strip()
    if not text or len(text) > _MAX_REVIEWER:
        raise ConfigError(None, f"the {what} must be 1-{_MAX_REVIEWER} characters, not {len(text)}")
    if not text.isprintable():
        raise ConfigError(None, f"the {what} must be printable text: {text!r} holds a line break or another control "
                          "character")  # fmt: skip
    if all(ch in _BLANK_LOOKING or unicodedata.category(ch) in ("Zs", "Mn", "Me") for ch in text):
        raise ConfigError(None, f"the {what} must show: {text!r} prints as blank")
    return text


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) of a personal link's secret: what the database keeps instead of it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check(study: str, reviewer: str, verdict: str, comment: str, probability, where: str) -> tuple:
    """The values of one verdict, validated; ``where`` names the source in errors."""
    study, verdict, comment = str(study or "").strip(), str(verdict or "").strip().lower(), str(comment or "")
    if not study or len(study) > _MAX_STUDY:
        raise ConfigError(None, f"{where}: a verdict needs the study's key (1-{_MAX_STUDY} characters)")
    if not str(reviewer or "").strip():
        raise ConfigError(None, f"{where}: a verdict needs the reviewer's name")
    try:
        reviewer = check_name(reviewer)
    except ConfigError as exc:
        raise ConfigError(None, f"{where}: {exc.reason}") from None
    if verdict not in VERDICTS:
        raise ConfigError(None, f"{where}: verdict must be {', '.join(VERDICTS)}, not '{verdict}'")
    if len(comment) > _MAX_COMMENT:
        raise ConfigError(None, f"{where}: the comment is longer than {_MAX_COMMENT} characters")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\r\t" for ch in comment):
        raise ConfigError(None, f"{where}: the comment holds a control character (only text and line breaks)")
    return study, reviewer, verdict, comment, _probability(probability, where)


def _probability(probability, where: str) -> float | None:
    if probability is None or probability == "":
        return None
    try:
        probability = float(probability)
    except (TypeError, ValueError):
        raise ConfigError(None, f"{where}: probability must be a number in [0, 1], not '{probability}'") from None
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise ConfigError(None, f"{where}: probability must be in [0, 1], not {probability}")
    return probability


def _plain(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["source"] = "live" if out.get("source") in _LIVE_SOURCES else "import"
    return out


def _rank(row: dict[str, Any]) -> tuple:
    """What makes a verdict a reviewer's current one: live before imported; the newest live one by
    the order the server stored them; among imported ones, the time the file claims."""
    if row["source"] == "live":
        return (1, "", row["id"])
    return (0, row["recorded_at"], row["id"])


class VerdictStore:
    """The verdicts database at ``path`` (created with its schema if absent, brought up to date if
    an older medtl made it).

    Raises:
        ConfigError: the file exists but is not a verdicts database, or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: every statement outside an explicit BEGIN commits at once
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                self._upgrade()
        except sqlite3.OperationalError as exc:  # a read-only folder, a full disk, a locked network share
            raise ConfigError(self.path, f"cannot open the verdicts database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ConfigError(self.path, f"not a verdicts database ({exc})") from None
        self._db.row_factory = sqlite3.Row

    def _upgrade(self) -> None:
        # one writer at a time: two servers opening an old database add each column once
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_SCHEMA):  # executescript would commit the open transaction
                self._db.execute(statement)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        have = {r[1] for r in self._db.execute("PRAGMA table_info(verdicts)")}
        for column in _ADDED:
            if column not in have:
                self._db.execute(f"ALTER TABLE verdicts ADD COLUMN {column} TEXT")
        self._db.execute(f"PRAGMA user_version = {_VERSION}")
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VerdictStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ verdicts
    def record(self, study: str, reviewer: str, verdict: str, *, comment: str = "",
               probability: float | None = None, via: str = "single-user") -> int:  # fmt: skip
        """Store one live verdict, timed by this machine's clock (durable when this returns), and
        return its id. ``reviewer`` is whoever the caller has established is speaking, and ``via``
        how (:data:`CHANNELS`: the review server knows the reader from their personal link).

        Raises:
            ConfigError: an empty study, an empty or unprintable reviewer name, an unknown verdict,
                a probability outside [0, 1], a comment over 5,000 characters.
        """
        if via not in CHANNELS:
            raise ConfigError(None, f"via must be {' or '.join(CHANNELS)}, not '{via}'")
        now = _now()
        values = (*_check(study, reviewer, verdict, comment, probability, "verdict"), now, "live", now, via)
        cur = self._db.execute(
            "INSERT INTO verdicts (study, reviewer, verdict, comment, probability, recorded_at, source, stored_at, via)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        return int(cur.lastrowid)

    def history(self, study: str | None = None, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Every verdict (of one study, of one reviewer, or all), oldest first."""
        where = [(c, v) for c, v in (("study", study), ("reviewer", reviewer)) if v is not None]
        sql = "SELECT * FROM verdicts" + (" WHERE " + " AND ".join(f"{c} = ?" for c, _ in where) if where else "")
        return [_plain(r) for r in self._db.execute(sql + " ORDER BY id", [v for _, v in where])]

    def get(self, verdict_id: int | str) -> dict[str, Any] | None:
        """One verdict by its id (as :meth:`record` returned it), or ``None``."""
        try:
            row = self._db.execute("SELECT * FROM verdicts WHERE id = ?", (int(verdict_id),)).fetchone()
        except (TypeError, ValueError, OverflowError):
            return None
        return _plain(row) if row is not None else None

    def latest(self, reviewer: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """The current verdict of each reviewer (or of one) on each study, ``{study: {reviewer: row}}``:
        the newest live one, or, for a reviewer with no live verdict on the study, the imported one
        its file dates latest."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.history(reviewer=reviewer):
            mine = out.setdefault(row["study"], {})
            if row["reviewer"] not in mine or _rank(row) > _rank(mine[row["reviewer"]]):
                mine[row["reviewer"]] = row
        return out

    def csv_text(self, reviewer: str | None = None) -> str:
        """Every verdict (or one reviewer's), oldest first, as CSV text (:data:`EXPORT_COLUMNS`),
        each cell safe to open in a spreadsheet."""
        from ..csvcells import csv_text

        return csv_text(self.history(reviewer=reviewer), EXPORT_COLUMNS)

    def export_csv(self, path: str | os.PathLike) -> int:
        """Write every verdict, oldest first, as CSV (atomically); return the number of rows."""
        from ..files import write_csv

        rows = self.history()  # read once: a verdict posted meanwhile cannot make the count disagree
        write_csv(path, rows, list(EXPORT_COLUMNS))
        return len(rows)

    def import_csv(self, path: str | os.PathLike) -> dict[str, int]:
        """Add verdicts exported elsewhere, marked as imported from this file (its name and SHA-256;
        the file's own ``source`` column is ignored). All or nothing: one bad row (named by line)
        imports none. A verdict already here (same study, reviewer, time, verdict and comment) is
        skipped, so importing a file twice adds nothing. Returns ``{"imported", "skipped"}``.

        Raises:
            ConfigError: the file cannot be read, is a broken CSV (an unclosed quote, a ragged
                row), lacks a column, or holds a bad value; each names its line.
        """
        from ..data.csvfile import read_csv_rows

        path = Path(path)
        # strict: an unclosed quote is an error at its line; only a comment may span lines
        columns, table = read_csv_rows(path, multiline=("comment",))
        missing = [c for c in ("study", "reviewer", "verdict", "recorded_at") if c not in columns]
        if missing:
            raise ConfigError(path, f"not a verdicts export: no column {', '.join(missing)}")
        digest, now = hashlib.sha256(path.read_bytes()).hexdigest(), _now()
        rows = []
        for row in table:
            where = f"{path.name} line {row.line}"
            values = _check(row.get("study"), row.get("reviewer"), row.get("verdict"), row.get("comment"),
                            row.get("probability"), where)  # fmt: skip
            stamp = str(row.get("recorded_at") or "").strip()
            try:
                _dt.datetime.fromisoformat(stamp)
            except ValueError:
                raise ConfigError(None, f"{where}: recorded_at must be an ISO time, not '{stamp}'") from None
            rows.append((*values, stamp, "import", now, path.name[:200], digest))
        return self._insert_all(rows)

    def _insert_all(self, rows: list[tuple]) -> dict[str, int]:
        imported = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for values in rows:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO verdicts (study, reviewer, verdict, comment, probability, recorded_at, "
                    "source, stored_at, import_file, import_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                imported += cur.rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return {"imported": imported, "skipped": len(rows) - imported}

    # ------------------------------------------------------------------ readers
    def add_reader(self, name: str, *, new_link: bool = False) -> str:
        """Add a reader (or, with ``new_link``, give one a new personal link, which ends the old
        one) and return the secret of the link; only its digest is stored, so it is shown once.

        Raises:
            ConfigError: a bad name; a reader of that name exists (without ``new_link``), or does
                not (with it).

        >>> import tempfile, os
        >>> store = VerdictStore(os.path.join(tempfile.mkdtemp(), "v.sqlite"))
        >>> secret = store.add_reader("dr_lee")
        >>> store.reader(secret), store.reader("guess")
        ('dr_lee', None)
        """
        name = check_name(name, "reader's name")
        secret = secrets.token_urlsafe(24)
        known = self._db.execute("SELECT name, removed_at FROM readers WHERE name = ?", (name,)).fetchone()
        if known and not new_link:
            state = "was removed from" if known["removed_at"] else "is already a reader of"
            raise ConfigError(None, f"{name} {state} this report: pass --new-link to give them a new link (an old one "
                              "stops working)")  # fmt: skip
        clash = [r["name"] for r in self._db.execute("SELECT name FROM readers")
                 if r["name"] != name and r["name"].casefold() == name.casefold()]  # fmt: skip
        if clash:
            raise ConfigError(None, f"{name} differs from the reader {clash[0]} only in case: readers must be told "
                              "apart at a glance")  # fmt: skip
        if new_link and not known:
            raise ConfigError(None, f"{name} is not a reader of this report: add them without --new-link")
        self._db.execute(
            "INSERT INTO readers (name, secret_sha256, added_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET secret_sha256 = excluded.secret_sha256, removed_at = NULL",
            (name, secret_digest(secret), _now()),
        )
        return secret

    def remove_reader(self, name: str) -> None:
        """End a reader's personal link (their verdicts stay).

        Raises:
            ConfigError: no reader of that name.
        """
        cur = self._db.execute("UPDATE readers SET removed_at = ? WHERE name = ? AND removed_at IS NULL",
                               (_now(), unicodedata.normalize("NFC", str(name)).strip()))  # fmt: skip
        if not cur.rowcount:
            raise ConfigError(None, f"{name} is not a current reader of this report")

    def reader(self, secret: str) -> str | None:
        """The current reader whose personal link holds ``secret``, or ``None``."""
        row = self._db.execute("SELECT name FROM readers WHERE secret_sha256 = ? AND removed_at IS NULL",
                               (secret_digest(secret),)).fetchone()  # fmt: skip
        return row["name"] if row is not None else None

    def readers(self) -> list[dict[str, Any]]:
        """Every reader ever added (``name``, ``added_at``, ``removed_at``, ``verdicts``: how many
        live verdicts they recorded), by name."""
        rows = self._db.execute(
            "SELECT r.name, r.added_at, r.removed_at, (SELECT count(*) FROM verdicts v WHERE v.reviewer = r.name "
            "AND v.source IN ('live', 'review')) AS verdicts FROM readers r ORDER BY r.name"
        )
        return [dict(r) for r in rows]
