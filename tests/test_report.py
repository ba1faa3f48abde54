"""`medtl report` and `medtl review` without a browser: what the pages hold and never hold, the 3D
planes' orientation and position in mm, missing maps, refusals, and the review server's defences
and durability (two reviewers at once, a server killed mid-write). In a browser: test_report_browser.py."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from PIL import Image as PILImage
from report_setup import (
    ACCESSION,
    MARKUP_MANUFACTURER,
    MARKUP_SERIES,
    PATIENT_ID,
    PATIENT_NAME,
    SALIENCY_CHOICE,
    SAMPLE,
    http_request,
    saliency_report,
)

from medtl.cli import main
from medtl.errors import ConfigError, OutputError
from medtl.report import ReviewServer, VerdictStore, build_report, export_verdicts, import_verdicts
from medtl.report.model import model_summary

#: What a case page holds when it shows the image (the panels that draw it as their background).
IMAGE = 'class="layered under case-image"'


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _pages(folder: Path) -> dict[str, str]:
    """Every page's text, pictures left out (base64 may spell anything)."""
    return {str(p.relative_to(folder)): re.sub(r"data:image/png;base64,[^\"]+", "", p.read_text(encoding="utf-8"))
            for p in folder.rglob("*.html")}  # fmt: skip


def _markup_key(predictions: Path) -> str:
    return next(r["key"] for r in _rows(predictions / "predictions.csv") if r["path"] == "markup/IM1.dcm")


# ----------------------------------------------------------------------------- the static report
def test_index_lists_every_prediction_error_and_ood_case(report_inputs, report_folder):
    _, _, predictions, _, _ = report_inputs
    rows, errors = _rows(predictions / "predictions.csv"), _rows(predictions / "errors.csv")
    assert errors and any(r["ood"] == "1" for r in rows)  # the archive holds both kinds
    index = (report_folder / "index.html").read_text()
    for r in rows:
        tr = re.search(rf'<tr data-key="{r["key"]}" data-decision="([^"]*)" data-ood="(\d)"', index)
        assert tr, r["key"]
        assert tr.group(1) == r["decision"] and tr.group(2) == r["ood"]
        assert (report_folder / "cases" / f"{r['key']}.html").is_file()
    for e in errors:
        assert f'<tr data-key="{e["key"]}" data-decision="error"' in index
        assert not (report_folder / "cases" / f"{e['key']}.html").exists()
    record = json.loads((report_folder / "report.json").read_text())
    assert record["counts"]["cases"] == len(rows) and record["counts"]["errors"] == len(errors)
    assert record["counts"]["ood"] == sum(r["ood"] == "1" for r in rows)
    assert [c["key"] for c in record["cases"]] == [r["key"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def test_an_unfamiliar_case_is_not_assessed_and_its_output_shown_only_on_request(report_inputs, report_folder):
    """Issue 26: a photograph given to a radiograph run shows "not assessed" and why, not a decision."""
    _, _, predictions, _, _ = report_inputs
    rows = _rows(predictions / "predictions.csv")
    photo = next(r for r in rows if r["path"] == "holiday.jpg")
    assert (photo["ood"], photo["decision"]) == ("1", "not assessed")
    assert photo["ood_reason"].startswith("colour image; the run was trained on grey images")
    page = (report_folder / "cases" / f"{photo['key']}.html").read_text()
    said = escape(photo["ood_reason"])  # as the page escapes it ("score 178.8 &gt; 61.1")
    assert f"<strong>Not assessed — unlike the training data:</strong> {said}." in page
    assert "Model decision" not in page and 'class="badge decision' not in page
    p1 = f"{float(photo['p_label=1']):.3f}"
    hidden = re.search(r'<details class="prob-box model-output" id="model-output">\s*'
                       r"<summary>show the model's output anyway</summary>(.*?)</details>", page, re.S)  # fmt: skip
    assert hidden and f'<span class="value">{p1}</span>' in hidden.group(1)
    assert page.count(f'<span class="value">{p1}</span>') == 1  # nowhere outside the <details>
    index = (report_folder / "index.html").read_text()
    tr = re.search(rf'<tr data-key="{photo["key"]}".*?</tr>', index, re.S).group(0)
    assert '<span class="badge ood not-assessed">not assessed</span>' in tr and p1 not in tr
    record = json.loads((report_folder / "report.json").read_text())
    assert record["counts"]["not_assessed"] == sum(r["decision"] == "not assessed" for r in rows) >= 1
    # the model section states the flag's measured false alarms and its rules, never a promise
    assert "held-out in-distribution images (test split) as unfamiliar (" in index and "95 % CI" in index
    assert "Flagged by rule whatever the score: a colour image" in index


@pytest.mark.parametrize("assess", [False, True])
def test_older_or_assessed_anyway_predictions_of_unfamiliar_cases(report_inputs, tmp_path, assess):
    """Predictions from before "not assessed" gave a flagged case a decision and no reason: the
    report shows it not assessed, with its distance as the reason. Predictions made with
    --assess-unfamiliar keep the decision, with the flag and reason beside it."""
    run, _, predictions, _, _ = report_inputs
    old = tmp_path / "predictions"
    shutil.copytree(predictions, old)
    rows = _rows(old / "predictions.csv")
    for r in rows:
        reason = r.pop("ood_reason")
        if r["ood"] == "1":
            r["decision"] = "label=1"
            r["ood_reason"] = reason if assess else ""
    with open(old / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, [c for c in rows[0] if c != "ood_reason"] + (["ood_reason"] if assess else []),
                                extrasaction="ignore", lineterminator="\n")  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)
    summary = json.loads((old / "summary.json").read_text())
    summary["settings"].pop("assess_unfamiliar")
    if assess:
        summary["settings"]["assess_unfamiliar"] = True
    (old / "summary.json").write_text(json.dumps(summary))
    record = build_report(run, old, tmp_path / "report", workers=0)
    flagged = [r for r in rows if r["ood"] == "1"]
    page = (tmp_path / "report" / "cases" / f"{flagged[0]['key']}.html").read_text()
    if assess:
        assert "Model decision" in page and 'id="not-assessed"' not in page and "--assess-unfamiliar" in page
        assert str(escape(flagged[0]["ood_reason"][1:])) in page  # the ood box's sentence (capitalised)
        assert record["counts"]["not_assessed"] == 0
    else:
        reason = f"far from the training images (score {float(flagged[0]['ood_score']):.1f})"
        assert f"<strong>Not assessed — unlike the training data:</strong> {reason}." in page
        assert "Model decision" not in page and record["counts"]["not_assessed"] == len(flagged)
    assert [c["decision"] for c in record["cases"] if c["ood"]] == ["label=1" if assess else "not assessed"] * len(
        flagged)


def test_a_case_page_shows_image_overlay_probability_threshold_and_model_facts(report_inputs, report_folder):
    run, _, predictions, _, _ = report_inputs
    row = next(r for r in _rows(predictions / "predictions.csv") if r["ood"] == "0")
    page = (report_folder / "cases" / f"{row['key']}.html").read_text()
    # the image once (both panels' background), and the map as an image over the second panel
    pictures = re.findall(r'url\("data:image/png;base64,([^"]+)"\)', page)
    pictures += re.findall(r'<img class="heat" src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 2 and page.count("data:image/png") == 2
    for data in pictures:
        assert PILImage.open(io.BytesIO(base64.b64decode(data))).size[0] > 0
    threshold = json.loads((run / "threshold.json").read_text())["threshold"]
    assert f"left: {100 * threshold:.1f}%" in page  # the threshold marker on the probability bar
    p1 = float(row["p_label=1"])
    assert f"{p1:.3f}" in page and f"width: {100 * p1:.1f}%" in page
    for text in (
        "Intended use",
        "A test model: flags the sample data",
        "Known limits",
        "Results by patient group",
        "<td>sex = ",
        "gradcam passed the model-randomisation check",
        "Probabilities are NOT calibrated",
    ):
        assert text in page, text
    assert "http://" not in page and "https://" not in page  # nothing to fetch: opens from disk
    assert "default-src 'none'" in page


def test_markup_from_dicom_shows_as_text(report_inputs, report_folder, tmp_path):
    run, _, predictions, evaluation, explanation = report_inputs
    key = _markup_key(predictions)
    page = (report_folder / "cases" / f"{key}.html").read_text()
    assert "&lt;script&gt;window.__medtl_xss = 1&lt;/script&gt;Acme" in page
    assert MARKUP_MANUFACTURER not in page
    out = tmp_path / "with-ids"
    build_report(run, predictions, out, evaluation=evaluation, explanation=explanation, show_identifiers=True,
                 workers=0)  # fmt: skip
    page = (out / "cases" / f"{key}.html").read_text()
    assert "&lt;img src=&#34;x&#34; onerror=&#34;window.__medtl_xss = 2&#34;&gt;Chest PA" in page
    assert MARKUP_SERIES not in page and "<script>window" not in page


def test_no_identifiers_or_absolute_paths_unless_asked(report_inputs, report_folder, tmp_path):
    run, archive, predictions, evaluation, explanation = report_inputs
    hidden = [PATIENT_NAME, "Doe", PATIENT_ID, ACCESSION, str(archive), "markup/IM1.dcm", "cxr/p001/", "Chest PA"]
    for name, html in _pages(report_folder).items():
        for text in hidden:
            assert text not in html, (name, text)
    assert str(archive) not in (report_folder / "report.json").read_text()
    out = tmp_path / "with-ids"
    main(["report", str(run), str(predictions), "-o", str(out), "--show-identifiers", "--workers", "0",
          "--evaluation", str(evaluation), "--explanation", str(explanation)])  # fmt: skip
    page = (out / "cases" / f"{_markup_key(predictions)}.html").read_text()
    for text in (PATIENT_NAME, PATIENT_ID, ACCESSION, "markup/IM1.dcm", str(archive / "markup" / "IM1.dcm")):
        assert text in page, text
    assert "cxr/p001/IM000101" in (out / "index.html").read_text()


def test_a_missing_saliency_file_shows_the_image_alone_with_a_note(report_inputs, tmp_path):
    run, _, predictions, _, _ = report_inputs
    pred = tmp_path / "pred"
    shutil.copytree(predictions, pred)
    row = _rows(pred / "predictions.csv")[0]
    (pred / row["saliency_nifti"]).unlink()
    record = build_report(run, pred, tmp_path / "report", workers=0)
    assert record["counts"]["missing_maps"] == 1
    page = (tmp_path / "report" / "cases" / f"{row['key']}.html").read_text()
    assert IMAGE in page and 'class="heat"' not in page
    assert "the saliency map file is missing from the predictions folder: the image is shown alone" in page
    # without an audit or a sanity check the page says so and how to add them
    assert "No bias audit was given" in page and "no sanity check was given" in page


def test_predictions_without_saliency_show_images_with_a_note(report_inputs, tmp_path):
    from medtl.predict import predict_folder

    run, archive, _, _, _ = report_inputs
    pred = tmp_path / "pred"
    predict_folder(run, archive / "cxr" / "p001", pred, workers=0)
    build_report(run, pred, tmp_path / "report", workers=0)
    key = _rows(pred / "predictions.csv")[0]["key"]
    page = (tmp_path / "report" / "cases" / f"{key}.html").read_text()
    assert IMAGE in page and 'class="heat"' not in page
    assert "the predictions were made without <code>--saliency</code>" in page


def test_redacted_predictions_find_their_images_with_input(report_inputs, tmp_path):
    from medtl.predict import predict_folder

    run, archive, _, _, _ = report_inputs
    pred = tmp_path / "pred"
    predict_folder(run, archive / "cxr" / "p002", pred, workers=0, redact_paths=True)
    assert str(archive) not in (pred / "summary.json").read_text()
    key = _rows(pred / "predictions.csv")[0]["key"]
    record = build_report(run, pred, tmp_path / "blind", workers=0)
    assert any("--redact-paths" in n for n in record["notes"])
    assert IMAGE not in (tmp_path / "blind" / "cases" / f"{key}.html").read_text()
    build_report(run, pred, tmp_path / "found", input_dir=archive / "cxr" / "p002", workers=0)
    assert IMAGE in (tmp_path / "found" / "cases" / f"{key}.html").read_text()


def test_3d_planes_cut_through_the_peak_in_radiological_orientation(tmp_path):
    """A CT series (LPS, as DICOM stores it) with a map peaking near the patient's right and
    anterior: the axial plane is at the peak's height in mm (by the image's own affine), and the
    peak is drawn on the viewer's left (patient's right) and at the top (anterior)."""
    from medtl.data.transforms import PreprocessSpec
    from medtl.explain.run import nifti_bytes
    from medtl.io import load_image
    from medtl.report.cases import render_case

    series = SAMPLE / "ct" / "p101" / "series01"
    img = load_image(series)
    assert np.sign(img.affine[0, 0]) < 0 and np.sign(img.affine[1, 1]) < 0  # i runs to the left, j to the back
    peak = (10, 14, 9)  # small i: the patient's right; small j: anterior
    smap = np.zeros(img.spatial_shape, np.float32)
    smap[peak] = 1.0
    smap[peak[0] + 1, peak[1], peak[2]] = 0.5
    (tmp_path / "map.nii.gz").write_bytes(nifti_bytes(smap, img.affine))
    spec = PreprocessSpec(preset="ct", windows=("lung",), size=(16, 32, 32))
    drawn = render_case({"full": str(series), "rel": "series01", "series": None, "spec": spec, "dims": 3,
                         "nifti": str(tmp_path / "map.nii.gz"), "identifiers": False})  # fmt: skip
    fig = drawn["figures"]
    assert fig["kind"] == "3d" and fig["through"] == "the map's peak"
    axial = next(p for p in fig["planes"] if p["name"] == "axial")
    assert axial["position"] == f"S {img.world(peak)[2]:.1f} mm"
    assert axial["edges"] == ("A", "P", "R", "L")
    nx, ny, _ = img.spatial_shape
    spacing = np.abs(np.diag(img.affine)[:3])
    assert axial["width_mm"] == pytest.approx(nx * spacing[0]) and axial["height_mm"] == pytest.approx(ny * spacing[1])
    alpha = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(axial["heat"]["src"].split(",")[1]))))[..., 3]
    row, col = np.unravel_index(int(np.argmax(alpha)), alpha.shape)
    assert col < alpha.shape[1] / 2 and row < alpha.shape[0] / 2
    assert sum(s["peak"] for s in fig["strip"]) == 1


def test_report_refusals(report_inputs, report_folder, tmp_path):
    run, archive, predictions, evaluation, _ = report_inputs
    other = tmp_path / "other-run"
    shutil.copytree(run, other)
    weights = other / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")  # other weights
    with pytest.raises(ConfigError, match="was predicted by another run"):
        build_report(other, predictions, tmp_path / "r1")
    with pytest.raises(ConfigError, match="is not a `medtl predict` output"):
        build_report(run, archive, tmp_path / "r2")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(predictions, unfinished)
    marker = json.loads((unfinished / "medtl.json").read_text())
    (unfinished / "medtl.json").write_text(json.dumps(dict(marker, complete=False)))
    with pytest.raises(ConfigError, match="unfinished"):
        build_report(run, unfinished, tmp_path / "r3")
    with pytest.raises(OutputError, match="holds the input"):
        build_report(run, predictions, predictions.parent, overwrite=True)
    with pytest.raises(ConfigError, match="audits other weights"):
        model_summary(other, evaluation=evaluation)
    with pytest.raises(OutputError, match="already holds a finished `medtl report` output"):
        build_report(run, predictions, report_folder)
    assert main(["report", str(run), str(archive), "-o", str(tmp_path / "r5")]) == 1
    with pytest.raises(ConfigError, match="--workers must be 0 or more, not -1"):
        build_report(run, predictions, tmp_path / "r6", workers=-1)
    with pytest.raises(ConfigError, match="--port must be 0 to 65535"):
        ReviewServer(report_folder, port=70000)


# ----------------------------------------------------------------------------- the review server
_request = http_request


@pytest.fixture
def served(report_folder, tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(report_folder, folder)
    server = ReviewServer(folder, reviewer="dr_test", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_review_records_verdicts_and_refuses_cross_site_posts(served):
    key = next(iter(served.cases))
    url = f"{served.url}cases/{key}/verdict"
    status, page, _ = _request(f"{served.url}cases/{key}.html")
    assert status == 200 and 'id="verdict-form"' in page
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    good = {"token": token, "verdict": "disagree", "comment": "<b>rib</b> fracture", "reviewer": "dr_b"}
    for form, headers, code in (
        (dict(good, token="forged"), {}, 403),                                       # no form token
        (good, {"Origin": "http://evil.example"}, 403),                              # a post from another site
        (good, {"Sec-Fetch-Site": "cross-site"}, 403),
        (good, {"Host": "evil.example:80"}, 421),                                     # DNS rebinding
        (dict(good, verdict="maybe"), {}, 400),                                      # not a verdict
    ):  # fmt: skip
        assert _request(url, form, headers)[0] == code, (form, headers)
    assert _request(f"{served.url}cases/nonexistent/verdict", good)[0] == 404
    assert _request(f"{served.url}../report.json")[0] == 404
    with VerdictStore(served.folder / "verdicts.sqlite") as store:
        assert store.history() == []
    status, _, headers = _request(url, good, {"Origin": served.url.rstrip("/")})
    assert status == 303 and headers["Location"].startswith(f"/cases/{key}.html?saved=")
    with VerdictStore(served.folder / "verdicts.sqlite") as store:
        (row,) = store.history()
    # the name is the server's, whatever the form says (reviewer=dr_b)
    assert (row["study"], row["reviewer"], row["verdict"], row["comment"]) == (key, "dr_test", "disagree",
                                                                               "<b>rib</b> fracture")  # fmt: skip
    assert row["probability"] == pytest.approx(served.cases[key]["probability"])
    page = _request(f"{served.url}{headers['Location'].lstrip('/')}")[1]
    assert "Recorded: disagree by dr_test." in page and "&lt;b&gt;rib&lt;/b&gt; fracture" in page
    assert _request(f"{served.url}cases/{key}.html?saved=<script>")[1].count("Recorded:") == 0
    # "record and open the next case": the next page confirms the verdict on this one
    second = list(served.cases)[1]
    status, _, headers = _request(url, dict(good, verdict="agree", then="next"))
    assert status == 303 and headers["Location"].startswith(f"/cases/{second}.html?saved=")
    page = _request(f"{served.url}{headers['Location'].lstrip('/')}")[1]
    assert f"Recorded: agree by dr_test on case {served.cases[key]['index']}." in page
    index = _request(served.url)[1]
    statuses = json.loads(re.search(r'id="medtl-verdicts">(.*?)</script>', index).group(1))
    assert statuses == {key: {"status": "agree", "text": "agree (dr_test)"}}  # the newest verdict
    export = _request(f"{served.url}export.csv")[1]
    assert [r["verdict"] for r in csv.DictReader(io.StringIO(export))] == ["disagree", "agree"]
    assert list(csv.DictReader(io.StringIO(export)))[0]["comment"] == "<b>rib</b> fracture"


def _post_many(base: str, key: str, token: str, reviewer: str, n: int, confirmed: list) -> None:
    for i in range(n):
        try:
            status, _, _ = _request(f"{base}cases/{key}/verdict", {"token": token, "verdict": "agree",
                                    "comment": f"{reviewer} {i}", "reviewer": reviewer})  # fmt: skip
        except OSError:
            return  # the server is gone
        if status == 303:
            confirmed.append(f"{reviewer} {i}")


def test_two_reviewers_and_a_killed_server_lose_no_verdict(report_folder, tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(report_folder, folder)
    proc = subprocess.Popen([sys.executable, "-m", "medtl", "review", str(folder), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        base = re.search(r"(http://127\.0\.0\.1:\d+/)", line).group(1)
        key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
        token = re.search(r'name="token" value="([^"]+)"', _request(f"{base}cases/{key}.html")[1]).group(1)
        confirmed: list[str] = []
        threads = [threading.Thread(target=_post_many, args=(base, key, token, who, 400, confirmed))
                   for who in ("dr_a", "dr_b")]  # fmt: skip
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # a server that never confirms fails the test, never hangs it
        while len(confirmed) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-stream: posts in flight on both threads
        for t in threads:
            t.join(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    with VerdictStore(folder / "verdicts.sqlite") as store:
        stored = {r["comment"] for r in store.history()}
    assert len(confirmed) >= 20 and set(confirmed) <= stored
    assert {c.split()[0] for c in stored} == {"dr_a", "dr_b"}


def test_verdicts_move_between_reports_and_survive_a_rebuild(report_inputs, report_folder, tmp_path):
    run, _, predictions, _, _ = report_inputs
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    shutil.copytree(report_folder, mine)
    shutil.copytree(report_folder, theirs)
    key = json.loads((mine / "report.json").read_text())["cases"][0]["key"]
    with VerdictStore(theirs / "verdicts.sqlite") as store:
        store.record(key, "dr_other", "uncertain", comment="needs a lateral", probability=0.5)
    assert main(["review", "export", str(theirs), "-o", str(tmp_path / "v.csv")]) == 0
    assert main(["review", "import", str(tmp_path / "v.csv"), str(mine)]) == 0
    assert import_verdicts(tmp_path / "v.csv", mine) == {"imported": 0, "skipped": 1}  # twice adds nothing
    bad = tmp_path / "bad.csv"
    bad.write_text((tmp_path / "v.csv").read_text().replace(key, "0000000000000000"))
    with pytest.raises(ConfigError, match="line 2: case 0000000000000000 is not in this report"):
        import_verdicts(bad, mine)
    with pytest.raises(ConfigError, match="is a run directory"):
        import_verdicts(tmp_path / "v.csv", run)
    # a rebuild in place keeps the verdicts and shows them; no other command may replace the folder
    build_report(run, predictions, mine, overwrite=True, workers=0)
    assert export_verdicts(mine, tmp_path / "after.csv") == 1
    assert "uncertain (dr_other, imported)" in (mine / "index.html").read_text()
    assert "needs a lateral" in (mine / "cases" / f"{key}.html").read_text()
    with pytest.raises(OutputError, match="reviewers' verdicts"):
        from medtl.predict import predict_folder

        predict_folder(run, SAMPLE / "cxr" / "p001", mine, overwrite=True, workers=0)
    assert (mine / "verdicts.sqlite").is_file()


def test_a_3d_run_reports_planes_and_a_slice_strip(ct_report_folder):
    record = json.loads((ct_report_folder / "report.json").read_text())
    assert record["counts"]["cases"] == 10 and record["counts"]["maps"] == 10  # sample_data/ct: ten series
    with_map = 0
    for case in record["cases"]:
        page = (ct_report_folder / case["page"]).read_text()
        assert all(f'alt="{name} plane"' in page for name in ("axial", "coronal", "sagittal"))
        assert page.count('alt="axial slice at S ') == 10
        if "Planes through the map&#39;s peak" in page:  # a map with a peak: drawn over every plane
            assert all(f'alt="saliency over {name} plane"' in page for name in ("axial", "coronal", "sagittal"))
            assert page.count("· peak</figcaption>") == 1
            with_map += 1
        else:  # Grad-CAM of a class no pixel raised: said, and the planes cut the centre
            assert "The saliency map is empty" in page and "saliency over" not in page.replace("saliency overlay", "")
    assert with_map > 0


def test_an_image_broken_since_prediction_gets_its_page_with_the_reason(report_inputs, tmp_path):
    run, archive, predictions, _, _ = report_inputs
    moved = tmp_path / "archive"
    shutil.copytree(archive, moved)
    row = next(r for r in _rows(predictions / "predictions.csv") if r["path"].startswith("cxr/"))
    (moved / row["path"]).write_bytes((moved / row["path"]).read_bytes()[:300])  # truncated since
    record = build_report(run, predictions, tmp_path / "report", input_dir=moved, workers=2)
    assert record["counts"]["cases"] == len(_rows(predictions / "predictions.csv"))
    page = (tmp_path / "report" / "cases" / f"{row['key']}.html").read_text()
    assert "the file can no longer be read (corrupt or truncated DICOM" in page and IMAGE not in page
    assert str(moved) not in page
    others = [r for r in _rows(predictions / "predictions.csv") if r["key"] != row["key"]]
    assert all(IMAGE in (tmp_path / "report" / "cases" / f"{r['key']}.html").read_text() for r in others)


# ----------------------------------------------------------------------------- maps: grid, scale, shortcuts
#: The columns and settings newer predictions add to their saliency output.
NEW_COLUMNS = ("saliency_target", "saliency_peak", "anatomy_inside", "anatomy_area", "shortcut")
SHORTCUT = "Most of this map lies outside the body/mask (20 % inside, the anatomy covers 60 % of the image)"
SHARED = "Colours share one scale across this report: full colour is the 95th percentile of the cases&#39; map peaks"


@pytest.fixture(scope="module")
def saliency(report_inputs, tmp_path_factory) -> dict:
    """The report of newer predictions (network-grid maps, peaks, anatomy shares): report_setup.py."""
    return saliency_report(report_inputs, tmp_path_factory.mktemp("saliency"))


def _heat_alpha(page: str) -> np.ndarray:
    data = re.search(r'<img class="heat" src="data:image/png;base64,([^"]+)"', page).group(1)
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(data))))[..., 3]


def test_a_network_grid_map_is_resampled_onto_the_image_through_world_mm(saliency):
    from medtl.explain.explainer import load_item
    from medtl.report.cases import map_on_image

    folder, key = saliency["folder"], saliency["bright"]
    row = next(r for r in _rows(saliency["predictions"] / "predictions.csv") if r["key"] == key)
    img = load_item(str(SAMPLE / "cxr" / row["path"].removeprefix("cxr/")), None)
    import nibabel as nib

    nii = nib.load(saliency["predictions"] / row["saliency_nifti"])
    assert nii.shape != img.spatial_shape  # stored on the network's grid, not the image's
    on_image, why = map_on_image(np.asarray(nii.get_fdata()), nii.affine, img.spatial_shape, img.affine)
    assert why is None and on_image.shape == img.spatial_shape
    peak = np.unravel_index(int(np.argmax(on_image)), on_image.shape)
    assert np.allclose(img.world(peak)[:2], saliency["world"][key][:2], atol=np.max(img.spacing))
    # the page's picture: display rows × columns (the image's j, i), peaking at the same place
    alpha = _heat_alpha((folder / "cases" / f"{key}.html").read_text())
    want = img.index(saliency["world"][key])
    row_px, col_px = np.unravel_index(int(np.argmax(alpha)), alpha.shape)
    scale = alpha.shape[1] / img.spatial_shape[0]
    assert abs(col_px - want[0] * scale) <= 2 * scale and abs(row_px - want[1] * scale) <= 2 * scale
    assert not any("does not fit the image" in n for n in saliency["record"]["notes"])
    assert saliency["record"]["counts"]["missing_maps"] == 0


def test_every_case_shares_one_colour_scale(saliency):
    folder, record = saliency["folder"], saliency["record"]
    assert record["saliency_scale"] == pytest.approx(1.0)  # the 95th percentile of the peaks (1.0 but one 0.1)
    bright = _heat_alpha((folder / "cases" / f"{saliency['bright']}.html").read_text())
    pale = _heat_alpha((folder / "cases" / f"{saliency['pale']}.html").read_text())
    assert bright.max() > 140  # full colour: the most opaque a map gets
    assert 0 < pale.max() < 0.2 * bright.max()  # a tenth of the evidence: a tenth of the colour
    for page in (folder / "index.html", folder / "cases" / f"{saliency['pale']}.html"):
        assert SHARED in page.read_text(), page
    assert not any("coloured relative to its own maximum" in n for n in record["notes"])


def test_the_shortcut_mark_is_on_the_marked_case_only_and_counted(saliency):
    folder, record, marked = saliency["folder"], saliency["record"], saliency["marked"]
    pages = _pages(folder)
    with_mark = [name for name, html in pages.items() if 'id="shortcut-mark"' in html]
    assert with_mark == [f"cases/{marked}.html"]
    page = pages[f"cases/{marked}.html"]
    assert SHORTCUT + ": the model may be using a shortcut (text markers, borders, devices), not the patient." in page
    assert page.index('id="shortcut-mark"') < page.index('<img class="heat"')
    assert "Evidence inside the anatomy: <strong>20 %</strong> (anatomy covers 60 %)" in page
    other = pages[f"cases/{saliency['bright']}.html"]
    assert "Evidence inside the anatomy: <strong>90 %</strong> (anatomy covers 60 %)" in other
    assert record["counts"]["shortcut"] == 1
    assert [c["key"] for c in record["cases"] if c["shortcut"]] == [marked]
    index = pages["index.html"]
    assert '<div class="shortcut-count" id="shortcut-count"><strong>1</strong> map mostly outside the anatomy' in index
    assert re.search(rf'<tr data-key="{marked}"[^>]*data-shortcut="1"', index)
    assert index.count('data-shortcut="1"') == 1
    assert "Saliency: gradcam — chosen by the run&#39;s saliency check: it passed the randomization check" in index


def test_the_target_is_named_above_every_map(saliency):
    folder = saliency["folder"]
    for key in (saliency["bright"], saliency["pale"], saliency["marked"]):
        page = (folder / "cases" / f"{key}.html").read_text()
        target = page.index("Map of the evidence for: <strong>label=1</strong> · method gradcam")
        assert target < page.index('<img class="heat"')
        assert "do not record which output" not in page


def test_the_model_summary_shows_the_saliency_check_localization_and_shortcut_figures(saliency, report_inputs,
                                                                                      tmp_path):  # fmt: skip
    _, _, _, _, explanation0 = report_inputs
    explanation = tmp_path / "explain"
    shutil.copytree(explanation0, explanation)
    data = json.loads((explanation / "explain.json").read_text())
    score = {"value": 0.75, "ci": [0.5, 0.9], "n": 8, "n_patients": 4}
    data["localization"] = {"gradcam": {"pointing_game": score, "iou": dict(score, value=0.31, ci=[0.2, 0.4]),
                                        "energy_pointing": dict(score, value=0.6, ci=[0.45, 0.7]), "threshold": 0.5}}  # fmt: skip
    (explanation / "explain.json").write_text(json.dumps(data))
    out = tmp_path / "report"
    build_report(saliency["run"], saliency["predictions"], out, explanation=explanation, workers=0)
    model = (out / "index.html").read_text()
    model = model[model.index('id="model"') :]
    for text in (
        "The run's saliency check chose <strong>gradcam</strong>: " + SALIENCY_CHOICE["why"],
        "(40 validation images; eligible: passes randomization",
        "<td>ig@blur</td>", "failed the randomization check", "0.81 <span class=\"warn\">failed</span>",
        "Run-level: median share of evidence inside the anatomy 83 % [78–88 %], cases marked 10 % [5–20 %] "
        "(40 validation images).",
        "pointing game 0.75 <span class=\"ci\">(0.50–0.90)</span>", "energy pointing game 0.60",
        "IoU 0.31", "(8 images)",
    ):  # fmt: skip
        assert text in model, text
    assert re.search(r"In this report: median share of evidence inside the anatomy 90 % over \d+ map\(s\); 1 of \d+ "
                     r"map\(s\) marked as mostly outside the anatomy", model)  # fmt: skip


def test_older_predictions_without_the_new_columns_build_with_notes(saliency, tmp_path):
    """Predictions of an older medtl: maps on the image's grid, no target, peak or anatomy share,
    no saliency choice; the run without saliency.json."""
    from medtl.explain.explainer import load_item
    from medtl.explain.run import nifti_bytes

    run, pred = tmp_path / "run", tmp_path / "pred"
    shutil.copytree(saliency["run"], run)
    (run / "saliency.json").unlink()
    shutil.copytree(saliency["predictions"], pred)
    summary = json.loads((pred / "summary.json").read_text())
    for name in ("saliency_choice", "anatomy_rule"):
        summary["settings"].pop(name)
    (pred / "summary.json").write_text(json.dumps(summary))
    rows = _rows(pred / "predictions.csv")
    columns = [c for c in rows[0] if c not in NEW_COLUMNS]
    row = next(r for r in rows if r["key"] == saliency["bright"])
    img = load_item(str(SAMPLE / "cxr" / row["path"].removeprefix("cxr/")), None)
    on_image = np.zeros(img.spatial_shape, np.float32)
    on_image[30:40, 70:80] = 2.0  # an image-grid map, as older predictions wrote them
    (pred / row["saliency_nifti"]).write_bytes(nifti_bytes(on_image, img.affine))
    with open(pred / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    record = build_report(run, pred, tmp_path / "report", workers=0)
    assert record["counts"]["maps"] == record["counts"]["cases"] and record["counts"]["shortcut"] == 0
    assert record["saliency_scale"] is None
    notes = " ".join(record["notes"])
    assert "each map is coloured relative to its own maximum" in notes and "record no anatomy share" in notes
    page = (tmp_path / "report" / "cases" / f"{row['key']}.html").read_text()
    alpha = _heat_alpha(page)
    assert alpha.max() > 140  # its own maximum is full colour
    rows_px, cols_px = np.nonzero(alpha > 100)
    scale = alpha.shape[1] / img.spatial_shape[0]
    assert 30 * scale - 2 <= cols_px.min() and cols_px.max() <= 40 * scale + 2  # drawn where it was, unresampled
    assert 70 * scale - 2 <= rows_px.min() and rows_px.max() <= 80 * scale + 2
    assert "Map of the evidence for: <strong>" in page and "do not record which output the map explains" in page
    assert 'id="shortcut-mark"' not in page and "Evidence inside the anatomy:" not in page
    assert "relative to this case's maximum" in page and SHARED not in page
    index = (tmp_path / "report" / "index.html").read_text()
    assert "Saliency: gradcam</strong>" in index and 'id="shortcut-count"' not in index
    assert "This run records no saliency check" in index and "These predictions record no share" in index
