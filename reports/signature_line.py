"""The report header's line naming the signature a run sent to and how its inputs were filled."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def signature_text(meta: Mapping[str, Any]) -> str | None:
    """e.g. ``signature serving_default: pixels float32 [-1,96,96,3] image 0:1; threshold float32 [-1] values 0:1``.

    None for runs recorded before meta.json held a ``signature``.
    """
    signature = meta.get("signature")
    if not isinstance(signature, Mapping):
        return None
    described = signature.get("describe") or []
    if not described:
        return None
    return ("signatures " if len(described) > 1 else "signature ") + " | ".join(str(d) for d in described)


def signature_html(meta: Mapping[str, Any]) -> str:
    text = signature_text(meta)
    return f'<p class="sub" id="signature">{html.escape(text)}</p>' if text else ""
