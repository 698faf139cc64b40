"""The one rule for files that hold secrets (signing keys, libp2p identities, the API token).

A secret file must be a regular file that neither group nor others can read, write or execute (mode
0600 or stricter): a key that another local user can read is a key that user holds. The loaders
(``node.keyfile``, ``node.p2p.identity``) apply the same rule when they read; :func:`require_private`
lets a configuration loader apply it up front, so a node or watcher with a loose file refuses to start
before it opens its store or binds a port, with an error that names the file and the fix.
"""

from __future__ import annotations

import stat
from pathlib import Path

from protocol.errors import LocalProtocolError

__all__ = ["require_private"]


def require_private(path: Path, what: str) -> None:
    """Refuse ``path`` if group or other permission bits are set, or if it is not a regular file.

    Args:
        path: the file; it must exist (the caller decides whether a missing file is an error).
        what: what the file holds, for the message (``"API token file"``).

    Raises:
        LocalProtocolError: ``key-file-permissions`` (with the mode, the file and ``chmod 600``);
            ``bad-key-file`` (not a regular file); ``key-file-missing`` (no such file).
    """
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise LocalProtocolError("key-file-missing", f"{what} {path} does not exist", path=str(path)) from exc
    except OSError as exc:
        raise LocalProtocolError("bad-key-file", f"cannot stat {what} {path}: {exc}", path=str(path)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise LocalProtocolError("bad-key-file", f"{what} {path} is not a regular file", path=str(path))
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LocalProtocolError(
            "key-file-permissions",
            f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must not be readable by group or others (chmod 600 {path})",
            path=str(path),
        )
