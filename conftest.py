"""Pytest set-up shared by tests/ and the doctests in medtl/."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache/medtl; pseudonyms stable within a test run."""
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path_factory.getbasetemp() / "medtl_home"))
    monkeypatch.setenv("MEDTL_SALT", "test-salt")
