"""The report writer: one set of blocks, the same numbers in Markdown, HTML and CSV."""

import csv
import math
import re

from resnet.analysis.curves import new_figure
from resnet.analysis.report import Figure, Section, Table, fmt, write_report


def _figure(path):
    fig = new_figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([1, 2], [3, 4])
    fig.savefig(path)
    return path


def test_markdown_html_and_csv_hold_the_same_table(tmp_path):
    table = Table("depth", ["net", "params", "test_error", "paper_test_error"],
                  [["ResNet-20", 269722, 8.1234, 8.75], ["ResNet-1202", 19421274, None, 7.93]], "Table 6")
    per_layer = Table("responses", ["net", "std"], [["ResNet-20", 0.5]] * 30, "per layer", inline=False)
    fig = Figure(_figure(tmp_path / "curves.png"), "error vs iterations")
    paths = write_report(tmp_path, "title", [("dataset", "digits"), ("wall time", "3 s")],
                         [Section("Depth", ["a paragraph <b>", table, per_layer, fig])])
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert paths[:2] == [tmp_path / "report.md", tmp_path / "report.html"]
    assert "| ResNet-20 | 269,722 | 8.12 | 8.75 |" in md and "| ResNet-1202 | 19,421,274 | — | 7.93 |" in md
    assert "<td>8.12</td>" in page and "a paragraph &lt;b&gt;" in page  # text is escaped
    assert "![error vs iterations](curves.png)" in md and "data:image/png;base64," in page
    assert "30 rows in [`responses.csv`](responses.csv)" in md and md.count("| ResNet-20 | 0.50 |") == 0
    with open(tmp_path / "depth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"net": "ResNet-20", "params": "269722", "test_error": "8.1234", "paper_test_error": "8.75"}
    assert rows[1]["test_error"] == ""  # a missing number stays empty, never a placeholder
    assert len((tmp_path / "responses.csv").read_text().splitlines()) == 31


def test_cells_format_for_people():
    assert fmt(1727962) == "1,727,962" and fmt(6.4321) == "6.43" and fmt(None) == "—" and fmt(math.nan) == "—"
    assert fmt("0.27M") == "0.27M"


def test_command_line_text_in_the_markdown_report_cannot_add_lines_links_or_html(tmp_path):
    hostile = "runs/<img src=x onerror=alert(1)>\n# forged heading [link](http://example.com)\x1b[2J"
    write_report(tmp_path, "t", [("data", hostile)], [])
    md = (tmp_path / "report.md").read_text()
    meta = [line for line in md.splitlines() if line.startswith("- **data**")]
    assert len(meta) == 1 and "\x1b" not in md
    for unescaped in (r"(?<!\\)<img", r"(?<!\\)\]\(http", r"(?<!\\)# forged"):  # each must be backslashed
        assert not re.search(unescaped, md), unescaped
