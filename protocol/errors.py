"""Error types of sez-node, classified by whose fault they are.

Every error carries a stable ``reason`` code (``bad-signature``, ``seq-gap``,
``root-mismatch``, ...) that becomes the RFC 7807 problem ``type`` suffix and a
metrics label, plus the offending values in ``details``.

* :class:`PeerProtocolError`: the bytes we received are wrong. Reject the
  gossip, penalise the peer, answer HTTP 4xx.
* :class:`LocalProtocolError`: our caller (or our own code) misused an API.
* Storage and I/O failures are never a peer's fault; they are raised as
  :class:`StoreError` from ``store`` or plain ``OSError``.

Conversion between the two protocol types happens in exactly one place per
entry point, with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LocalProtocolError",
    "PeerProtocolError",
    "RootMismatchError",
    "SezError",
]


class SezError(Exception):
    """Base class of every sez-node error.

    Args:
        reason: a short, stable, kebab-case code naming the failure.
        message: a human-readable sentence.
        **details: offending values (expected/got, index, ...), JSON-friendly.
    """

    status_hint: int = 400

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = details


class PeerProtocolError(SezError):
    """The data we were given is invalid: bad signature, bad encoding, wrong order..."""


class LocalProtocolError(SezError):
    """The caller asked for something impossible (bad index, unknown origin, wrong key)."""


class RootMismatchError(PeerProtocolError):
    """A proof computed a root different from the one it was checked against."""

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        super().__init__(
            "root-mismatch",
            f"calculated root {calculated.hex()} does not match expected root {expected.hex()}",
            expected=expected.hex(),
            calculated=calculated.hex(),
        )
        self.expected = expected
        self.calculated = calculated
