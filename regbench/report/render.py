"""Templates to Markdown, Markdown to one safe, self-contained HTML page.

Safety (the report is shared and opened in browsers):
- Markdown templates escape every value that is not ``Md`` (``finalize``), so text from claims.yaml,
  params.yaml or the data is literal, never markup;
- Markdown is rendered with raw HTML off (CommonMark's html option false): a ``<script>`` that slipped
  through would come out as text; markdown-it also refuses ``javascript:`` and ``data:`` links;
- an image is embedded only when its path, resolved, is a PNG file inside the report's folder; any other
  image is shown as its alt text.
The page's only markup besides CommonMark's is made here from fixed words: the verdict badges (a bold
label of the vocabulary) and the heading anchors.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from regbench.report.text import Md, code, escape, fmt, label, percent, slug

# The labels a badge is drawn for, and its colour class. Anything else in bold stays bold text.
BADGES = {
    "reproduced": "good",
    "reproduced, smaller than published": "partial",
    "no effect of the published size": "bad",
    "contradicted": "bad",
    "refuted": "bad",
    "undecided": "open",
    "inconclusive": "open",
    "not run": "none",
}


def _finalize(value: Any) -> str:
    if isinstance(value, Md):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt(value)
    return escape("" if value is None else value)


def environment() -> jinja2.Environment:
    """Markdown templates (package data in regbench/report/templates): everything outside is escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("regbench.report", "templates"),
        autoescape=False,  # Markdown, not HTML: ``_finalize`` is the escape, and render.html runs CommonMark safely
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(code=code, fmt=fmt, percent=percent, label=label, md=Md, escape_md=escape)
    return env


def markdown(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def _text_of(children: Iterable[Token]) -> str:
    return "".join(child.content for child in children if child.type in ("text", "code_inline"))


def _badges_and_anchors(state) -> None:
    """A core rule: ``**label**`` of the vocabulary becomes a badge; every heading gets GitHub's anchor."""
    tokens = state.tokens
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and index + 1 < len(tokens):
            anchor = slug(_text_of(tokens[index + 1].children or []))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            token.attrSet("id", anchor if count == 0 else f"{anchor}-{count}")
        if token.type != "inline" or not token.children:
            continue
        children, rebuilt, i = token.children, [], 0
        while i < len(children):
            window = children[i : i + 3]
            if (
                len(window) == 3
                and window[0].type == "strong_open"
                and window[1].type == "text"
                and window[1].content in BADGES
                and window[2].type == "strong_close"
            ):
                word = window[1].content
                badge = Token("html_inline", "", 0)
                badge.content = f'<span class="verdict verdict-{BADGES[word]}">{html.escape(word)}</span>'
                rebuilt.append(badge)
                i += 3
                continue
            rebuilt.append(children[i])
            i += 1
        token.children = rebuilt


def renderer(base: Path) -> MarkdownIt:
    """CommonMark with tables, raw HTML off, badges and anchors, and images embedded from ``base`` only."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("regbench_badges_anchors", _badges_and_anchors)
    root = base.resolve()

    def image(self, tokens, index, options, env):
        token = tokens[index]
        alt = self.renderInlineAsText(token.children or [], options, env)
        source = embeddable(root, token.attrGet("src") or "")
        if source is None:
            return f'<span class="missing-figure">[figure not embedded: {html.escape(alt)}]</span>'
        data = base64.b64encode(source.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'

    md.add_render_rule("image", image)
    return md


def embeddable(root: Path, source: str) -> Path | None:
    """The PNG file ``source`` names, if it resolves (symlinks and ``..`` followed) to a file inside ``root``."""
    if not source or "://" in source or source.startswith(("/", "data:")):
        return None
    try:
        path = (root / source).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or path.suffix.lower() != ".png" or not path.is_file():
        return None
    return path


def page(markdown_text: str, title: str, base: Path) -> str:
    """One self-contained HTML page: the Markdown rendered safely, styles inline, figures embedded."""
    body = renderer(base).render(markdown_text)
    shell = jinja2.Environment(loader=jinja2.PackageLoader("regbench.report", "templates"), autoescape=True)
    return shell.get_template("page.html.j2").render(title=title, body=Markup(body))
