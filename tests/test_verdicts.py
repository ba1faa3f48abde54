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
    # the very same post twice (a double click) is stored once
    again = store.record("s2", "dr_a", "agree", recorded_at="2026-11-28T10:00:00+00:00")
    assert store.record("s2", "dr_a", "agree", recorded_at="2026-11-28T10:00:00+00:00") == again
    assert len(store.history("s2")) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"verdict": "maybe"}, "verdict must be agree, disagree, uncertain, not 'maybe'"),
        ({"reviewer": "  "}, "needs the reviewer's name"),
        ({"study": ""}, "needs the study's key"),
        ({"probability": 1.5}, r"probability must be in \[0, 1\], not 1.5"),
        ({"probability": "high"}, "probability must be a number"),
        ({"comment": "x" * 5001}, "longer than 5000 characters"),
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
