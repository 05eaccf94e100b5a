"""What every page of ours shares: the CSS, the cell formatter, figures embedded as PNG.

Pages are self-contained (figures as base64 data URLs, CSS inline) so they open offline, from an
e-mail attachment or a CI artefact.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1320px;
color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-weight:600}
.incomplete{background:#fde2e1;border:1px solid #d93025;color:#8a1c14}
.embedded{background:#fff4ce;border:1px solid #e0a800;color:#5c4400}
.warn{background:#fff4ce;border:1px solid #e0a800;color:#5c4400}
table{border-collapse:collapse;font-size:11.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:2px 5px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}
td.l,th.l{text-align:left}
th{white-space:normal;vertical-align:bottom}
td.trust{white-space:normal;min-width:9em;max-width:20em}
tr.sat td{background:#fde2e1}tr.srv td{background:#fff8e1}
td.trust-ok{color:#1e7e34}td.trust-bad{color:#b3261e;font-weight:600}td.trust-note{color:#8a6d00}
figure{margin:18px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.meta td{text-align:left;white-space:normal;word-break:break-all}
.scroll{overflow-x:auto}
p.none{font-weight:600;color:#1e7e34}
span.ci{display:block;font-size:9.5px;color:#777;line-height:1.1}
td.rough span.ci{color:#b36b00;font-weight:600}
.warn-text{color:#8a6d00;font-weight:600}
.answer{background:#eef6ee;border:1px solid #7cb77c;border-radius:6px;padding:4px 16px 8px;margin:12px 0}
.answer h2{border:none;margin:.4em 0 .2em}.answer p{margin:.3em 0}.answer ul{margin:.2em 0;padding-left:1.3em}
.answer li{margin:.15em 0}
tr.best td:first-child{font-weight:700}tr.best td{box-shadow:inset 0 0 0 9999px rgba(46,160,67,.10)}
.note{font-size:10px;color:#8a6d00;display:block;white-space:normal;max-width:11em;line-height:1.15}
"""


def fmt(value: Any, spec: str) -> str:
    """A table value as text: ``d`` an integer with thousands separators, ``s`` as it is, else a float
    format spec (``.2f``); "–" for a missing value (None, NaN, pd.NA). Escape it for HTML yourself."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        if spec == "d":
            return f"{int(value):,}"
        if spec == "s":
            return str(value)
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def png_bytes(fig: Figure, **savefig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inline."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
