"""C2SP signed notes (c2sp.org/signed-note): parse, format, sign and verify.

A signed note is a UTF-8 text ending in a newline, a blank line, then one or
more signature lines ``— <key name> <base64(key ID(4) || signature)>\\n``
(signed-note "Format", "Signatures"). Checkpoints and cosigned checkpoints
(``protocol.checkpoints``) and the ``c2sp.org/tlog-proof@v1`` bundle
(``protocol.tlog_proof``) are signed notes, so existing C2SP tooling reads ours
and we read theirs.

Theory of operation
-------------------
* :class:`SignedNote` is the value; :meth:`SignedNote.from_bytes` (also
  :func:`parse_note`) is the only decoder and :meth:`SignedNote.to_bytes` (also
  :func:`format_note`) the only encoder. The decoder accepts exactly the bytes
  the encoder produces: standard base64 *with* padding and zero trailing bits,
  no ``\\r``, no extra blank line, a newline after the last signature. So
  ``format_note(parse_note(b)) == b`` for every accepted ``b`` and one note has
  one spelling, which matters because store and gossip identify notes by digest.
* Parsing checks shape only. :func:`verify_note` then checks the lines whose
  (name, key ID) match a configured key and ignores every other line, as the
  spec requires ("Verifiers MUST ignore signatures from unknown keys, even if
  they share a name or ID (but not both) with a known key"). A line that matches
  a known key but fails to verify rejects the whole note (the spec's SHOULD,
  taken as a MUST here: a corridor never wants half-valid evidence).
* Only Ed25519 note signatures (type 0x01) are verified here. Cosignatures (type
  0x04) sign a different message and are verified by ``protocol.checkpoints``.
* A signed note carries no length framing, so this module works on whole,
  already-delimited notes (an HTTP body, one msgpack field, one file) instead of
  a ``receive_data``/``next_event`` stream: a prefix of a valid note can itself be
  a valid note with fewer signatures, so only the transport knows where one ends.

Limits (signed-note "Verifiers SHOULD apply a maximum limit to the number of
signatures ... but MUST accept at least up to 16"): :data:`MAX_SIGNATURES` and
:data:`MAX_NOTE_BYTES`. Both are checked before any base64 decoding or
signature verification, so hostile input costs O(bytes) to refuse.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import LocalProtocolError, PeerProtocolError
from .keys import ALG_ED25519, SigningKey, VerifierKey, key_id

__all__ = [
    "KEY_ID_SIZE",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "NoteSignature",
    "SignedNote",
    "format_note",
    "open_note",
    "parse_note",
    "parse_signature_lines",
    "sign_note",
    "verify_note",
    "with_signatures",
]

MAX_SIGNATURES = 100
"""Most signature lines one note may carry.

The spec requires accepting at least 16. A corridor checkpoint carries the log's
line, the counterparty node's and one per watcher (tens at most); 100 is the cap
golang.org/x/mod/sumdb/note uses, so anything Go tooling accepts we accept too,
and verifying a full note costs at most 100 Ed25519 checks (about 4 ms at the
25,000 verifies/s measured in design §3).
"""

MAX_NOTE_BYTES = 128 * 1024
"""Largest encoded note, in bytes (128 KiB).

Sized for the spec's floor of 16 signatures even if they are all post-quantum
ones ("up to nearly 5kB", about 6.7 kB once base64-encoded) from keys we do not
know and only skip, plus a checkpoint body; 100 Ed25519 lines with 255-byte key
names take under 40 kB. A corridor checkpoint is under 10 kB, so this is a
ceiling against memory abuse, not a working size.
"""

KEY_ID_SIZE = 4
"""Bytes of the key ID that prefixes every signature (signed-note "Signatures")."""

_EM_DASH_PREFIX = "\u2014 "
"""Em dash (U+2014) and a space: the start of every signature line."""


# --------------------------------------------------------------------------- helpers


_PREFIX_BYTES = len(_EM_DASH_PREFIX.encode("utf-8"))


_BAD_NAME_CHAR = re.compile("[\\s+\x00-\x1f\ud800-\udfff]")
"""What no key name may hold: a Unicode space or ``+`` (signed-note "Format": ``keys.validate_key_name``),
or a control character or lone surrogate (:func:`_has_bad_char`), in one search: it runs for every
signature line parsed."""


_CONTROL_BYTES = bytes(c for c in range(0x20) if c != 0x0A)
"""The ASCII control characters a note may not hold (all below U+0020 but newline), as bytes."""


def _has_control_byte(data: bytes) -> bool:
    """True if UTF-8 ``data`` holds an ASCII control character other than newline.

    On UTF-8 a byte below 0x20 is always that ASCII character (every byte of a multi-byte sequence
    is 0x80 or above), so deleting the forbidden bytes and comparing lengths is the same test as
    searching the decoded text for them; it runs in C at about 1 µs per kB, where a regex over the
    decoded text of a checkpoint (non-ASCII: its em dashes) took 3 to 7 µs.
    """
    return len(data.translate(None, _CONTROL_BYTES)) != len(data)


def _has_bad_char(text: str) -> bool:
    """True if ``text`` holds an ASCII control character other than newline, or a lone surrogate.

    Signed notes "MUST be valid UTF-8 and MUST NOT contain any ASCII control
    characters (those below U+0020) other than newline". DEL (U+007F) and C1
    controls are allowed, as in the Go reference implementation.

    Same answer as the search for ``[\\x00-\\x09\\x0b-\\x1f\\ud800-\\udfff]`` it replaced (a test
    compares them on every code point), at under half its cost on a checkpoint: a lone
    surrogate is exactly what the strict UTF-8 encoder refuses, and :func:`_has_control_byte`
    checks the encoded bytes.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return _has_control_byte(data)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode_canonical(text: str) -> bytes | None:
    """Decode standard padded base64, or None unless ``text`` is its canonical spelling.

    Refusing non-zero trailing bits, missing padding and embedded whitespace
    makes the decoding injective, so a note has exactly one spelling.
    ``binascii`` directly: what ``base64.b64decode(text, validate=True)`` and
    ``base64.b64encode`` call, without their argument conversions (it runs for
    every signature line).
    """
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII str
        return None
    if binascii.b2a_base64(raw, newline=False).decode("ascii") != text:
        return None
    return raw


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteSignature:
    """One signature line of a signed note: ``— <name> base64(key_id || signature)``.

    Attributes:
        name: the signer's key name (non-empty, no Unicode space, no ``+``).
        key_id: the 4-byte key ID, big-endian, as it appears on the wire.
        signature: the bytes after the key ID (64 for Ed25519 type 0x01,
            8 + 64 for a tlog-cosignature/v1 type 0x04, other lengths for key
            types we do not verify). At least one byte, as in the Go reference.

    Raises:
        LocalProtocolError(bad-signature-line): on construction with a bad field.
    """

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or _BAD_NAME_CHAR.search(self.name) is not None:
            raise LocalProtocolError("bad-signature-line", f"invalid key name {self.name!r}")
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise LocalProtocolError("bad-signature-line", "key ID must be 4 bytes")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise LocalProtocolError("bad-signature-line", "signature must be non-empty bytes")

    @property
    def key(self) -> tuple[str, bytes]:
        """(name, key ID): what identifies the signing key and its algorithm."""
        return (self.name, self.key_id)

    def to_line(self) -> str:
        """The signature line, em dash first, newline last."""
        return f"{_EM_DASH_PREFIX}{self.name} {_b64encode(self.key_id + self.signature)}\n"

    @classmethod
    def from_line(cls, line: str) -> NoteSignature:
        """Parse one signature line *without* its trailing newline.

        Raises:
            PeerProtocolError(bad-signature-line): not em dash, space, valid key
                name, space, canonical base64 of at least 5 bytes.
        """
        if not line.startswith(_EM_DASH_PREFIX):
            raise PeerProtocolError(
                "bad-signature-line",
                "signature line does not start with an em dash and a space",
                line=line[:80],
            )
        name, sep, encoded = line[len(_EM_DASH_PREFIX) :].partition(" ")
        # The constructor's name check, as a peer fault (it includes keys.validate_key_name's).
        if not sep or not name or _BAD_NAME_CHAR.search(name) is not None:
            raise PeerProtocolError(
                "bad-signature-line", "signature line has no valid key name", line=line[:80]
            )
        raw = _b64decode_canonical(encoded)
        if raw is None:
            raise PeerProtocolError(
                "bad-signature-line", "signature is not canonical standard base64", line=line[:80]
            )
        if len(raw) <= KEY_ID_SIZE:
            raise PeerProtocolError(
                "bad-signature-line", "signature is shorter than a key ID plus one byte", line=line[:80]
            )
        return cls(name=name, key_id=raw[:KEY_ID_SIZE], signature=raw[KEY_ID_SIZE:])


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedNote:
    """A C2SP signed note: a text and one or more signature lines, in wire order.

    Attributes:
        text: the signed text, including its final newline and excluding the
            separating blank line (signed-note "Format"). Non-empty, ends in
            ``\\n``, no control character other than ``\\n``. It may hold empty
            lines; the last blank line of the encoding separates text from
            signatures.
        signatures: the signature lines in the order they appear. Lines from
            unknown keys are kept (and re-emitted unchanged) so that a node can
            relay a note it only partly understands. The same (name, key ID)
            may appear more than once; :func:`verify_note` checks every such line.

    Raises:
        LocalProtocolError(bad-note | too-many-signatures | note-too-large):
            on construction with a value whose encoding :func:`parse_note` would
            refuse, so that every value round-trips.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_text(self.text, LocalProtocolError)
        if not isinstance(self.signatures, tuple) or not all(
            isinstance(sig, NoteSignature) for sig in self.signatures
        ):
            raise LocalProtocolError("bad-note", "signatures must be a tuple of NoteSignature")
        if not self.signatures:
            raise LocalProtocolError("bad-note", "a signed note needs at least one signature line")
        if len(self.signatures) > MAX_SIGNATURES:
            raise LocalProtocolError(
                "too-many-signatures",
                f"{len(self.signatures)} signatures exceed MAX_SIGNATURES={MAX_SIGNATURES}",
                count=len(self.signatures),
            )
        size = self._encoded_size()
        if size > MAX_NOTE_BYTES:
            raise LocalProtocolError(
                "note-too-large", f"note of {size} bytes exceeds MAX_NOTE_BYTES={MAX_NOTE_BYTES}", size=size
            )

    def _encoded_size(self) -> int:
        """``len(self.to_bytes())``, computed without encoding (base64 of n bytes is 4 * ceil(n / 3)).

        Checked on every construction, so on every parse; encoding each line again cost about as much
        as parsing it.
        """
        size = len(self.text.encode("utf-8")) + 1
        for sig in self.signatures:
            raw = len(sig.key_id) + len(sig.signature)
            size += _PREFIX_BYTES + len(sig.name.encode("utf-8")) + 1 + 4 * ((raw + 2) // 3) + 1
        return size

    def to_bytes(self) -> bytes:
        """The canonical encoding: text, a blank line, one line per signature (signed-note "Format")."""
        return (self.text + "\n" + "".join(sig.to_line() for sig in self.signatures)).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedNote:
        """Parse a complete signed note; see :func:`parse_note`."""
        return parse_note(data)

    def signatures_for(self, name: str, kid: bytes) -> tuple[NoteSignature, ...]:
        """The lines signed by the key named ``name`` with key ID ``kid``, in wire order."""
        return tuple(sig for sig in self.signatures if sig.name == name and sig.key_id == kid)


def _check_text(text: object, error: type[LocalProtocolError] | type[PeerProtocolError]) -> None:
    """Require a non-empty note text ending in a newline, with no forbidden character."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise error("bad-note", "note text must be a string ending in a newline")
    if _has_bad_char(text):
        raise error("bad-note-encoding", "note text holds a control character other than newline")


# --------------------------------------------------------------------------- codec


def parse_note(data: bytes) -> SignedNote:
    """Parse a complete signed note, refusing anything but the canonical encoding.

    Checks, in order (signed-note "Format"): size, UTF-8 and control characters,
    the last blank line as separator, a non-empty signature block ending in a
    newline, the number of lines, then each line's shape.

    Args:
        data: the whole note; nothing may follow the last signature line.

    Returns:
        The note, signatures in wire order (none verified).

    Raises:
        PeerProtocolError: ``note-too-large`` (over :data:`MAX_NOTE_BYTES`);
            ``bad-note-encoding`` (not UTF-8, or a control character such as
            ``\\r``); ``bad-note`` (no blank line, no signature, missing final
            newline); ``too-many-signatures`` (over :data:`MAX_SIGNATURES`);
            ``bad-signature-line`` (no em dash, bad key name, non-canonical
            base64, fewer than 5 signature bytes).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError("bad-argument", f"parse_note takes bytes, not {type(data).__name__}")
    if len(data) > MAX_NOTE_BYTES:
        raise PeerProtocolError(
            "note-too-large",
            f"note of {len(data)} bytes exceeds MAX_NOTE_BYTES={MAX_NOTE_BYTES}",
            size=len(data),
        )
    data = bytes(data)
    try:
        msg = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PeerProtocolError("bad-note-encoding", "note is not valid UTF-8", offset=exc.start) from exc
    # Decoded strictly, so no lone surrogate: only the control characters remain to refuse.
    if _has_control_byte(data):
        raise PeerProtocolError("bad-note-encoding", "note holds a control character other than newline")
    split = msg.rfind("\n\n")
    if split < 0:
        raise PeerProtocolError("bad-note", "note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block:
        raise PeerProtocolError("bad-note", "note has no signature line after its last blank line")
    if not block.endswith("\n"):
        raise PeerProtocolError("bad-note", "last signature line does not end in a newline")
    signatures = _parse_block(block)
    try:
        return SignedNote(text=text, signatures=signatures)
    except LocalProtocolError as exc:  # unreachable if the checks above are complete; never leak Local
        raise PeerProtocolError(exc.reason, exc.message, **exc.details) from exc


def _parse_block(block: str) -> tuple[NoteSignature, ...]:
    """Parse newline-terminated signature lines; ``block`` ends in ``\\n``."""
    count = block.count("\n")
    if count > MAX_SIGNATURES:
        raise PeerProtocolError(
            "too-many-signatures",
            f"{count} signature lines exceed MAX_SIGNATURES={MAX_SIGNATURES}",
            count=count,
        )
    return tuple([NoteSignature.from_line(line) for line in block[:-1].split("\n")])


def format_note(note: SignedNote) -> bytes:
    """The canonical bytes of ``note``; ``parse_note(format_note(n)) == n``."""
    return note.to_bytes()


def parse_signature_lines(data: bytes) -> tuple[NoteSignature, ...]:
    """Parse a body made only of signature lines, such as a tlog-witness add-checkpoint reply.

    c2sp.org/tlog-witness: the 200 response "MUST be a sequence of one or more
    note signature lines, each starting with the ``—`` character (U+2014) and
    ending with a newline character". Merge the result into the checkpoint with
    :func:`with_signatures` (or ``checkpoints.add_signatures``) after verifying it.

    Raises:
        PeerProtocolError: ``note-too-large``, ``bad-note-encoding``, ``bad-note``
            (empty, or no final newline), ``too-many-signatures``,
            ``bad-signature-line``.
    """
    if len(data) > MAX_NOTE_BYTES:
        raise PeerProtocolError("note-too-large", f"{len(data)} bytes exceed MAX_NOTE_BYTES", size=len(data))
    data = bytes(data)
    try:
        block = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PeerProtocolError("bad-note-encoding", "signature lines are not valid UTF-8") from exc
    if _has_control_byte(data):
        raise PeerProtocolError("bad-note-encoding", "signature lines hold a control character")
    if not block or not block.endswith("\n"):
        raise PeerProtocolError("bad-note", "expected one or more newline-terminated signature lines")
    return _parse_block(block)


# --------------------------------------------------------------------------- signing


def sign_note(text: str, key: SigningKey) -> NoteSignature:
    """Sign ``text`` with Ed25519 (signature type 0x01, signed-note "Ed25519 signatures").

    Args:
        text: the note text, ending in a newline.
        key: the signer; its name becomes the line's key name.

    Returns:
        The signature line, key ID ``SHA-256(name || 0x0A || 0x01 || public)[:4]``.

    Raises:
        LocalProtocolError(bad-note | bad-note-encoding): ``text`` is not a note text.
    """
    _check_text(text, LocalProtocolError)
    return NoteSignature(
        name=key.name,
        key_id=key_id(key.name, ALG_ED25519, key.public),
        signature=key.sign(text.encode("utf-8")),
    )


def with_signatures(note: SignedNote, signatures: Iterable[NoteSignature]) -> SignedNote:
    """``note`` with ``signatures`` appended, skipping any whose (name, key ID) it already has.

    The existing lines keep their order and bytes and the first line of a key
    wins, so merging is idempotent and a peer cannot displace a line we hold by
    sending another one for the same key. Nothing is verified here: verify new
    lines first (:func:`verify_note`, ``checkpoints.verify_cosignatures``).

    Raises:
        LocalProtocolError(too-many-signatures | note-too-large): the merged note
            would exceed the limits.
    """
    seen = {sig.key for sig in note.signatures}
    merged = list(note.signatures)
    for sig in signatures:
        if sig.key not in seen:
            seen.add(sig.key)
            merged.append(sig)
    if len(merged) == len(note.signatures):
        return note
    return SignedNote(text=note.text, signatures=tuple(merged))


# --------------------------------------------------------------------------- verification


def _index_verifiers(verifiers: Iterable[VerifierKey], alg: int) -> dict[tuple[str, bytes], VerifierKey]:
    """Map (name, key ID) to key; refuse keys of another type and ambiguous duplicates.

    Two *different* keys with one name and key ID (golang.org/x/mod/sumdb/note's
    "ambiguous key") mean the configuration is broken, a local fault.
    """
    index: dict[tuple[str, bytes], VerifierKey] = {}
    for key in verifiers:
        if key.alg != alg:
            raise LocalProtocolError(
                "unsupported-key-type", f"key {key.name!r} has type 0x{key.alg:02x}, expected 0x{alg:02x}"
            )
        ident = (key.name, key.key_id)
        other = index.setdefault(ident, key)
        if other != key:
            raise LocalProtocolError(
                "ambiguous-key", f"two different keys named {key.name!r} share key ID {ident[1].hex()}"
            )
    return index


def verify_note(note: SignedNote, verifiers: Iterable[VerifierKey]) -> list[VerifierKey]:
    """Verify the Ed25519 lines of known keys; return the keys that signed ``note``.

    Implements signed-note "Signatures": a line counts for a key only if both its
    key name and key ID match; every other line is ignored, even one sharing a
    name or ID with a known key. Every line of a known key is verified.

    Args:
        note: a parsed note.
        verifiers: trusted type-0x01 keys.

    Returns:
        The known keys with a valid signature, in order of first appearance, each
        once. Empty if no known key signed: the caller MUST then reject the note
        (or use :func:`open_note`, which does).

    Raises:
        PeerProtocolError(bad-signature): a line of a known key does not verify.
        LocalProtocolError(unsupported-key-type | ambiguous-key): bad ``verifiers``.
    """
    index = _index_verifiers(verifiers, ALG_ED25519)
    message = note.text.encode("utf-8")
    verified: list[VerifierKey] = []
    for sig in note.signatures:
        key = index.get(sig.key)
        if key is None:
            continue  # unknown key: ignored, never verified
        if not key.verify(message, sig.signature):
            raise PeerProtocolError(
                "bad-signature",
                f"signature by known key {sig.name}+{sig.key_id.hex()} does not verify",
                name=sig.name,
                key_id=sig.key_id.hex(),
            )
        if key not in verified:
            verified.append(key)
    return verified


def open_note(data: bytes, verifiers: Iterable[VerifierKey]) -> tuple[SignedNote, list[VerifierKey]]:
    """Parse and verify ``data``, requiring at least one known key's valid signature.

    Signed-note "Signatures": "If no signature from a known key verifies
    successfully, clients MUST reject the note."

    Raises:
        PeerProtocolError: any :func:`parse_note` reason, ``bad-signature``, or
            ``unverified-note`` when no known key signed.
    """
    note = parse_note(data)
    keys = verify_note(note, verifiers)
    if not keys:
        raise PeerProtocolError("unverified-note", "no known key signed the note")
    return note, keys
