"""Numbers and outside text as Markdown: one formatting rule for every number, one escape for every text.

Every text that comes from claims.yaml, params.yaml or the data passes through ``escape`` (or ``code``)
before it reaches the Markdown; what this package writes itself is ``Md`` (trusted Markdown). The
templates enforce it: their ``finalize`` hook escapes any value that is not ``Md`` (regbench/report/render.py).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


class Md(str):
    """Markdown this package wrote: passes through the templates as is."""


# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that start markup anywhere
# in a line (emphasis, code, links and images, raw HTML and autolinks, entities, table cells,
# strikethrough); a parenthesis or '!' is markup only after a bracket, which is escaped.
_MARKUP = re.compile(r"([\\`*_\[\]<|~&])")
# What starts a block at the beginning of a line: heading, quote, list item, thematic break, setext underline.
_BLOCK_START = re.compile(r"^(?:[#>=]|[-+](?=\s|$|[-+])|\d{1,9}(?=[.)](?:\s|$)))")


def escape(value: Any) -> Md:
    """Outside text as literal Markdown: no markup, no raw HTML, no table break, one line, no block start."""
    text = _MARKUP.sub(r"\\\1", " ".join(str(value).split()))
    start = _BLOCK_START.match(text)
    if start:  # escape the marker's last character: '\#', '\-', '1\.'
        end = start.end() + (1 if start.group(0)[0].isdigit() else 0)
        text = text[: end - 1] + "\\" + text[end - 1 :]
    return Md(text)


def code(value: Any) -> Md:
    """Outside text as an inline code span (literal in CommonMark), its fence longer than any backtick run."""
    text = " ".join(str(value).split()).replace("|", "¦")  # a pipe would end a table cell even in a code span
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Md(f"{fence}{pad}{text}{pad}{fence}")


def fmt(value: Any, digits: int = 4) -> Md:
    """A number as the report shows it everywhere (Markdown and HTML share this text): 4 significant decimals."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return Md("–")
    if isinstance(value, (bool, np.bool_)):
        return Md(str(bool(value)))
    if isinstance(value, (float, np.floating)):
        # A mean of differences that cancel exactly in decimal comes out as ±1e-17 in binary: that is 0.
        value = 0.0 if abs(float(value)) < 1e-12 else float(value)
        if abs(value) < 1e-3 and value != 0:
            return Md(f"{value:.{digits}g}")
        return Md(f"{value:.{digits}f}".rstrip("0").rstrip("."))
    if isinstance(value, (int, np.integer)):
        return Md(str(int(value)))
    return escape(value)


def percent(level: float, digits: int = 1) -> Md:
    """A level or rate as a percentage (95% for the nominal level, 98.2% for a sequential look's)."""
    return Md(f"{level:.{digits}%}")


def slug(heading: str) -> str:
    """The anchor of a heading as GitHub and the HTML page (render.py) both make it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchor(claim_id: str) -> Md:
    """The link target of a claim's section (its heading is the claim id)."""
    return Md("#" + slug(claim_id))


def claim_link(claim_id: str) -> Md:
    return Md(f"[{code(claim_id)}]({anchor(claim_id)})")


def label(verdict: str) -> Md:
    """A verdict label in bold: the HTML page turns a bold label of the vocabulary into a coloured badge."""
    return Md(f"**{escape(verdict)}**")
