"""Slashing protection (design §6-§7): what this watcher last cosigned per origin, and its evidence.

One record per origin in the store's witness table (``LogStore.set_witness_state``)::

    {"size": int, "root": bytes, "note": bytes}     # the signed checkpoint last cosigned

and two histories per origin that are never truncated (``LogStore.witness_history``):

* ``cosigned``: every signed checkpoint note this watcher cosigned, oldest first;
* ``evidence``: every validly signed checkpoint it refused, as msgpack ``{"note", "reason"}``.

The record and the new ``cosigned`` item are written in one committed LMDB transaction before a
cosignature leaves the process, and the record only ever moves forward:
:meth:`Protection.commit_cosigned` refuses a smaller tree, or another root at the same size,
whatever the caller believed.

Export format (``sez-watcher protection export``), a JSON object::

    {"format": "sez.watcher.protection/v1",
     "watcher": "<the watcher's type-0x04 cosigner vkey>",
     "logs": {"<origin>": {"size": 12, "root": "<hex>", "note": "<checkpoint note text>",
                           "cosigned": ["<note text>", ...],                 # optional
                           "evidence": [{"note": "<note text>", "reason": "..."}, ...]}}}  # optional

Import refuses, with the origin named, any record older than the one held (a smaller size, or a
different root at the same size), a document of another watcher key, and malformed entries. All
entries are checked before the first is written, so a refused import changes nothing. Imported
histories are merged into the ones held (an item already held is not kept twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgpack

from protocol.checkpoints import Checkpoint, open_checkpoint, parse_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import VerifierKey
from store import LogStore

__all__ = ["COSIGNED", "EVIDENCE", "EXPORT_FORMAT", "Protection", "ProtectionError"]

EXPORT_FORMAT: Final = "sez.watcher.protection/v1"
COSIGNED: Final = "cosigned"
"""History kind: the signed checkpoint notes cosigned."""
EVIDENCE: Final = "evidence"
"""History kind: msgpack ``{"note", "reason"}`` of validly signed checkpoints refused."""


class ProtectionError(LocalProtocolError):
    """A protection record would move backwards, or an export document is malformed."""

    def __init__(self, reason: str, message: str, **extra: Any) -> None:
        super().__init__(reason, message, **extra)


def _evidence_item(note: bytes, reason: str) -> bytes:
    packed: bytes = msgpack.packb({"note": note, "reason": reason}, use_bin_type=True)
    return packed


def _is_evidence_entry(item: object) -> bool:
    return (
        isinstance(item, dict) and isinstance(item.get("note"), str) and isinstance(item.get("reason"), str)
    )


def _checkpoint_of(record: Mapping[str, Any], origin: str) -> Checkpoint:
    return Checkpoint(origin=origin, size=int(record["size"]), root=bytes(record["root"]))


class Protection:
    """The protection records of one watcher in ``store`` (sync: every method is one LMDB call)."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def record(self, origin: str) -> dict[str, Any] | None:
        """The stored record of ``origin`` (None: never cosigned, no evidence)."""
        return self.store.witness_state(origin)

    def last(self, origin: str) -> Checkpoint | None:
        """The checkpoint last cosigned for ``origin`` (None: never)."""
        record = self.record(origin)
        if record is None or "size" not in record:
            return None
        return _checkpoint_of(record, origin)

    def last_note(self, origin: str) -> bytes | None:
        """The signed checkpoint note last cosigned for ``origin``."""
        record = self.record(origin)
        return None if record is None or "note" not in record else bytes(record["note"])

    @staticmethod
    def _check_forward(origin: str, held: Checkpoint | None, new: Checkpoint) -> bool:
        """True if ``new`` moves the record forward, False if it is the one held; raise if older."""
        if held is None:
            return True
        if new.size < held.size:
            raise ProtectionError(
                "protection-rollback",
                f"{origin}: size {new.size} is smaller than the cosigned size {held.size}",
                origin=origin,
            )
        if new.size == held.size:
            if new.root != held.root:
                raise ProtectionError(
                    "protection-conflict",
                    f"{origin}: a different root at the cosigned size {new.size}",
                    origin=origin,
                )
            return False
        return True

    def commit_cosigned(self, cp: Checkpoint, note: bytes) -> None:
        """Durably record that ``cp`` (signed ``note``) is being cosigned; call before releasing it.

        Recording the checkpoint already held is a no-op.

        Raises:
            ProtectionError: ``cp`` is older than the record (the caller's check raced or is wrong).
        """
        record = self._advanced(cp, note)
        if record is not None:
            self.store.set_witness_state(cp.origin, record, [(COSIGNED, note)])

    def _advanced(self, cp: Checkpoint, note: bytes) -> dict[str, Any] | None:
        """The record of ``cp.origin`` moved forward to ``cp`` (None if it already holds ``cp``)."""
        record = self.record(cp.origin) or {}
        held = _checkpoint_of(record, cp.origin) if "size" in record else None
        if not self._check_forward(cp.origin, held, cp):
            return None
        record.update({"size": cp.size, "root": cp.root, "note": note})
        return record

    def keep_evidence(self, origin: str, note: bytes, reason: str) -> bool:
        """Durably keep a validly signed checkpoint this watcher refused; False if already kept.

        The same note refused again for another reason is not kept twice.
        """
        if any(item["note"] == note for item in self.evidence(origin)):
            return False
        return self.store.add_witness_history(origin, EVIDENCE, _evidence_item(note, reason))

    def evidence(self, origin: str) -> list[dict[str, Any]]:
        """Every piece of evidence kept for ``origin``, oldest first: ``{"note", "reason"}``."""
        items = (msgpack.unpackb(raw) for raw in self.store.witness_history(origin, EVIDENCE))
        return [{"note": bytes(i["note"]), "reason": str(i["reason"])} for i in items]

    def cosigned_history(self, origin: str) -> list[bytes]:
        """Every checkpoint note cosigned for ``origin``, oldest first."""
        return self.store.witness_history(origin, COSIGNED)

    # ---------------------------------------------------------- export / import

    def export(self, watcher: VerifierKey, origins: list[str]) -> dict[str, Any]:
        """The export document (module docstring) for ``origins`` that have a cosigned record."""
        logs: dict[str, Any] = {}
        for origin in sorted(origins):
            record = self.record(origin)
            if record is None or "size" not in record:
                continue
            logs[origin] = {
                "size": int(record["size"]),
                "root": bytes(record["root"]).hex(),
                "note": bytes(record["note"]).decode("utf-8"),
                "cosigned": [note.decode("utf-8") for note in self.cosigned_history(origin)],
                "evidence": [
                    {"note": item["note"].decode("utf-8"), "reason": item["reason"]}
                    for item in self.evidence(origin)
                ],
            }
        return {"format": EXPORT_FORMAT, "watcher": watcher.to_vkey(), "logs": logs}

    def import_(
        self, document: object, watcher: VerifierKey, log_keys: Mapping[str, VerifierKey] | None = None
    ) -> list[str]:
        """Import an export document; return the origins whose record moved forward.

        Every entry is checked (format, watcher key, shape, the note matching size and root, the
        log signature when ``log_keys`` knows the origin, and not older than the record held)
        before anything is written.

        Raises:
            ProtectionError: ``bad-protection-file`` or ``protection-rollback`` /
                ``protection-conflict``, naming the origin; nothing is written then.
        """
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise ProtectionError("bad-protection-file", f"not a {EXPORT_FORMAT} document")
        if document.get("watcher") != watcher.to_vkey():
            raise ProtectionError(
                "bad-protection-file",
                f"the document is for watcher {document.get('watcher')!r}, not {watcher.to_vkey()!r}",
            )
        logs = document.get("logs")
        if not isinstance(logs, dict):
            raise ProtectionError("bad-protection-file", "logs must be an object of origin -> record")
        updates: list[tuple[Checkpoint, bytes]] = []
        history: dict[str, list[tuple[str, bytes]]] = {}
        for origin, entry in sorted(logs.items()):
            cp, note = self._parse_entry(origin, entry, log_keys or {})
            if self._check_forward(origin, self.last(origin), cp):
                updates.append((cp, note))
            history[origin] = self._parse_history(origin, entry)
        records = {
            cp.origin: record for cp, note in updates if (record := self._advanced(cp, note)) is not None
        }
        for cp, note in updates:  # the record's own note is part of its cosigned history
            if (COSIGNED, note) not in history[cp.origin]:
                history[cp.origin].append((COSIGNED, note))
        # Every origin's record and history in one write transaction: all or none.
        self.store.set_witness_states(records, history)
        return [cp.origin for cp, _ in updates]

    def _parse_history(self, origin: str, entry: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """The ``cosigned`` and ``evidence`` items of an export entry not already held."""
        where = f"logs[{origin!r}]"
        cosigned, evidence = entry.get("cosigned", []), entry.get("evidence", [])
        if not isinstance(cosigned, list) or not all(isinstance(text, str) for text in cosigned):
            raise ProtectionError("bad-protection-file", f"{where}.cosigned must be a list of notes")
        if not isinstance(evidence, list) or not all(
            isinstance(item, dict)
            and isinstance(item.get("note"), str)
            and isinstance(item.get("reason"), str)
            for item in evidence
        ):
            raise ProtectionError(
                "bad-protection-file", f"{where}.evidence must be a list of {{note, reason}}"
            )
        held_cosigned = set(self.cosigned_history(origin))
        held_evidence = {item["note"] for item in self.evidence(origin)}
        items: list[tuple[str, bytes]] = []
        for text in cosigned:
            note = text.encode("utf-8")
            try:
                cp = parse_checkpoint(note)[0]
            except PeerProtocolError as exc:
                raise ProtectionError(
                    "bad-protection-file", f"{where}.cosigned: {exc.reason}: {exc.message}"
                ) from exc
            if cp.origin != origin:
                raise ProtectionError("bad-protection-file", f"{where}.cosigned holds a note of {cp.origin}")
            if note not in held_cosigned:
                held_cosigned.add(note)
                items.append((COSIGNED, note))
        for item in evidence:
            note = item["note"].encode("utf-8")
            if note not in held_evidence:
                held_evidence.add(note)
                items.append((EVIDENCE, _evidence_item(note, item["reason"])))
        return items

    @staticmethod
    def _parse_entry(
        origin: str, entry: object, log_keys: Mapping[str, VerifierKey]
    ) -> tuple[Checkpoint, bytes]:
        where = f"logs[{origin!r}]"
        if not isinstance(entry, dict):
            raise ProtectionError("bad-protection-file", f"{where} must be an object")
        size, root, text = entry.get("size"), entry.get("root"), entry.get("note")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtectionError("bad-protection-file", f"{where}.size must be a non-negative integer")
        if not isinstance(root, str) or not isinstance(text, str):
            raise ProtectionError("bad-protection-file", f"{where}: root and note must be strings")
        try:
            root_bytes = bytes.fromhex(root)
        except ValueError as exc:
            raise ProtectionError("bad-protection-file", f"{where}.root is not hex") from exc
        note = text.encode("utf-8")
        try:
            key = log_keys.get(origin)
            cp = open_checkpoint(note, key)[0] if key is not None else parse_checkpoint(note)[0]
        except PeerProtocolError as exc:
            raise ProtectionError(
                "bad-protection-file", f"{where}.note: {exc.reason}: {exc.message}"
            ) from exc
        if (cp.origin, cp.size, cp.root) != (origin, size, root_bytes):
            raise ProtectionError(
                "bad-protection-file", f"{where}: the note does not match origin, size and root"
            )
        return cp, note
