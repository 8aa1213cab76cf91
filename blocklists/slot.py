"""The one place the proxy's checks find the current artefact."""

from __future__ import annotations

from .store import Artefact


class ArtefactSlot:
    """Holds the artefact in use. Replaced by a single assignment on the event
    loop, between two messages, so a check sees the old or the new one whole."""

    def __init__(self) -> None:
        self.current: Artefact | None = None
        self.last_error: str | None = None
