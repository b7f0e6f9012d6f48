"""The API reference in docs/api.md is the one the docstrings give today."""

from __future__ import annotations

from pathlib import Path

from cosim.apidoc import reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_checked_in_reference_is_current_and_everything_in_it_is_documented():
    assert REFERENCE.read_text() == reference(), (
        "docs/api.md is stale: regenerate it with `.venv/bin/python -m cosim.apidoc > docs/api.md`")
