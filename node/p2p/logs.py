"""Route py-libp2p's logging into ours: one line per record, expected conditions quietened.

py-libp2p 0.8.1 configures its own logging at import (``libp2p.utils.logging.setup_logging``):
without ``LIBP2P_DEBUG`` it clears the handlers of the ``libp2p`` logger, sets it to WARNING and
sets ``propagate=False``, so its records reach only Python's last-resort stderr handler. It also
logs expected network conditions (a peer refusing us, a stream the peer reset) at WARNING or
ERROR, often with multi-line dumps or tracebacks, and ``libp2p.network.auto_connector`` sets its
own level to INFO at import (it logs its state every cycle).

:func:`configure_libp2p_logging` installs one handler on the ``libp2p`` logger that

* demotes records of known-noisy sub-loggers to a cap (:data:`DEFAULT_LEVEL_CAPS`),
* drops records below the configured level,
* flattens the message (and any traceback, reduced to its exception and innermost frame) to one
  line, and
* hands the record to the root logger's handlers, keeping its ``libp2p.*`` name.

If ``LIBP2P_DEBUG`` is set the caller asked for libp2p's own debug logging; the function then
leaves libp2p's configuration alone.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Mapping

import libp2p  # noqa: F401  (importing it runs libp2p's setup_logging, which ours must follow)

__all__ = ["DEFAULT_LEVEL_CAPS", "configure_libp2p_logging"]

#: Highest level at which each noisy libp2p sub-logger may reach our logs. The conditions these
#: loggers report at WARNING/ERROR are expected on a network (refused or dropped peers, streams
#: reset by the peer, peers without a protocol); our own layer logs what matters with context.
DEFAULT_LEVEL_CAPS: Mapping[str, int] = {
    # "MultiselectClient handshake: read failed" (ERROR) whenever a peer closes during negotiation,
    # e.g. when it refuses us by allowlist.
    "libp2p.protocol_muxer": logging.INFO,
    # "[ADDCONN_FAIL] ... <traceback>" (WARNING) when a connection dies while being registered.
    "libp2p.network.swarm": logging.INFO,
    # "Failed to open stream to peer ...:\n  Error: ...\n  Protocols: ..." (ERROR, 7 lines).
    "libp2p.host.basic_host": logging.INFO,
    # Auto-connector state every cycle (INFO, level forced at import).
    "libp2p.network.auto_connector": logging.DEBUG,
    # Connection/stream teardown chatter.
    "libp2p.network.connection": logging.INFO,
    "libp2p.network.stream": logging.DEBUG,
    "libp2p.stream_muxer": logging.INFO,
    "libp2p.utils.connection_shutdown": logging.DEBUG,
    # "Failed to open TCP stream: all attempts to connect ... failed" (ERROR) for every dial of a
    # peer that is down; our re-dial loop logs it once with the peer id and backoff.
    "libp2p.transport": logging.INFO,
    # "Received an invalid-signed-record" and similar per-RPC complaints from peers.
    "libp2p.pubsub.pubsub": logging.WARNING,
}

_HANDLER_NAME = "sez-node-libp2p-forwarder"


class _OneLineForwarder(logging.Handler):
    """Flatten a libp2p record to one line and pass it to the root logger's handlers."""

    def __init__(self, level: int, caps: Mapping[str, int]) -> None:
        super().__init__(logging.NOTSET)
        self.threshold = level
        # Longest prefix first, so "libp2p.network.swarm" wins over "libp2p.network".
        self.caps = sorted(caps.items(), key=lambda item: len(item[0]), reverse=True)
        self.set_name(_HANDLER_NAME)

    def _cap_for(self, name: str) -> int | None:
        for prefix, cap in self.caps:
            if name == prefix or name.startswith(prefix + "."):
                return cap
        return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            cap = self._cap_for(record.name)
            if cap is not None and record.levelno > cap:
                record.levelno = cap
                record.levelname = logging.getLevelName(cap)
            if record.levelno < self.threshold:
                return
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += " [" + _one_line_exception(record.exc_info[1]) + "]"
            record.msg = " | ".join(part.strip() for part in text.splitlines() if part.strip())
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
            logging.getLogger().handle(record)
        except Exception:  # a logging failure must never reach libp2p's tasks
            self.handleError(record)


def _one_line_exception(exc: BaseException) -> str:
    """``Type: message @ file:line`` of the innermost frame."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" @ {os.path.basename(last.filename)}:{last.lineno}"
    message = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {message}{where}"


def configure_libp2p_logging(level: int = logging.WARNING, *, caps: Mapping[str, int] | None = None) -> None:
    """Send the ``libp2p`` logger's records to our root handlers, one line each.

    Idempotent: calling it again replaces the previous configuration.

    Args:
        level: records below this level (after capping) are dropped. WARNING by default.
        caps: per-logger-prefix maximum level; defaults to :data:`DEFAULT_LEVEL_CAPS`.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    lib = logging.getLogger("libp2p")
    for handler in list(lib.handlers):
        lib.removeHandler(handler)
    lib.addHandler(_OneLineForwarder(level, DEFAULT_LEVEL_CAPS if caps is None else caps))
    lib.propagate = False
    # Records are created only for loggers enabled at the lowest level that could pass a cap.
    lib.setLevel(level)
    # auto_connector forces INFO on itself at import; make it inherit like every other logger.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.NOTSET)
