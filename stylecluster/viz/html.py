"""HTML building blocks shared by the map, the report and the similar page.

File names and labels are user input. Everything from the data goes through :func:`esc` (element
text and attribute values) or :func:`script_json` (data for scripts), never into markup raw.
"""
from __future__ import annotations

import html
import json
from typing import Any, Iterable

STYLE = """
:root { --fg:#1d1d1f; --muted:#6e6e73; --line:#d9d9de; --accent:#3a5ba0; --bg:#fafafa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; padding: 16px 24px 48px; max-width: 1400px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.muted { color: var(--muted); }
nav { display: flex; gap: 16px; margin: 4px 0 12px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bars { display: grid; grid-template-columns: max-content 1fr max-content; gap: 3px 10px; align-items: center; max-width: 760px; }
.bar { height: 14px; background: var(--accent); border-radius: 2px; min-width: 1px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(350px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; display: grid; grid-template-rows: auto 1fr; align-content: start;
        grid-template-columns: 112px 1fr; gap: 4px 10px; }
.card .thumb { width: 112px; height: 112px; object-fit: contain; background: #eee; grid-row: span 2; }
.card .name { font-weight: 600; overflow-wrap: anywhere; }
.card .patches { grid-column: 1 / -1; width: 100%; image-rendering: pixelated; background: #000; }
.missing { width: 112px; height: 112px; display: flex; align-items: center; justify-content: center;
           background: #eee; color: var(--muted); font-size: 12px; text-align: center; grid-row: span 2; }
"""


def esc(value: Any) -> str:
    """Text safe inside an element or a quoted attribute value."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that cannot end a ``<script>`` element or open a comment inside it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def page(title: str, body: str, head: str = "") -> str:
    """A complete HTML document; ``title`` is escaped here, ``body`` and ``head`` must already be safe."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style>{head}</head>\n<body>\n{body}\n</body></html>\n"
    )


def table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] = ()) -> str:
    """An HTML table of plain values (every cell escaped); ``numeric`` columns align right."""
    numeric = set(numeric)

    right = ' class="num"'

    def cells(values, tag):
        return "".join(f"<{tag}{right if i in numeric else ''}>{esc(v)}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def _percent(share: float) -> str:
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def bar_chart(counts: dict[str, int], total: int) -> str:
    """Horizontal bars, one per label, as plain HTML (no script needed to read it)."""
    if not counts or total <= 0:
        return "<p class=\"muted\">no labels</p>"
    top = max(counts.values())
    rows = []
    for label, count in counts.items():
        width = 100.0 * count / top
        rows.append(
            f"<span>{esc(label)}</span><div class=\"bar\" style=\"width:{width:.1f}%\" title=\"{esc(label)}: {count}\"></div>"
            f"<span class=\"muted\">{count} ({esc(_percent(count / total))})</span>"
        )
    return f"<div class=\"bars\">{''.join(rows)}</div>"
