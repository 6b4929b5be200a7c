"""The docs: generated reference pages are current, and every link resolves.

- docs/reference/*.md are regenerated in memory (scripts/docs_reference.py) and
  compared with the committed pages: a schema key or a CLI flag added without
  `make docs` fails here;
- every relative link in README.md and docs/**/*.md points to an existing file, and
  its #anchor (if any) to a heading of that file (GitHub's anchor rules); external
  http(s) links are only checked for syntax, never fetched.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import urllib.parse
from pathlib import Path

import pytest

from helpers import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])


def _reference_module():
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "scripts" / "docs_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["settings.md", "cli.md"])
def test_generated_reference_is_current(name):
    mod = _reference_module()
    pages = {p.name: (p, text) for p, text in mod.pages().items()}
    path, text = pages[name]
    assert path.exists(), f"{path} is missing: run `make docs`"
    assert path.read_text() == text, f"{path} is stale: run `make docs` (scripts/docs_reference.py)"


def test_reference_covers_every_key_and_flag():
    from barehub import cli, settings

    mod = _reference_module()
    text = mod.settings_md()
    for section, keys in settings.SCHEMA.items():
        for key in keys:
            assert f"| `{section}.{key}` |" in text
    text = mod.cli_md()
    for name, sub, _help in mod._subparsers(cli.build_parser()):
        assert f"## `barehub {name}`" in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for opt in action.option_strings:
                if action.help != "==SUPPRESS==":
                    assert f"`{opt}" in text, (name, opt)


# ------------------------------------------------------------------ links

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)>]*?)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text with fenced and indented code blocks and code spans removed."""
    text = _FENCE.sub("", text)
    lines, prev_blank, in_block = [], True, False
    for line in text.splitlines():
        if line.startswith(("    ", "\t")) and (prev_blank or in_block):
            in_block = True
            lines.append("")
        elif not line.strip():
            prev_blank = True
            lines.append(line)
        else:
            in_block = prev_blank = False
            lines.append(line)
    return _CODE_SPAN.sub("", "\n".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set(_HTML_ANCHOR.findall(text))
    for _hashes, heading in _HEADING.findall(text):
        s = slug(heading)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text())
    return _LINK.findall(prose) + _IMAGE.findall(prose)


def problems(path: Path) -> list[str]:
    out = []
    for target in links(path):
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme in ("http", "https"):
            if not parsed.netloc or " " in target or not re.match(r"^[A-Za-z0-9.-]+(:\d+)?$", parsed.netloc):
                out.append(f"{target}: not a well-formed URL")
            continue
        if parsed.scheme == "mailto":
            continue
        if parsed.scheme or parsed.netloc:
            out.append(f"{target}: unexpected scheme {parsed.scheme!r} (relative paths or http(s) only)")
            continue
        rel, anchor = parsed.path, parsed.fragment
        dest = (path.parent / urllib.parse.unquote(rel)).resolve() if rel else path
        if not dest.exists():
            out.append(f"{target}: {dest} does not exist")
            continue
        if not dest.is_relative_to(REPO):
            out.append(f"{target}: points outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md":
                out.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest):
                out.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    found = problems(page)
    assert not found, f"{page.relative_to(REPO)}:\n" + "\n".join(f"  {p}" for p in found)


def test_link_check_can_fail(tmp_path):
    """The checker finds a missing file, a missing anchor and a malformed URL; it skips code."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-code-heading-yes) [ok](#title) [ok](https://example.org/x)\n"
        "[missing](nope.md) [bad anchor](other.md#nope) [bad url](https://exa mple.org)\n"
        "`[not a link](nope.md)`\n\n    [code block](nope.md)\n\n"
        "```\n[fenced](nope.md)\n```\n\n# Title\n"
    )
    import test_docs

    old = test_docs.REPO
    test_docs.REPO = tmp_path
    try:
        found = problems(page)
    finally:
        test_docs.REPO = old
    assert len(found) == 3, found
    assert any("nope.md" in f and "does not exist" in f for f in found)
    assert any("no heading #nope" in f for f in found)
    assert any("not a well-formed URL" in f for f in found)


def test_index_lists_every_page():
    """docs/index.md links every page in docs/ (Diataxis order: tutorial, how-to, reference, explanation)."""
    index = REPO / "docs" / "index.md"
    linked = {(index.parent / urllib.parse.urlsplit(t).path).resolve() for t in links(index)
              if not urllib.parse.urlsplit(t).scheme}
    missing = [str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")
               if p != index and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not link: {missing}"
    text = index.read_text()
    order = [text.find(h) for h in ("## Tutorial", "## How-to guides", "## Reference", "## Explanation")]
    assert -1 not in order and order == sorted(order), "index sections must be in Diataxis order"
