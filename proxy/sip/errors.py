"""The one error type of the SIP core."""

from __future__ import annotations


class SipParseError(Exception):
    """Raised for any input the core will not accept.

    ``status`` is the response a server should send if it can (400, 413, 416,
    420, 483, 505, ...). ``headers`` carries the header fields that were lexed
    before the problem was found, so a caller can still build an error
    response when the top Via is usable; it is empty when the start line or
    the header block itself could not be read.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        headers: tuple[tuple[str, str, str], ...] = (),
        is_request: bool = False,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.is_request = is_request
