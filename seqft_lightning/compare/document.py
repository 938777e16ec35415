"""A tiny document model rendered to Markdown and to self-contained HTML.

Block text may use two inline marks: ``**bold**`` and ```code```. HTML output embeds
images as base64 ``data:`` URIs and renders tables as ``<table>`` elements, so the file
can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    #: per column: "l" or "r" (default: first column left, others right)
    align: list[str] = field(default_factory=list)


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _aligns(table: Table) -> list[str]:
    n = len(table.header)
    return table.align or (["l"] + ["r"] * (n - 1))


# --------------------------------------------------------------------------- markdown

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base_dir: Path) -> str:
    """Markdown text; image links are relative to ``base_dir`` (where the .md lives)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = []
            if b.caption:
                lines.append(b.caption)
                lines.append("")
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in _aligns(b)) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            rel = Path(os.path.relpath(b.path, base_dir)).as_posix()
            alt = re.sub(r"[`*\[\]]", "", b.caption)
            out.append(f"![{alt}]({rel})\n\n*{b.caption}*")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {b!r}")
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------- html

def inline_html(text: str) -> str:
    """Escape ``text`` and turn ``**bold**`` / ```code``` into HTML."""
    escaped = html.escape(str(text), quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;white-space:nowrap}th{background:#f0f0f0}
tr:nth-child(even) td{background:#fafafa}td.r,th.r{text-align:right}td.l,th.l{text-align:left}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px;font-size:.95em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-style:italic;color:#555;font-size:.9em}.caption{color:#555;font-size:.9em}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Self-contained HTML page (images embedded as base64 PNG data URIs)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lvl = min(max(b.level, 1), 6)
            body.append(f'<h{lvl} id="{_slug(b.text)}">{inline_html(b.text)}</h{lvl}>')
        elif isinstance(b, Paragraph):
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{inline_html(i)}</li>" for i in b.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            aligns = _aligns(b)
            head = "".join(f'<th class="{a}">{inline_html(h)}</th>' for h, a in zip(b.header, aligns))
            rows = "".join(
                "<tr>" + "".join(f'<td class="{a}">{inline_html(c)}</td>' for c, a in zip(r, aligns)) + "</tr>"
                for r in b.rows)
            caption = f'<p class="caption">{inline_html(b.caption)}</p>' if b.caption else ""
            body.append(f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            cap = inline_html(b.caption)
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                        f"<figcaption>{cap}</figcaption></figure>")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {b!r}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )
