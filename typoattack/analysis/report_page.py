"""The report page writer: a list of `ReportBlock`s (headings, paragraphs, tables of string cells,
figures, run facts, a linked list of contents) written as `{stem}.md` and a self-contained
`{stem}.html` (no model code).

Tables are built once as (header, cells), string cells without markup escaping; Markdown
(`format_markdown_table`) and HTML (`_html_table`) render the same cells. Every task's report page
is written here (`write_report_pages`).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from typoattack.files import write_text_atomic


@dataclass(frozen=True)
class ReportBlock:
    """One element of the report: `kind` is h1, h2, h3, p, warn, table, figure, facts, config or toc
    (a linked list of the h2 headings that follow it)."""

    kind: str
    text: str = ""
    header: tuple[str, ...] = ()
    cells: tuple[tuple[str, ...], ...] = ()
    path: Path | None = None


def build_table_block(header: list[str], cells: list[list[str]], css_class: str) -> ReportBlock:
    return ReportBlock("table", css_class, tuple(header), tuple(tuple(r) for r in cells))


def format_markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table of string cells (pipes in cells escaped), with a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LINK = re.compile(r"\[([^\]`]+)\]\(([^()\s`]+)\)")


def _html_inline(text: str) -> str:
    """HTML of a paragraph: escaped text with `code` spans and Markdown links `[text](href)`
    (relative or http(s) targets only; others stay text)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: no code spans
        parts = [text]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        pos = 0
        for m in _LINK.finditer(part):
            href = m.group(2)
            if ":" in href.split("/")[0] and not href.startswith(("http://", "https://")):
                continue
            out.append(html.escape(part[pos:m.start()]))
            out.append(f'<a href="{html.escape(href)}">{html.escape(m.group(1))}</a>')
            pos = m.end()
        out.append(html.escape(part[pos:]))
    return "".join(out)


def _html_cell(text: str) -> str:
    """HTML of one table cell: escaped text with `code` spans."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: all text
        return html.escape(text)
    return "".join(html.escape(p) if i % 2 == 0 else f"<code>{html.escape(p)}</code>" for i, p in enumerate(parts))


def _html_table(header: list[str], rows: list[list[str]], css_class: str) -> str:
    """An HTML table from string cells (escaped; Markdown code spans kept as <code>)."""
    head = "".join(f"<th>{_html_cell(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


REPORT_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}"
    "th{background:#f0f0f0}td:nth-child(-n+4){text-align:left}"
    "tbody tr:nth-child(even){background:#fafafa}"
    "figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{color:#666;font-size:0.85em}"
    "pre{background:#f6f8fa;padding:0.8em;overflow-x:auto;font-size:0.8em}"
    ".warn{background:#fff3cd;border:1px solid #e0b252;padding:0.6em 0.8em}"
    ".toc ul{margin-top:0}"
)


def get_anchor(heading: str) -> str:
    """The link target of a heading, as GitHub spells it in Markdown: lower case, characters other
    than letters, digits, spaces and `-` dropped, spaces as `-` (`Per-word results` -> `per-word-results`)."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -")
    return kept.replace(" ", "-")


def list_contents(blocks: Sequence[ReportBlock], toc: ReportBlock) -> list[str]:
    """The h2 headings that follow `toc` in `blocks` (the entries of its linked list)."""
    after = list(blocks)[next(i for i, b in enumerate(blocks) if b is toc) + 1:]
    return [b.text for b in after if b.kind == "h2"]


def format_markdown_block(block: ReportBlock, out_dir: Path, contents: Sequence[str] = ()) -> list[str]:
    """Lines of one block in report.md (figures linked by their path relative to `out_dir`; a toc
    block lists `contents`, each heading linked)."""
    if block.kind == "toc":
        return [f"**{block.text}:**", ""] + [f"- [{h}](#{get_anchor(h)})" for h in contents] + [""]
    if block.kind in ("h1", "h2", "h3"):
        return ["#" * int(block.kind[1]) + f" {block.text}", ""]
    if block.kind == "warn":
        return [f"**⚠ {block.text}**", ""]
    if block.kind == "table":
        return [format_markdown_table(block.header, block.cells)]
    if block.kind == "figure":
        assert block.path is not None
        rel = Path(os.path.relpath(block.path.resolve(), out_dir.resolve())).as_posix()
        return [f"![{block.path.stem}]({rel})", ""]
    if block.kind == "facts":
        return [f"- {k}: {v}" for k, v in block.cells] + [""]
    if block.kind == "config":
        return ["Config:", "", "```json", block.text, "```", ""]
    return [block.text, ""]


def format_html_block(block: ReportBlock, contents: Sequence[str] = ()) -> str:
    """HTML of one block in report.html (every string escaped, figures embedded as data URIs, h2
    headings with the `id` a toc block links to)."""
    text = html.escape(block.text)
    if block.kind == "toc":
        items = "".join(f'<li><a href="#{get_anchor(h)}">{html.escape(h)}</a></li>' for h in contents)
        return f'<nav class="toc"><p><strong>{text}:</strong></p><ul>{items}</ul></nav>'
    if block.kind == "h2":
        return f'<h2 id="{get_anchor(block.text)}">{text}</h2>'
    if block.kind in ("h1", "h2", "h3"):
        return f"<{block.kind}>{text}</{block.kind}>"
    if block.kind == "warn":
        return f'<p class="warn"><strong>⚠ {text}</strong></p>'
    if block.kind == "table":
        return _html_table(list(block.header), [list(r) for r in block.cells], block.text)
    if block.kind == "figure":
        assert block.path is not None
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.path.stem)}">'
                f"<figcaption>{html.escape(block.path.name)}</figcaption></figure>")
    if block.kind == "facts":
        return "<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in block.cells) + "</ul>"
    if block.kind == "config":
        return f"<p>Config:</p><pre><code>{text}</code></pre>"
    return f"<p>{_html_inline(block.text)}</p>"


def write_report_pages(blocks: Sequence[ReportBlock], out_dir: Path, stem: str, title: str) -> tuple[Path, Path]:
    """Write `blocks` as `{stem}.md` (figures linked by relative path) and a self-contained
    `{stem}.html` (figures embedded, every string escaped) into `out_dir`.

    Returns:
        (path of the .md, path of the .html).
    """
    contents = {id(b): list_contents(blocks, b) for b in blocks if b.kind == "toc"}
    md = [line for block in blocks for line in format_markdown_block(block, out_dir, contents.get(id(block), ()))]
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    write_text_atomic(md_path, "\n".join(md).rstrip("\n") + "\n")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(format_html_block(b, contents.get(id(b), ())) for b in blocks) + "\n</body>\n</html>\n"
    )
    write_text_atomic(html_path, page)
    return md_path, html_path
