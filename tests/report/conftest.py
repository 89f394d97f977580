"""Fixtures of the report tests."""

import pytest

from tests.report.browser import Browser


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium, closed after the test."""
    instance = Browser(tmp_path / "profile")
    yield instance
    instance.close()
