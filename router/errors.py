"""Errors that carry a short reason, safe to log and to store in the routing log."""

from __future__ import annotations


class ReasonError(Exception):
    """A dependency gave no usable answer; `reason` is short and holds no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
