#!/usr/bin/env python3
"""Turn the guides (docs/*.md) into the collection's extra docs for the docs site: one RST page each in
<collection>/docs/docsite/rst/ (converted with pandoc), listed in <collection>/docs/docsite/extra-docs.yml, so that
the collection index links them.  The Markdown files stay the only source.

usage: docs_guides.py <collection dir (ansible_collections/fleet/azure_iot)>"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pypandoc

REPO = Path(__file__).resolve().parents[1]
PREFIX = "ansible_collections.fleet.azure_iot.docsite"


def page_name(md: Path) -> str:
    return "guide_" + md.stem.replace("-", "_")


def convert(md: Path) -> str:
    text = md.read_text()
    # A Mermaid diagram shows as its source (the site renders no JavaScript diagrams; GitHub does): said so, and
    # kept readable (line breaks inside nodes as " / ").
    text = re.sub(r"```mermaid\n(.*?)```", lambda m: "*Diagram (Mermaid source):*\n\n```text\n"
                  + m.group(1).replace("<br/>", " / ") + "```", text, flags=re.S)
    rst = pypandoc.convert_text(text, "rst", format="gfm", extra_args=["--wrap=none"])
    # RST cannot nest code in bold: "**``x`` says**" shows its backticks; the code goes in front of the bold.
    rst = re.sub(r"\*\*``([^`]+)``([^*]+)\*\*",
                 lambda m: f"``{m.group(1)}`` **{m.group(2).strip()}**" if m.group(2).strip() else f"``{m.group(1)}``",
                 rst)
    # Links between guides point at their pages on the site; other files at the repository's copy.
    rst = re.sub(r"<([a-z0-9-]+)\.md(#[^>]*)?>`__", lambda m: f"<{page_name(Path(m.group(1)))}.html{m.group(2) or ''}>`__", rst)
    # Every label of a collection's extra docs must carry the collection's prefix (antsibull-docs skips a page
    # with another): pandoc's own heading targets get it too.
    page = page_name(md)
    rst = re.sub(r"^\.\. _([^:`]+):$", lambda m: f".. _{PREFIX}.{page}.{m.group(1)}:", rst, flags=re.M)
    return f".. _{PREFIX}.{page}:\n\n{rst}"


def main(collection: Path) -> None:
    guides = sorted((REPO / "docs").glob("*.md"))
    rst_dir = collection / "docs" / "docsite" / "rst"
    rst_dir.mkdir(parents=True, exist_ok=True)
    for md in guides:
        (rst_dir / f"{page_name(md)}.rst").write_text(convert(md))
    lines = ["---", "sections:", "  - title: Guides", "    toctree:"]
    lines += [f"      - {page_name(md)}" for md in guides]
    (collection / "docs" / "docsite" / "extra-docs.yml").write_text("\n".join(lines) + "\n")
    print(f"{len(guides)} guides: {', '.join(page_name(md) for md in guides)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
