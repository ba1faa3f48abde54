"""A CSV a user gives medtl (a manifest, predictions to audit, verdicts to import) with a broken quote
or a ragged row is an error naming the file, the line and the reason, never a giant bad path."""

from __future__ import annotations

import pytest

from medtl.data import read_manifest
from medtl.errors import ConfigError, EvaluationError
from medtl.evaluate.audit import audit, threshold_from_csv

HEADER = "path,label,patient_id\n"


def _write(tmp_path, text: str, name: str = "m.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "body, line",
    [
        ('p000/a.dcm,0,p000\n"p001/a.dcm,1,p001\np002/b.dcm,0,p002\np003/c.dcm,1,p003\n', 3),  # runs to the end
        ('"p001/a.dcm,1,p001\np002/b.dcm,0,p002\n"p003/c.dcm",1,p003\n', 2),  # a later quote closes it
        ('"p001/a.dcm,1,p001\np002/b.dcm",0,p002\n', 2),  # closed on the next line: a valid-looking row
    ],
)
def test_manifest_with_an_unclosed_quote_names_file_and_line(tmp_path, body, line):
    path = _write(tmp_path, HEADER + body)
    with pytest.raises(ConfigError) as info:
        read_manifest(path)
    assert str(info.value).startswith(f"{path}: line {line}: unclosed quote")


@pytest.mark.parametrize("row, fields", [("p002/b.dcm,0,p002,extra", 4), ("p002/b.dcm,0", 2)])
def test_manifest_with_a_ragged_row_names_its_line(tmp_path, row, fields):
    path = _write(tmp_path, HEADER + "p001/a.dcm,1,p001\n" + row + "\n")
    with pytest.raises(ConfigError, match=rf"m.csv: line 3: {fields} fields, but the header has 3"):
        read_manifest(path)


def test_manifest_with_bom_crlf_quotes_and_blank_lines_still_reads(tmp_path):
    text = HEADER + '"p001/a, b.dcm",1,p001\n\np002/é.dcm,0,p002,\n'  # quoted comma, a blank line, a stray comma
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    m = read_manifest(path)
    assert [r.ref for r in m.records] == ["p001/a, b.dcm", "p002/é.dcm"]
    assert [r.row for r in m.records] == [2, 4]  # lines as an editor shows them
    assert m.patient_column == "patient_id"


def test_manifest_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes((HEADER + "p001/a.dcm,1,p001\np002/Müller.dcm,0,p002\n").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"m.csv: line 3: byte 0xfc is not UTF-8"):
        read_manifest(path)


PREDS = "path,label,score,site\n" + "".join(f"p{i:03d}.png,{i % 2},{0.1 + 0.8 * (i % 2)},A\n" for i in range(8))


@pytest.mark.parametrize("reader", ["audit", "threshold_from_csv"])
def test_predictions_with_an_unclosed_quote_name_file_and_line(tmp_path, reader):
    lines = PREDS.splitlines(keepends=True)
    lines[3] = '"' + lines[3]  # line 4 opens a quote; the one on line 6 closes it
    lines[5] = '"' + lines[5]
    path = _write(tmp_path, "".join(lines), "pred.csv")
    with pytest.raises(EvaluationError) as info:
        if reader == "audit":
            audit(path, "label", "score", "site", n_boot=10)
        else:
            threshold_from_csv(path, "label", "score")
    assert str(info.value).startswith(f"{path}: line 4: unclosed quote")


def test_predictions_with_a_ragged_row_or_a_quote_to_the_end(tmp_path):
    path = _write(tmp_path, PREDS + "p100.png,1,0.7\n", "pred.csv")
    with pytest.raises(EvaluationError, match=r"pred.csv: line 10: 3 fields, but the header has 4"):
        threshold_from_csv(path, "label", "score")
    path = _write(tmp_path, PREDS + '"p100.png,1,0.7,A\n', "pred.csv")
    with pytest.raises(EvaluationError, match=r"pred.csv: line 10: unclosed quote: .* runs to the end of the file"):
        threshold_from_csv(path, "label", "score")


def test_predictions_with_bom_and_blank_lines_read_and_bad_values_name_the_true_line(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_bytes(b"\xef\xbb\xbf" + PREDS.replace("p003.png", "\np003.png").encode())
    threshold, how = threshold_from_csv(path, "label", "score")
    assert "8 validation rows" in how
    path.write_bytes(b"\xef\xbb\xbf" + PREDS.replace("p003.png,1,0.9", "\np003.png,1,high").encode())
    with pytest.raises(EvaluationError, match=r"line 6: score column 'score' holds 'high'"):  # the blank line counts
        threshold_from_csv(path, "label", "score")


def test_verdicts_import_keeps_multiline_comments_and_refuses_an_unclosed_quote(tmp_path):
    from medtl.report.verdicts import VerdictStore

    head = "study,reviewer,verdict,comment,recorded_at\n"
    good = _write(tmp_path, head + 'a1,dr_lee,agree,"two\nlines",2026-01-01T10:00:00\n'
                  "a2,dr_lee,disagree,,2026-01-01T10:01:00\n", "v.csv")  # fmt: skip
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    assert store.import_csv(good) == {"imported": 2, "skipped": 0}
    assert store.latest()["a1"]["dr_lee"]["comment"] == "two\nlines"
    bad = _write(tmp_path, head + '"a3,dr_lee,agree,,2026-01-01T10:00:00\na4,dr_lee,agree,,2026-01-01T10:00:00\n',
                 "bad.csv")  # fmt: skip
    with pytest.raises(ConfigError, match=r"bad.csv: line 2: unclosed quote"):
        store.import_csv(bad)
