"""The report and the review server in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) through Selenium. The static pages open from disk with their pictures drawn,
the table filters and sorts, and a verdict recorded on a served page survives a reload and comes
back in the export. Skips, saying why, where no browser can be started.

The screenshots in docs/review.md are taken here: ``MEDTL_SCREENSHOTS=docs/images pytest
tests/test_report_browser.py`` writes them."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest

from medtl.report import ReviewServer

CHROMIUM = [p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "") if p]
DRIVER = [p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p]


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    binary = next((p for p in CHROMIUM if os.path.isfile(p)), None)
    driver_path = next((p for p in DRIVER if os.path.isfile(p)), None)
    if binary is None or driver_path is None:
        pytest.skip("no Chromium here: install the Debian packages chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # installed but failing to start is an error, not a skip: a broken browser must not pass as absent
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(driver, name: str, top: int | None = None) -> None:
    """A full-page screenshot for docs/review.md when MEDTL_SCREENSHOTS names a folder (its first
    ``top`` pixels of 1000 only, when given)."""
    folder = os.environ.get("MEDTL_SCREENSHOTS")
    if not folder:
        return
    from PIL import Image

    Path(folder).mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 3200))
    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.set_window_size(1400, 1000)
    # small enough for a docs page: 1000 px wide, 256 colours
    picture = picture.resize((1000, round(picture.height * 1000 / picture.width)), Image.LANCZOS)
    if top is not None:
        picture = picture.crop((0, 0, 1000, min(top, picture.height)))
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(Path(folder) / name, optimize=True)


def _case_with_a_map(folder: Path) -> str:
    """A positive case whose map is not empty: what a reviewer most often checks (and the docs show)."""
    cases = json.loads((folder / "report.json").read_text())["cases"]
    return next(c["key"] for c in cases if c["decision"] == "label=1" and not c["ood"]
                and "The saliency map is empty" not in (folder / c["page"]).read_text())  # fmt: skip


def _visible_keys(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#cases tbody tr')).filter(r => !r.hidden).map(r => r.dataset.key)"
    )


def _errors(driver) -> list[str]:
    # the page's own errors (a blocked script, a broken picture); a favicon is never fetched
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_static_report_opens_from_disk_filters_sorts_and_draws(browser, report_folder):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((report_folder / "index.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    ood = [r.get_attribute("data-key") for r in rows if r.get_attribute("data-ood") == "1"]
    errors = [r.get_attribute("data-key") for r in rows if r.get_attribute("data-decision") == "error"]
    assert ood and errors and len(rows) > len(ood) + len(errors)
    assert browser.find_element(By.ID, "shown-count").text == f"showing {len(rows)} of {len(rows)}"
    _shot(browser, "report-index.png")

    Select(browser.find_element(By.ID, "filter-ood")).select_by_value("1")
    assert sorted(_visible_keys(browser)) == sorted(ood)
    Select(browser.find_element(By.ID, "filter-ood")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-decision")).select_by_value("error")
    assert sorted(_visible_keys(browser)) == sorted(errors)
    Select(browser.find_element(By.ID, "filter-decision")).select_by_value("")
    box = browser.find_element(By.ID, "filter-text")
    box.send_keys(ood[0])
    assert _visible_keys(browser) == [ood[0]]
    box.clear()
    box.send_keys(" ")  # an input event with an empty search shows every row again
    assert len(_visible_keys(browser)) == len(rows)

    header = browser.find_elements(By.CSS_SELECTOR, "#cases thead th")
    probability = next(h for h in header if h.text.startswith("P(label=1)"))
    probability.click()  # ascending
    values = browser.execute_script(
        "return Array.from(document.querySelectorAll('#cases tbody tr')).map(r => parseFloat(r.cells[4].dataset.sort))"
    )
    assert values == sorted(values)
    probability.click()  # descending
    values = browser.execute_script(
        "return Array.from(document.querySelectorAll('#cases tbody tr')).map(r => parseFloat(r.cells[4].dataset.sort))"
    )
    assert values == sorted(values, reverse=True) and probability.get_attribute("aria-sort") == "descending"

    key = _case_with_a_map(report_folder)
    browser.find_element(By.CSS_SELECTOR, f"#cases tbody tr[data-key='{key}'] a").click()
    images = browser.find_elements(By.CSS_SELECTOR, "figure.layered img")
    assert len(images) == 1  # the map; the image is both panels' background (in the page once)
    for panel in browser.find_elements(By.CSS_SELECTOR, "figure.case-image"):
        background = browser.execute_script("return getComputedStyle(arguments[0]).backgroundImage", panel)
        assert background.startswith('url("data:image/png;base64,')
        assert panel.size["width"] > 100 and panel.size["height"] > 100
    assert browser.execute_script(
        "const i = new Image(); i.src = getComputedStyle(arguments[0]).backgroundImage.slice(5, -2);"
        "return i.decode().then(() => i.naturalWidth)", panel) > 0  # fmt: skip
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images]
    assert all(w and w > 0 for w in widths), widths
    _shot(browser, "report-case.png")
    slider = browser.find_element(By.CSS_SELECTOR, "input.opacity")
    browser.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider)
    heat = browser.find_element(By.CSS_SELECTOR, "img.heat")
    assert float(browser.execute_script("return getComputedStyle(arguments[0]).opacity", heat)) == pytest.approx(0.3)
    assert _errors(browser) == []


def test_markup_in_a_dicom_header_is_shown_not_run(browser, report_inputs, report_folder):
    from report_setup import MARKUP_MANUFACTURER
    from selenium.webdriver.common.by import By
    from test_report import _markup_key

    key = _markup_key(report_inputs[2])
    browser.get((report_folder / "cases" / f"{key}.html").as_uri())
    facts = browser.find_element(By.CSS_SELECTOR, "section.facts").text
    assert MARKUP_MANUFACTURER in facts  # the text itself, as text
    assert browser.execute_script("return window.__medtl_xss") is None


def test_an_unfamiliar_case_shows_not_assessed_and_its_output_only_when_asked(browser, report_inputs, report_folder):
    from selenium.webdriver.common.by import By
    from test_report import _rows

    photo = next(r for r in _rows(report_inputs[2] / "predictions.csv") if r["path"] == "holiday.jpg")
    browser.get((report_folder / "cases" / f"{photo['key']}.html").as_uri())
    box = browser.find_element(By.ID, "not-assessed")
    assert box.is_displayed()
    assert f"Not assessed — unlike the training data: {photo['ood_reason']}." in box.text
    assert browser.find_elements(By.CSS_SELECTOR, ".badge.decision") == []
    rows = browser.find_elements(By.CSS_SELECTOR, "#model-output .prob-row")
    assert rows and not any(r.is_displayed() for r in rows)  # the output only on request
    browser.find_element(By.CSS_SELECTOR, "#model-output > summary").click()
    assert all(r.is_displayed() for r in rows)
    assert f"{float(photo['p_label=1']):.3f}" in browser.find_element(By.ID, "model-output").text
    assert _errors(browser) == []


def test_review_a_case_reload_see_it_and_export_it(browser, report_folder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    folder = tmp_path / "report"
    shutil.copytree(report_folder, folder)
    server = ReviewServer(folder, reviewer="dr_browser", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key = _case_with_a_map(folder)
        browser.get(f"{server.url}cases/{key}.html")
        browser.find_element(By.CSS_SELECTOR, "input[name=verdict][value=disagree]").click()
        browser.find_element(By.NAME, "comment").send_keys("rib fracture, not consolidation")
        browser.find_element(By.CSS_SELECTOR, "#verdict-form button[type=submit]").click()
        WebDriverWait(browser, 20).until(lambda d: "saved=" in d.current_url and d.find_elements(By.ID, "saved"))
        assert browser.find_element(By.ID, "saved").text == "Recorded: disagree by dr_browser."
        browser.refresh()  # a reload shows the verdict and posts nothing again
        cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table.history tbody td")]
        assert cells[1:4] == ["dr_browser", "disagree", "rib fracture, not consolidation"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")) == 1
        assert browser.find_element(By.CSS_SELECTOR, "input[name=verdict][value=disagree]").is_selected()
        _shot(browser, "review-case.png")

        # the keyboard: u chooses "uncertain", n records it and opens the next case
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(browser).send_keys("u").perform()
        assert browser.find_element(By.CSS_SELECTOR, "input[name=verdict][value=uncertain]").is_selected()
        ActionChains(browser).send_keys("n").perform()
        WebDriverWait(browser, 20).until(lambda d: "saved=" in d.current_url and key not in d.current_url)
        assert browser.find_element(By.ID, "saved").text.startswith("Recorded: uncertain by dr_browser on case ")
        browser.get(f"{server.url}cases/{key}.html")  # the newest verdict is the one the index shows
        browser.find_element(By.CSS_SELECTOR, "input[name=verdict][value=disagree]").click()
        browser.find_element(By.CSS_SELECTOR, "#verdict-form button[type=submit]").click()
        WebDriverWait(browser, 20).until(lambda d: "saved=" in d.current_url and d.find_elements(By.ID, "saved"))

        browser.get(server.url)
        cell = browser.find_element(By.CSS_SELECTOR, f"tr[data-key='{key}'] .review-cell")
        assert cell.text == "disagree (dr_browser)"
        Select(browser.find_element(By.ID, "filter-review")).select_by_value("disagree")
        assert _visible_keys(browser) == [key]
        assert browser.find_element(By.ID, "reviewed-count").text == "1"
        browser.get(f"{server.url}cases/{key}.html")
        href = browser.find_element(By.ID, "export").get_attribute("href")
        with urllib.request.urlopen(href, timeout=10) as resp:
            rows = list(csv.DictReader(io.StringIO(resp.read().decode())))
        assert [(r["study"], r["reviewer"], r["verdict"], r["comment"]) for r in rows] == [
            (key, "dr_browser", "disagree", "rib fracture, not consolidation"),
            (key, "dr_browser", "uncertain", ""), (key, "dr_browser", "disagree", "")]  # fmt: skip
        assert _errors(browser) == []
    finally:
        server.shutdown()


def test_two_readers_record_from_their_own_links(browser, report_folder, tmp_path):
    """A lead adds two readers; each opens their own link in the browser and records a verdict;
    each verdict is attributed to the reader whose link posted it, and neither sees the other's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from medtl.report import VerdictStore, add_reader

    folder = tmp_path / "report"
    shutil.copytree(report_folder, folder)
    server = ReviewServer(folder, port=0)
    links = {name: add_reader(folder, name, base_url=server.url) for name in ("Dr. Ada Lee", "dr_ben")}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key = _case_with_a_map(folder)
        browser.get(server.url)  # without a link: no pages, and a plain reason
        assert "open your personal link" in browser.find_element(By.TAG_NAME, "body").text
        assert all("401 (Unauthorized)" in e for e in _errors(browser))  # that refusal, and nothing else
        for name, verdict, comment in (("Dr. Ada Lee", "agree", "clear"), ("dr_ben", "disagree", "=1+1 artefact")):
            browser.get(links[name])
            browser.find_element(By.CSS_SELECTOR, f"tr[data-key='{key}'] a").click()
            assert browser.find_element(By.ID, "reader").text == f"Recording as {name} (your personal link)."
            browser.find_element(By.CSS_SELECTOR, f"input[name=verdict][value={verdict}]").click()
            browser.find_element(By.NAME, "comment").send_keys(comment)
            browser.find_element(By.CSS_SELECTOR, "#verdict-form button[type=submit]").click()
            WebDriverWait(browser, 20).until(lambda d: "saved=" in d.current_url and d.find_elements(By.ID, "saved"))
            assert browser.find_element(By.ID, "saved").text == f"Recorded: {verdict} by {name}."
            history = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table.history tbody td")]
            assert history[1:4] == [name, verdict, comment] and len(history) == 6  # only this reader's
            if name == "dr_ben":
                _shot(browser, "review-reader.png", top=1000)
        assert _errors(browser) == []
    finally:
        server.shutdown()
    with VerdictStore(folder / "verdicts.sqlite") as store:
        assert [(r["reviewer"], r["verdict"], r["comment"], r["source"]) for r in store.history()] == [
            ("Dr. Ada Lee", "agree", "clear", "live"), ("dr_ben", "disagree", "=1+1 artefact", "live")]  # fmt: skip


def test_a_3d_case_draws_its_planes_and_strip(browser, ct_report_folder):
    from selenium.webdriver.common.by import By

    cases = json.loads((ct_report_folder / "report.json").read_text())["cases"]
    page = next(c["page"] for c in cases if "map&#39;s peak" in (ct_report_folder / c["page"]).read_text())
    browser.get((ct_report_folder / page).as_uri())
    images = browser.find_elements(By.CSS_SELECTOR, "main img")
    assert len(images) == 3 * 2 + 10  # three planes under their maps, ten slices
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images]
    assert all(w and w > 0 for w in widths), widths
    edges = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".planes figure .edge")]
    assert edges == ["A", "P", "R", "L", "S", "I", "R", "L", "S", "I", "A", "P"]
    assert _errors(browser) == []
    _shot(browser, "report-case-3d.png")


def test_the_demo_report_opens_in_a_browser(browser, demo_run):
    from selenium.webdriver.common.by import By

    _, result, out = demo_run
    browser.get((out / "report" / "index.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    assert len(rows) == result["predict"]["predicted"] + result["predict"]["failed"]
    assert sum(r.get_attribute("data-ood") == "1" for r in rows) == result["predict"]["flagged"]
    key = _case_with_a_map(out / "report")
    browser.find_element(By.CSS_SELECTOR, f"#cases tbody tr[data-key='{key}'] a").click()
    panel = browser.find_element(By.CSS_SELECTOR, "figure.case-image")
    assert browser.execute_script(
        "const i = new Image(); i.src = getComputedStyle(arguments[0]).backgroundImage.slice(5, -2);"
        "return i.decode().then(() => i.naturalWidth)", panel) > 0  # fmt: skip
    assert not _errors(browser)


def test_a_shortcut_is_marked_visibly_on_its_case_and_in_the_model_summary(browser, report_inputs, tmp_path_factory):
    from report_setup import saliency_report
    from selenium.webdriver.common.by import By

    made = saliency_report(report_inputs, tmp_path_factory.mktemp("saliency-browser"))
    browser.get((made["folder"] / "index.html").as_uri())
    count = browser.find_element(By.ID, "shortcut-count")
    assert count.is_displayed() and count.text.startswith("1 map mostly outside the anatomy")
    marked = browser.find_element(By.CSS_SELECTOR, "#cases tbody tr[data-shortcut='1']")
    assert marked.get_attribute("data-key") == made["marked"]
    assert marked.find_element(By.CSS_SELECTOR, ".badge.shortcut").is_displayed()
    marked.find_element(By.CSS_SELECTOR, "a").click()
    mark = browser.find_element(By.ID, "shortcut-mark")
    assert mark.is_displayed() and mark.size["height"] > 20
    assert "Most of this map lies outside the body/mask (20 % inside" in mark.text
    # amber, not a plain tag: a coloured panel with a thick border, above the map
    style = browser.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.backgroundColor, s.borderLeftWidth, s.borderLeftColor]",
        mark)  # fmt: skip
    assert style[0] not in ("rgba(0, 0, 0, 0)", "transparent", "rgb(255, 255, 255)") and float(style[1][:-2]) >= 4
    heat = browser.find_element(By.CSS_SELECTOR, "img.heat")
    assert mark.location["y"] < heat.location["y"]
    target = browser.find_element(By.CSS_SELECTOR, ".map-target")
    assert target.is_displayed() and target.text == "Map of the evidence for: label=1 · method gradcam"
    summary = browser.find_element(By.ID, "saliency-check")
    for selector, text in ((".shortcut-figure.run-level", "Run-level: median share of evidence inside the anatomy"),
                           (".shortcut-figure.report-level", "map(s) marked as mostly outside the anatomy")):  # fmt: skip
        figure = summary.find_element(By.CSS_SELECTOR, selector)
        browser.execute_script("arguments[0].scrollIntoView()", figure)
        assert figure.is_displayed() and text in figure.text, selector
    assert "1 of" in summary.find_element(By.CSS_SELECTOR, ".shortcut-figure.report-level").text
    assert _errors(browser) == []
