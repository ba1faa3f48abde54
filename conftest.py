"""Pytest set-up shared by tests/ and the doctests in medtl/."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Never touch the user's ~/.cache/medtl; pseudonyms stable within a test run. Session-wide,
    so that module-scoped fixtures (a trained run shared by several tests) see it too."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDTL_HOME", str(tmp_path_factory.getbasetemp() / "medtl_home"))
    patch.setenv("MEDTL_SALT", "test-salt")
    yield
    patch.undo()
