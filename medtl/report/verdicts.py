"""Clinicians' verdicts on a model's outputs, kept in SQLite: append-only, safe for two reviewers
at once and for a server killed mid-write.

Every verdict is a row that is never changed or deleted (triggers refuse it): a reviewer who
changes their mind adds a new row, and :meth:`VerdictStore.latest` reads the newest one per study
and reviewer. The database runs in WAL mode with ``synchronous=FULL``, so a verdict whose
:meth:`~VerdictStore.record` returned survives a killed process or a power cut, and readers never
block the writer. Exports and imports are CSV, to bring another reviewer's verdicts in.

>>> import tempfile, os
>>> store = VerdictStore(os.path.join(tempfile.mkdtemp(), "verdicts.sqlite"))
>>> _ = store.record("a1b2c3", "dr_lee", "agree", probability=0.91)
>>> _ = store.record("a1b2c3", "dr_lee", "disagree", comment="rib fracture, not a nodule")
>>> store.latest()["a1b2c3"]["dr_lee"]["verdict"], len(store.history("a1b2c3"))
('disagree', 2)
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["VerdictStore", "VERDICTS", "EXPORT_COLUMNS"]

#: What a reviewer may say about one study.
VERDICTS = ("agree", "disagree", "uncertain")
#: Columns of an export, and what an import reads.
EXPORT_COLUMNS = ("study", "reviewer", "verdict", "comment", "probability", "recorded_at", "source")
_MAX_REVIEWER, _MAX_COMMENT, _MAX_STUDY = 100, 5000, 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study TEXT NOT NULL CHECK (length(study) BETWEEN 1 AND 200),
    reviewer TEXT NOT NULL CHECK (length(reviewer) BETWEEN 1 AND 100),
    verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'uncertain')),
    comment TEXT NOT NULL DEFAULT '',
    probability REAL CHECK (probability IS NULL OR (probability >= 0 AND probability <= 1)),
    recorded_at TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'review'
);
CREATE INDEX IF NOT EXISTS verdicts_study ON verdicts (study, reviewer, id);
CREATE UNIQUE INDEX IF NOT EXISTS verdicts_once ON verdicts (study, reviewer, recorded_at, verdict, comment);
CREATE TRIGGER IF NOT EXISTS verdicts_no_update BEFORE UPDATE ON verdicts
    BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: record a new one'); END;
CREATE TRIGGER IF NOT EXISTS verdicts_no_delete BEFORE DELETE ON verdicts
    BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: they are never deleted'); END;
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _check(study: str, reviewer: str, verdict: str, comment: str, probability, where: str) -> tuple:
    """The values of one verdict, validated; ``where`` names the source in errors."""
    study, reviewer = str(study or "").strip(), str(reviewer or "").strip()
    verdict, comment = str(verdict or "").strip().lower(), str(comment or "")
    if not study or len(study) > _MAX_STUDY:
        raise ConfigError(None, f"{where}: a verdict needs the study's key (1-{_MAX_STUDY} characters)")
    if not reviewer or len(reviewer) > _MAX_REVIEWER:
        raise ConfigError(None, f"{where}: a verdict needs the reviewer's name (1-{_MAX_REVIEWER} characters)")
    if verdict not in VERDICTS:
        raise ConfigError(None, f"{where}: verdict must be {', '.join(VERDICTS)}, not '{verdict}'")
    if len(comment) > _MAX_COMMENT:
        raise ConfigError(None, f"{where}: the comment is longer than {_MAX_COMMENT} characters")
    if probability is not None and probability != "":
        try:
            probability = float(probability)
        except (TypeError, ValueError):
            raise ConfigError(None, f"{where}: probability must be a number in [0, 1], not '{probability}'") from None
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise ConfigError(None, f"{where}: probability must be in [0, 1], not {probability}")
    else:
        probability = None
    return study, reviewer, verdict, comment, probability


def _csv_text(rows: list[dict[str, Any]]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class VerdictStore:
    """The verdicts database at ``path`` (created with its schema if absent).

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
            self._db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:  # a read-only folder, a full disk, a locked network share
            raise ConfigError(self.path, f"cannot open the verdicts database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ConfigError(self.path, f"not a verdicts database ({exc})") from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VerdictStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(
        self,
        study: str,
        reviewer: str,
        verdict: str,
        *,
        comment: str = "",
        probability: float | None = None,
        recorded_at: str | None = None,
        source: str = "review",
    ) -> int:
        """Store one verdict (durable when this returns) and return its id.

        Raises:
            ConfigError: an empty study or reviewer, an unknown verdict, a probability outside
                [0, 1], a comment over 5,000 characters.
        """
        values = (*_check(study, reviewer, verdict, comment, probability, "verdict"), recorded_at or _now(), source)
        cur = self._db.execute(
            "INSERT OR IGNORE INTO verdicts (study, reviewer, verdict, comment, probability, recorded_at, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        if cur.rowcount:
            return int(cur.lastrowid)
        # the very same verdict sent twice (a double click, a retried post): stored once
        row = self._db.execute(
            "SELECT id FROM verdicts WHERE study = ? AND reviewer = ? AND recorded_at = ? AND verdict = ? AND comment = ?",
            (values[0], values[1], values[5], values[2], values[3]),
        ).fetchone()
        return int(row["id"])

    def history(self, study: str | None = None) -> list[dict[str, Any]]:
        """Every verdict (of one study, or all), oldest first."""
        sql = "SELECT * FROM verdicts" + (" WHERE study = ?" if study is not None else "") + " ORDER BY id"
        return [dict(r) for r in self._db.execute(sql, (study,) if study is not None else ())]

    def get(self, verdict_id: int | str) -> dict[str, Any] | None:
        """One verdict by its id (as :meth:`record` returned it), or ``None``."""
        try:
            row = self._db.execute("SELECT * FROM verdicts WHERE id = ?", (int(verdict_id),)).fetchone()
        except (TypeError, ValueError, OverflowError):
            return None
        return dict(row) if row is not None else None

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The newest verdict of each reviewer on each study: ``{study: {reviewer: row}}``."""
        rows = self._db.execute(
            "SELECT * FROM verdicts WHERE id IN (SELECT max(id) FROM verdicts GROUP BY study, reviewer) ORDER BY id"
        )
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["study"], {})[r["reviewer"]] = dict(r)
        return out

    def csv_text(self) -> str:
        """Every verdict, oldest first, as CSV text (:data:`EXPORT_COLUMNS`)."""
        return _csv_text(self.history())

    def export_csv(self, path: str | os.PathLike) -> int:
        """Write every verdict, oldest first, as CSV (atomically); return the number of rows."""
        from ..rundir import write_text

        rows = self.history()
        write_text(path, _csv_text(rows))
        return len(rows)

    def import_csv(self, path: str | os.PathLike) -> dict[str, int]:
        """Add another reviewer's exported verdicts. All or nothing: one bad row (named by line)
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
            rows.append((*values, stamp, str(row.get("source") or f"import:{path.name}")))
        imported = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for values in rows:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO verdicts (study, reviewer, verdict, comment, probability, recorded_at, source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                imported += cur.rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return {"imported": imported, "skipped": len(rows) - imported}
