"""One report page written twice, as self-contained HTML (plots inline, no network) and as Markdown."""

from __future__ import annotations

import html
from pathlib import Path

from finloom.files import atomic_write_text

Sections = list[tuple[str, tuple[str, str] | None, str | None, str]]
"""(heading, table as (HTML, Markdown), plot as base64 PNG, note) per section of a page."""


def cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> tuple[str, str]:
    """The same table as HTML and as Markdown."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    markdown = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    markdown += "".join("| " + " | ".join(cell(c) for c in row) + " |\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", markdown


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:auto;padding:1rem;color:#111}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}th{background:#f3f4f6}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
.muted{color:#666;font-size:.85rem}
"""


class Page:
    """One report page, written twice: self-contained HTML (plots inline) and Markdown."""

    def __init__(self, title: str, subtitle: str):
        self.title = title
        self.subtitle = subtitle
        self.html: list[str] = []
        self.markdown: list[str] = [f"# {title}\n", f"{subtitle}\n"]

    def add(self, heading: str, table: tuple[str, str] | None = None, image: str | None = None, note: str = "") -> None:
        self.html.append(f"<section><h2>{html.escape(heading)}</h2>")
        self.markdown.append(f"\n## {heading}\n")
        if note:
            self.html.append(f"<p class='muted'>{html.escape(note)}</p>")
            self.markdown.append(f"{note}\n")
        if table:
            self.html.append(table[0])
            self.markdown.append(table[1])
        if image:
            self.html.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{image}'>")
        self.html.append("</section>")

    def extend(self, sections) -> None:
        for heading, table, image, note in sections:
            self.add(heading, table, image, note)

    def write(self, html_path: Path, md_path: Path) -> dict[str, Path]:
        page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><p class='muted'>{html.escape(self.subtitle)}</p>"
                + "".join(self.html) + "</body></html>")
        atomic_write_text(html_path, page)
        atomic_write_text(md_path, "".join(self.markdown))
        return {"html": html_path, "markdown": md_path}
