"""The node's libp2p identity: an Ed25519 key pair kept in a file of mode 0600 (design §13).

The file holds the private key in libp2p's protobuf encoding (``PrivateKey.serialize()``), the
format ``libp2p.identity_utils.save_identity`` writes, so either tool can read the other's files.
We write it ourselves rather than through ``save_identity`` because that helper silently
truncates an existing file: overwriting a node's identity changes its peer id, which every
corridor and watcher configuration names, so it must be an explicit choice.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.identity_utils import load_identity as _libp2p_load_identity
from libp2p.peer.id import ID

from protocol.errors import LocalProtocolError

__all__ = [
    "generate_identity",
    "load_identity",
    "load_or_create_identity",
    "parse_peer_id",
    "peer_id_of",
    "save_identity",
]


_MULTIHASH_IDENTITY = 0x00
_MULTIHASH_SHA256 = 0x12


def generate_identity() -> KeyPair:
    """Return a fresh Ed25519 key pair from the operating system's random source."""
    return create_new_key_pair()


def peer_id_of(key_pair: KeyPair) -> str:
    """Return the base58 peer id (``12D3KooW...``) that ``key_pair`` proves ownership of."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


def parse_peer_id(text: str) -> ID:
    """Parse a base58 peer id.

    Raises:
        LocalProtocolError(bad-peer-id): ``text`` is not a valid peer id.
    """
    try:
        peer_id = ID.from_base58(text)
    except ValueError as exc:
        raise LocalProtocolError("bad-peer-id", f"{text!r} is not base58", peer_id=text) from exc
    raw = peer_id.to_bytes()
    # A peer id is a multihash: <code> <length> <digest>, with code 0x00 (identity: the public key
    # itself, as for Ed25519) or 0x12 (SHA-256 of a larger key), both lengths below 128.
    if not (
        len(raw) >= 2
        and raw[1] < 0x80
        and len(raw) == 2 + raw[1]
        and ((raw[0] == _MULTIHASH_SHA256 and raw[1] == 32) or raw[0] == _MULTIHASH_IDENTITY)
    ):
        raise LocalProtocolError("bad-peer-id", f"{text!r} is not a libp2p peer id", peer_id=text)
    if raw[0] == _MULTIHASH_IDENTITY and peer_id.extract_public_key() is None:
        raise LocalProtocolError("bad-peer-id", f"{text!r} embeds no valid public key", peer_id=text)
    if peer_id.to_base58() != text:
        raise LocalProtocolError("bad-peer-id", f"{text!r} is not a canonical peer id", peer_id=text)
    return peer_id


def save_identity(key_pair: KeyPair, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``key_pair``'s private key to ``path``; the file is created with mode 0600.

    The mode is set at creation (``os.open(..., 0o600)``) and again with ``fchmod`` (the umask
    cannot widen it, an overwritten file keeps no old bits), before any byte is written.

    Raises:
        LocalProtocolError(file-exists): ``path`` exists and ``overwrite`` is false.
        OSError: the file cannot be created or written.
    """
    target = Path(path)
    data = key_pair.private_key.serialize()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as exc:
        raise LocalProtocolError(
            "file-exists", f"{target} exists; refusing to overwrite a node identity", path=str(target)
        ) from exc
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def load_identity(path: str | Path) -> KeyPair:
    """Load an Ed25519 identity, refusing files that group or others can access.

    Raises:
        LocalProtocolError: ``key-file-missing``; ``key-file-permissions`` (group or other bits
            set); ``bad-key-file`` (unreadable, not a libp2p private key, or not Ed25519).
    """
    target = Path(path)
    try:
        info = target.stat()
    except FileNotFoundError as exc:
        raise LocalProtocolError(
            "key-file-missing", f"identity file {target} does not exist", path=str(target)
        ) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LocalProtocolError(
            "key-file-permissions",
            f"identity file {target} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must be 0600 (chmod 600 {target})",
            path=str(target),
        )
    try:
        key_pair = _libp2p_load_identity(target)
    except (OSError, ValueError) as exc:
        raise LocalProtocolError(
            "bad-key-file", f"cannot load identity from {target}: {exc}", path=str(target)
        ) from exc
    if key_pair.private_key.get_type() != KeyType.Ed25519:
        raise LocalProtocolError(
            "bad-key-file",
            f"identity in {target} is a {key_pair.private_key.get_type().name} key; sez-node uses Ed25519",
            path=str(target),
        )
    return key_pair


def load_or_create_identity(path: str | Path) -> KeyPair:
    """Load the identity at ``path``, creating it (mode 0600) first if the file does not exist.

    Creation uses ``O_EXCL``, so two processes racing on the same path cannot both create a key:
    the loser loads the winner's.

    Raises:
        LocalProtocolError: as :func:`load_identity`.
        OSError: the file cannot be created.
    """
    target = Path(path)
    if not target.exists():
        try:
            save_identity(generate_identity(), target)
        except LocalProtocolError as exc:
            if exc.reason != "file-exists":
                raise
    return load_identity(target)
