"""Experiment reports: one list of blocks rendered as Markdown, self-contained HTML and CSV tables.

A study builds a :class:`Section` of paragraphs, :class:`Table` and :class:`Figure` blocks; the writer renders
the same blocks twice so the Markdown and the HTML never disagree. HTML embeds each PNG as base64 so the file
can be mailed or archived alone; Markdown links the PNG files beside it.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet.printable import printable_line

Cell = str | int | float | None


@dataclass
class Table:
    """A results table; ``name`` is its CSV file stem, ``columns`` its header (CSV column names)."""

    name: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    inline: bool = True
    """False: too long to read in the report; only the CSV holds the rows (the report links it)."""


@dataclass
class Figure:
    """A PNG already written to disk."""

    path: Path
    caption: str = ""


Block = str | Table | Figure


@dataclass
class Section:
    """One study's part of a report."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    """Sentences the report also gathers at its top (the paper's claims a study tested, with their verdicts)."""


def fmt(value: Cell, digits: int = 2) -> str:
    """Human form of a cell: floats to ``digits`` decimals, integers with thousands separators, None as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _csv_cell(value: Cell) -> str | int | float:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return round(value, 4) if isinstance(value, float) else value


def write_csv(table: Table, path: Path) -> Path:
    """The table as CSV with its raw column names; empty cells where there is no value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_csv_cell(v) for v in row])
    return path


def _md_table(table: Table) -> str:
    if not table.inline:
        return f"*{table.caption}*: {len(table.rows)} rows in [`{table.name}.csv`]({table.name}.csv)"
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.rows]
    cap = f"*{table.caption}* (`{table.name}.csv`)\n\n" if table.caption else f"`{table.name}.csv`\n\n"
    return cap + "\n".join(lines)


def _html_table(table: Table) -> str:
    if not table.inline:
        name = html.escape(table.name)
        link = f"<a href='{name}.csv'>{name}.csv</a>"
        return f"<p><i>{html.escape(table.caption)}</i>: {len(table.rows)} rows in {link}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in table.rows)
    cap = html.escape(table.caption) + f" (<code>{html.escape(table.name)}.csv</code>)"
    return f"<table><caption>{cap}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>])")


def md_text(value: str) -> str:
    """A value from the command line (a --data or --runs path) as Markdown shows it: control characters and
    newlines escaped, Markdown's punctuation backslashed, so it cannot add lines, links or HTML to the report."""
    return _MD_SPECIAL.sub(r"\\\1", printable_line(value))


def render_markdown(title: str, meta: Sequence[tuple[str, str]], sections: Sequence[Section], root: Path,
                    lead: Section | None = None) -> str:
    """Markdown report; figure links are relative to ``root`` (the report's folder). ``lead`` comes first, above
    the run's particulars."""
    out = [f"# {title}", ""]
    if lead is not None:
        out += [f"## {lead.title}", "", *[f"{b}\n" for b in lead.blocks if isinstance(b, str)]]
    out += [*[f"- **{k}**: {md_text(v)}" for k, v in meta], ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if isinstance(block, Table):
                out += [_md_table(block), ""]
            elif isinstance(block, Figure):
                path = block.path.resolve()
                rel = path.relative_to(root) if path.is_relative_to(root) else path
                out += [f"![{block.caption}]({rel.as_posix()})", "", f"*{block.caption}*", ""]
            else:
                out += [block, ""]
    return "\n".join(out)


def _html_bold(text: str) -> str:
    """Escaped text with Markdown's ``**bold**`` shown bold (the claims' verdicts)."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th{background:#eee}caption{text-align:left;font-style:italic;padding:4px 0}img{max-width:100%}"
        "figcaption{font-style:italic;font-size:90%}")


def render_html(title: str, meta: Sequence[tuple[str, str]], sections: Sequence[Section],
                lead: Section | None = None) -> str:
    """Self-contained HTML (figures inline as base64 PNG); ``lead`` as in :func:`render_markdown`."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if lead is not None:
        parts.append(f"<h2>{html.escape(lead.title)}</h2>")
        parts += [f"<p>{_html_bold(b)}</p>" for b in lead.blocks if isinstance(b, str)]
    parts.append("<ul>")
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in meta]
    parts.append("</ul>")
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Figure):
                parts.append(_html_figure(block))
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, title: str, meta: Sequence[tuple[str, Any]], sections: Sequence[Section],
                 lead: Section | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and one CSV per table into ``out``; returns the paths written. ``lead``
    (text only) opens the report, above its particulars."""
    out.mkdir(parents=True, exist_ok=True)
    meta_s = [(k, str(v)) for k, v in meta]
    written = [write_csv(b, out / f"{b.name}.csv") for s in sections for b in s.blocks if isinstance(b, Table)]
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(title, meta_s, sections, out.resolve(), lead) + "\n")
    page.write_text(render_html(title, meta_s, sections, lead))
    return [md, page, *written]
