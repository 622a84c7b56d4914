"""Errors a handler raises to answer with a given status, as Go's http.Error would."""

from __future__ import annotations


class HTTPError(Exception):
    """Answer `status` with `message` as a text/plain body (a newline is appended, as http.Error does)."""

    def __init__(self, status: int, message: str = "", headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
