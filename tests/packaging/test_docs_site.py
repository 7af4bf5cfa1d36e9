"""The docs site (`make docs`): module, plugin and role pages, and every guide of docs/*.md as a page linked from
the collection index (scripts/docs_guides.py turns them into the collection's extra docs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDES = sorted(p.stem.replace("-", "_") for p in (REPO / "docs").glob("*.md"))


@pytest.fixture(scope="module")
def site():
    if os.environ.get("FLEET_SKIP_DOCS_SITE"):
        pytest.skip("FLEET_SKIP_DOCS_SITE is set")
    r = subprocess.run(["bash", "scripts/docs.sh"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return REPO / "build" / "docs" / "html" / "collections" / "fleet" / "azure_iot"


def test_every_guide_is_a_page_linked_from_the_index(site):
    index = (site / "index.html").read_text()
    assert GUIDES and len(GUIDES) >= 9
    for guide in GUIDES:
        page = site / "docsite" / f"guide_{guide}.html"
        assert page.is_file(), f"no page for docs/{guide.replace('_', '-')}.md"
        assert f"docsite/guide_{guide}.html" in index, f"the index does not link guide_{guide}"
    hierarchy = (site / "docsite" / "guide_edge_hierarchy.html").read_text()
    assert "edge_hierarchy_tree" in hierarchy and "<table" in (site / "docsite" / "guide_reliability.html").read_text()


def test_module_filter_and_role_pages_exist(site):
    for page in ("iothub_device_module.html", "iothub_device_bulk_module.html", "sas_token_filter.html",
                 "edge_hierarchy_role.html"):
        assert (site / page).is_file(), page
