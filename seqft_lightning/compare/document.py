"""A tiny document model rendered to Markdown and to self-contained HTML.

Block text may use two inline marks: ``**bold**`` and ```code```. HTML output embeds images as base64
``data:`` URIs and renders tables as ``<table>`` elements, so the file can be mailed or archived on its own.
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

    def __post_init__(self) -> None:
        self.align = self.align or ["l"] + ["r"] * (len(self.header) - 1)


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


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
            lines = [b.caption, ""] if b.caption else []
            lines += [_md_row(b.header), "|" + "|".join(":---" if a == "l" else "---:" for a in b.align) + "|"]
            out.append("\n".join(lines + [_md_row(row) for row in b.rows]))
        elif isinstance(b, Image):
            alt, rel = re.sub(r"[`*\[\]]", "", b.caption), Path(os.path.relpath(b.path, base_dir)).as_posix()
            out.append(f"![{alt}]({rel})\n\n*{b.caption}*")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {b!r}")
    return "\n\n".join(out) + "\n"


def inline_html(text: str) -> str:
    """Escape ``text`` and turn ``**bold**`` / ```code``` into HTML."""
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text), quote=False))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


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


def _html_row(cells: Sequence[str], align: Sequence[str], tag: str) -> str:
    return "<tr>" + "".join(f'<{tag} class="{a}">{inline_html(c)}</{tag}>' for c, a in zip(cells, align)) + "</tr>"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Self-contained HTML page (images embedded as base64 PNG data URIs)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lvl, slug = min(max(b.level, 1), 6), re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-") or "section"
            body.append(f'<h{lvl} id="{slug}">{inline_html(b.text)}</h{lvl}>')
        elif isinstance(b, Paragraph):
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            caption = f'<p class="caption">{inline_html(b.caption)}</p>' if b.caption else ""
            rows = "".join(_html_row(r, b.align, "td") for r in b.rows)
            head = _html_row(b.header, b.align, "th")
            body.append(f"{caption}<table><thead>{head}</thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                        f"<figcaption>{inline_html(b.caption)}</figcaption></figure>")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")
