"""Documents exchanged between processes (nodes over Redis, workers over the
worker link) are JSON objects with a format number ``v``: a reader refuses
any other format whole, so nothing is ever applied in part."""

from __future__ import annotations

import json
from typing import Any


def load_versioned(data: bytes, version: int, what: str) -> dict[str, Any]:
    """The object in ``data`` if it is JSON with ``"v": version``; else
    ValueError naming ``what``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != version:
        raise ValueError(f"not format-{version} {what}")
    return doc
