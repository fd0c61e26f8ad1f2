"""The report as text: report.md beside its PNGs, and report.html with the PNGs inside.

Both are rendered from one list of blocks, so they can never disagree. The HTML page
embeds its images, so it opens by double-click in any browser and can be sent as one
file; the Markdown reads well on code hosts and in editors.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from patientcnn.files import atomic_write

# ("h1" | "h2" | "h3" | "p", text) | ("table", header, rows) | ("figures", [(caption, file), ...])
Block = tuple


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {content[0]}")
        elif kind == "p":
            out.append(content[0])
        elif kind == "table":
            header, rows = content
            out.append(_md_row(header) + "\n" + _md_row(["---"] * len(header)))
            out[-1] += "".join("\n" + _md_row(row) for row in rows)
        elif kind == "figures" and len(content[0]) == 1:
            out.append("![{}]({})".format(*content[0][0]))
        elif kind == "figures":
            pairs = [content[0][i : i + 2] for i in range(0, len(content[0]), 2)]
            cells = [[f"![{cap}]({name})" for cap, name in pair] for pair in pairs]
            out.append(_md_row(["", ""]) + "\n" + _md_row(["---", "---"]))
            out[-1] += "".join("\n" + _md_row(row + [""] * (2 - len(row))) for row in cells)
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[Block], folder: Path) -> str:
    """A self-contained page; images are read from ``folder`` and embedded as data URIs."""
    body: list[str] = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(content[0]).replace('**', '')}</{kind}>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            lines = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table class='numbers'><tr>{head}</tr>{lines}</table>")
        elif kind == "figures":
            images = "".join(
                f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,"
                f"{base64.b64encode((folder / name).read_bytes()).decode()}'>"
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
                for cap, name in content[0]
            )
            body.append(f"<div class='figures'>{images}</div>")
    title = html.escape(next(c[0] for k, *c in blocks if k == "h1"))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table.numbers{border-collapse:collapse}table.numbers td,table.numbers th"
        "{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        ".figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;flex:1 1 480px}"
        "img{width:100%}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def write_documents(blocks: list[Block], folder: Path) -> tuple[Path, Path]:
    markdown = render_markdown(blocks)
    page = render_html(blocks, folder)
    md = atomic_write(folder / "report.md", lambda tmp: tmp.write_text(markdown))
    return md, atomic_write(folder / "report.html", lambda tmp: tmp.write_text(page))


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
