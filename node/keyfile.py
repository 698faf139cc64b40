"""Reading and writing key files (mode 0600) for node, watcher and CLI.

A key file holds one line, the signed-note private key
``PRIVATE+KEY+name+keyid+base64(0x01||seed)`` (see ``protocol.keys``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from protocol.errors import LocalProtocolError
from protocol.keys import SigningKey

__all__ = ["load_signing_key", "write_secret_file"]


def write_secret_file(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Create ``path`` with mode 0600 and write ``text``; the mode is set before any byte is written.

    Raises:
        LocalProtocolError(file-exists): ``path`` exists and ``overwrite`` is false.
        OSError: the file cannot be created.
    """
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as exc:
        raise LocalProtocolError("file-exists", f"{target} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return target


def load_signing_key(path: str | Path) -> SigningKey:
    """Load a signing key, refusing files that others can read or write.

    Raises:
        LocalProtocolError: ``key-file-missing``, ``key-file-permissions`` (group or
            other bits set), ``bad-key-file``.
    """
    target = Path(path)
    try:
        info = target.stat()
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LocalProtocolError("key-file-missing", f"key file {target} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalProtocolError("bad-key-file", f"cannot read key file {target}: {exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LocalProtocolError(
            "key-file-permissions",
            f"key file {target} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must be 0600 (chmod 600 {target})",
        )
    return SigningKey.from_private_line(text)
