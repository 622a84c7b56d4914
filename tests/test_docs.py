"""Generated documentation stays in step with the code."""

from conftest import REPO


def test_api_reference_is_current():
    from mimird.api.docs import render_markdown

    assert (REPO / "docs" / "api.md").read_text() == render_markdown(), (
        "docs/api.md is stale: run `.venv/bin/python -m mimird.api.docs > docs/api.md`")
