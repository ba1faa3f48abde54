import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/dicom_factory.py

import pytest  # noqa: E402


# ----------------------------------------------------------------------------- report fixtures
# trained and predicted once per session: test_report.py and test_report_browser.py share them
@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory):
    """``(run, archive, predictions, evaluation, explanation)``: see tests/report_setup.py."""
    from report_setup import evaluate_and_explain, make_archive, train_run

    from medtl.predict import predict_folder

    root = tmp_path_factory.mktemp("report-inputs")
    run = train_run(root)
    archive = make_archive(root)
    predictions = root / "predictions"
    predict_folder(run, archive, predictions, batch_size=8, workers=0, saliency="gradcam")
    evaluation, explanation = evaluate_and_explain(run, root)
    return run, archive, predictions, evaluation, explanation


@pytest.fixture(scope="session")
def report_folder(report_inputs, tmp_path_factory):
    """A report built from :func:`report_inputs`, without identifiers."""
    from medtl.report import build_report

    run, _, predictions, evaluation, explanation = report_inputs
    out = tmp_path_factory.mktemp("report") / "report"
    build_report(run, predictions, out, evaluation=evaluation, explanation=explanation, workers=0)
    return out


@pytest.fixture(scope="session")
def ct_report_folder(tmp_path_factory):
    """A report of a tiny 3D run over the sample CT series (tests/report_setup.py)."""
    from report_setup import ct_report

    return ct_report(tmp_path_factory.mktemp("ct-report"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`medtl demo` end to end, with the demo's config shortened (3 epochs at 64 px): the lines it
    printed, its result and its folder."""
    from report_setup import quick_demo

    return quick_demo(tmp_path_factory.mktemp("demo"))
