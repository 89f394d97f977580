"""README.rst stays true: valid reStructuredText, every option documented."""

import os

import pytest

from stacktrail import opts

README = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "README.rst")
OSPROFILER_ONLY = {"es_doc_type", "es_scroll_time", "es_scroll_size"}


def _text():
    with open(README) as f:
        return f.read()


def test_readme_is_valid_restructuredtext():
    core = pytest.importorskip("docutils.core")
    problems = []
    core.publish_string(_text(), writer_name="null", settings_overrides={
        "report_level": 2, "halt_level": 5,
        "warning_stream": type("W", (), {"write": problems.append})()})
    assert not "".join(problems)


def test_readme_documents_every_profiler_option():
    text = _text()
    missing = [opt.name for opt in opts.ALL_OPTS
               if opt.name not in OSPROFILER_ONLY
               and "``%s``" % opt.name not in text]
    assert not missing


def test_readme_names_the_two_commands():
    text = _text()
    assert "    tools/demo.sh\n" in text and "    tools/test.sh\n" in text
