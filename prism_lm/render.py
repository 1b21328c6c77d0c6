"""Tables and pages for the reports, in one place: Markdown and self-contained HTML.

Both ``prism analyze`` and ``prism sweep report`` describe their tables as (title, header, rows)
and their figures as PNG files; this module turns them into Markdown or into one HTML page with
the figures embedded (base64), so the pages open from disk with no server and no network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path

STYLE = ("body{font:14px sans-serif;margin:2em auto;max-width:1400px}img{max-width:100%}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}")


def plain(x) -> str:
    return str(x)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], fmt: Callable = plain) -> list[str]:
    """The lines of a Markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows])


def html_table(header: Sequence[str], rows: Sequence[Sequence], fmt: Callable = plain) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(fmt(x))}</td>" for x in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def html_image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def html_page(title: str, body: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
