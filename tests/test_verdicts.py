"""The verdicts store behind `medtl review`: append-only, concurrent, durable across kill -9."""

import csv
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from medtl.errors import ConfigError
from medtl.report import VerdictStore


def test_latest_history_and_append_only(tmp_path):
    store = VerdictStore(tmp_path / "v.sqlite")
    first = store.record("s1", "dr_a", "agree", probability=0.8)
    store.record("s1", "dr_b", "uncertain", comment="<script>alert(1)</script> stored as text")
    store.record("s1", "dr_a", "Disagree", comment="looked again")
    latest = store.latest()
    assert latest["s1"]["dr_a"]["verdict"] == "disagree" and latest["s1"]["dr_b"]["verdict"] == "uncertain"
    assert latest["s1"]["dr_b"]["comment"] == "<script>alert(1)</script> stored as text"
    assert [r["verdict"] for r in store.history("s1")] == ["agree", "uncertain", "disagree"]
    assert store.history("s1")[0]["probability"] == 0.8
    raw = sqlite3.connect(tmp_path / "v.sqlite", isolation_level=None)  # no transaction left open
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE verdicts SET verdict = 'agree' WHERE id = ?", (first,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM verdicts")
    raw.close()
    assert {r["source"] for r in store.history()} == {"live"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"verdict": "maybe"}, "verdict must be agree, disagree, uncertain, not 'maybe'"),
        ({"reviewer": "  "}, "needs the reviewer's name"),
        ({"study": ""}, "needs the study's key"),
        ({"probability": 1.5}, r"probability must be in \[0, 1\], not 1.5"),
        ({"probability": "high"}, "probability must be a number"),
        ({"comment": "x" * 5001}, "longer than 5000 characters"),
        ({"comment": "nul \0 byte"}, "control character"),
        ({"reviewer": "dr_a\0"}, "must be printable text"),
        ({"reviewer": "dr_a\ndr_b"}, "must be printable text"),
        ({"reviewer": "dr_a\rdr_b"}, "must be printable text"),
        ({"reviewer": "x" * 101}, "must be 1-100 characters"),
    ],
)
def test_bad_verdicts_are_refused_with_the_reason(tmp_path, kwargs, message):
    store = VerdictStore(tmp_path / "v.sqlite")
    args = {"study": "s1", "reviewer": "dr_a", "verdict": "agree"} | kwargs
    study, reviewer, verdict = args.pop("study"), args.pop("reviewer"), args.pop("verdict")
    with pytest.raises(ConfigError, match=message):
        store.record(study, reviewer, verdict, **args)
    assert store.history() == []


def test_not_a_database_is_named(tmp_path):
    (tmp_path / "v.sqlite").write_text("hello, not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a verdicts database"):
        VerdictStore(tmp_path / "v.sqlite")


def test_export_then_import_into_another_reviewers_store(tmp_path):
    a = VerdictStore(tmp_path / "a.sqlite")
    a.record("s1", "dr_a", "agree", probability=0.7)
    a.record("s2", "dr_a", "disagree", comment='quote " and, comma\nand a new line')
    assert a.export_csv(tmp_path / "a.csv") == 2
    b = VerdictStore(tmp_path / "b.sqlite")
    b.record("s1", "dr_b", "uncertain")
    assert b.import_csv(tmp_path / "a.csv") == {"imported": 2, "skipped": 0}
    assert b.import_csv(tmp_path / "a.csv") == {"imported": 0, "skipped": 2}  # twice adds nothing
    latest = b.latest()
    assert set(latest["s1"]) == {"dr_a", "dr_b"}
    assert latest["s1"]["dr_a"]["source"] == "import" and latest["s1"]["dr_b"]["source"] == "live"
    assert latest["s2"]["dr_a"]["comment"] == 'quote " and, comma\nand a new line'
    assert latest["s1"]["dr_a"]["probability"] == 0.7


def test_a_bad_import_row_imports_nothing_and_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study", "reviewer", "verdict", "comment", "probability", "recorded_at"])
        w.writerow(["s1", "dr_a", "agree", "", "0.5", "2026-11-28T10:00:00+00:00"])
        w.writerow(["s2", "dr_a", "agreed", "", "0.5", "2026-11-28T10:01:00+00:00"])
    store = VerdictStore(tmp_path / "v.sqlite")
    with pytest.raises(ConfigError, match="bad.csv line 3: verdict must be"):
        store.import_csv(path)
    assert store.history() == []
    (tmp_path / "cols.csv").write_text("study,verdict\ns1,agree\n")
    with pytest.raises(ConfigError, match="not a verdicts export: no column reviewer, recorded_at"):
        store.import_csv(tmp_path / "cols.csv")


_WRITER = """
import sys
from medtl.report import VerdictStore
store = VerdictStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    n = store.record(f"study{i}", sys.argv[2], "agree", comment="x" * 200)
    print(n, flush=True)
"""


def test_two_reviewers_at_once_lose_nothing(tmp_path):
    db = tmp_path / "v.sqlite"
    VerdictStore(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), name, "150"], stdout=subprocess.PIPE, text=True)
             for name in ("dr_a", "dr_b")]  # fmt: skip
    ids = [set(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    rows = VerdictStore(db).history()
    assert len(rows) == 300 and {r["id"] for r in rows} == ids[0] | ids[1]
    assert {r["reviewer"] for r in rows} == {"dr_a", "dr_b"}


def test_a_server_killed_mid_write_loses_no_recorded_verdict(tmp_path):
    """Every id the writer printed (record() had returned) is in the database after SIGKILL."""
    db = tmp_path / "v.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), "dr_a", "100000"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    seen = []
    deadline = time.time() + 60
    while len(seen) < 200 and time.time() < deadline:
        seen.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read().split()
    proc.wait()
    acknowledged = set(seen) | set(map(int, rest))
    assert len(seen) >= 200
    store = VerdictStore(db)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r["id"] for r in store.history()}
    assert acknowledged <= stored
    store.record("after", "dr_a", "agree")  # still writable


def _forged(path, study, reviewer, verdict, recorded_at, source="review"):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study", "reviewer", "verdict", "comment", "probability", "recorded_at", "source"])
        w.writerow([study, reviewer, verdict, "", "0.5", recorded_at, source])


def test_an_import_cannot_pass_for_a_live_verdict(tmp_path):
    """A file claiming dr_a, source=review and any date is stored as imported from that file
    (name and SHA-256), and never overrules what dr_a recorded live."""
    import hashlib

    store = VerdictStore(tmp_path / "v.sqlite")
    store.record("s1", "dr_a", "agree")
    for stamp in ("2020-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"):  # back-dated and forward-dated
        _forged(tmp_path / "forged.csv", "s1", "dr_a", "disagree", stamp)
        store.import_csv(tmp_path / "forged.csv")
        current = store.latest()["s1"]["dr_a"]
        assert (current["verdict"], current["source"]) == ("agree", "live")
    imported = [r for r in store.history("s1") if r["source"] == "import"]
    assert len(imported) == 2
    digest = hashlib.sha256((tmp_path / "forged.csv").read_bytes()).hexdigest()
    assert imported[-1]["import_sha256"] == digest and imported[-1]["import_file"] == "forged.csv"
    assert all(r["stored_at"] for r in imported)
    # a reviewer known only from files: the latest claimed date is current, still marked imported
    _forged(tmp_path / "b1.csv", "s2", "dr_b", "agree", "2026-01-02T00:00:00+00:00")
    _forged(tmp_path / "b0.csv", "s2", "dr_b", "disagree", "2026-01-01T00:00:00+00:00")
    store.import_csv(tmp_path / "b1.csv"), store.import_csv(tmp_path / "b0.csv")
    assert (store.latest()["s2"]["dr_b"]["verdict"], store.latest()["s2"]["dr_b"]["source"]) == ("agree", "import")
    # the export says where each came from, and importing it elsewhere keeps it imported
    store.export_csv(tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == ["live", "import", "import", "import", "import"]
    other = VerdictStore(tmp_path / "other.sqlite")
    other.import_csv(tmp_path / "out.csv")
    assert {r["source"] for r in other.history()} == {"import"}


def test_names_in_an_import_are_checked_like_live_ones(tmp_path):
    _forged(tmp_path / "f.csv", "s1", "dr_a\tdr_b", "agree", "2026-01-01T00:00:00+00:00")
    store = VerdictStore(tmp_path / "v.sqlite")
    with pytest.raises(ConfigError, match="f.csv line 2: the reviewer's name must be printable text"):
        store.import_csv(tmp_path / "f.csv")
    assert store.history() == []


def test_a_database_from_before_readers_is_brought_up_to_date(tmp_path):
    """A report reviewed with medtl 0.x keeps its verdicts, gains the new columns and readers."""
    old = sqlite3.connect(tmp_path / "v.sqlite", isolation_level=None)
    old.executescript(
        "CREATE TABLE verdicts (id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, reviewer TEXT NOT NULL,"
        " verdict TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', probability REAL, recorded_at TEXT NOT NULL,"
        " source TEXT NOT NULL DEFAULT 'review');"
        "INSERT INTO verdicts (study, reviewer, verdict, recorded_at) VALUES ('s1', 'dr_a', 'agree', '2026-01-01');"
        "INSERT INTO verdicts (study, reviewer, verdict, recorded_at, source) VALUES"
        " ('s1', 'dr_b', 'agree', '2026-01-01', 'import:theirs.csv');"
    )
    old.close()
    store = VerdictStore(tmp_path / "v.sqlite")
    assert [(r["reviewer"], r["source"]) for r in store.history()] == [("dr_a", "live"), ("dr_b", "import")]
    secret = store.add_reader("dr_c")
    store.record("s1", "dr_c", "uncertain")
    assert store.reader(secret) == "dr_c" and len(store.history()) == 3


def test_readers_links_are_secret_and_can_be_replaced_or_ended(tmp_path):
    store = VerdictStore(tmp_path / "v.sqlite")
    first = store.add_reader("Dr. Lee")
    assert store.reader(first) == "Dr. Lee" and first not in (tmp_path / "v.sqlite").read_bytes().decode("latin-1")
    with pytest.raises(ConfigError, match="already a reader"):
        store.add_reader("Dr. Lee")
    second = store.add_reader("Dr. Lee", new_link=True)
    assert store.reader(first) is None and store.reader(second) == "Dr. Lee"
    with pytest.raises(ConfigError, match="must be printable text"):
        store.add_reader("dr\nroot")
    store.remove_reader("Dr. Lee")
    assert store.reader(second) is None
    assert [(r["name"], r["removed_at"] is not None) for r in store.readers()] == [("Dr. Lee", True)]
    with pytest.raises(ConfigError, match="not a current reader"):
        store.remove_reader("Dr. Lee")
