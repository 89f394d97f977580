"""Release notes (reno): each note is valid, in reno's sections, and the
rST of each entry renders without a warning."""

import pathlib
import re

import pytest

yaml = pytest.importorskip("yaml")

NOTES = pathlib.Path(__file__).resolve().parents[1] / "releasenotes" / "notes"
# reno's default sections
SECTIONS = {"prelude", "features", "issues", "upgrade", "deprecations",
            "critical", "security", "fixes", "other"}


def _notes():
    return sorted(NOTES.glob("*.yaml"))


def test_there_are_notes_named_as_reno_names_them():
    assert _notes()
    for note in _notes():
        assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{16}\.yaml", note.name), note


def test_each_note_has_its_own_id():
    """reno knows a note by the hex id ending its name: two files with one
    id are one note to it, and the other is left out of the report."""
    ids = [note.name[-21:-5] for note in _notes()]
    assert sorted(set(ids)) == sorted(ids)


@pytest.mark.parametrize("note", _notes(), ids=lambda p: p.name)
def test_note_is_valid(note):
    core = pytest.importorskip("docutils.core")
    data = yaml.safe_load(note.read_text())
    assert isinstance(data, dict) and set(data) <= SECTIONS
    for section, entries in data.items():
        entries = [entries] if section == "prelude" else entries
        assert isinstance(entries, list) and entries
        for text in entries:
            problems = []
            core.publish_string(text, writer_name="null", settings_overrides={
                "report_level": 2, "halt_level": 5,
                "warning_stream": type("W", (), {"write":
                                                 problems.append})()})
            assert not "".join(problems), (note.name, text)
