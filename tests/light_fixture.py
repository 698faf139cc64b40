"""A corridor in memory for light-client tests and the light benchmark: two logs, watchers, bundles.

Everything is built with the real ``protocol`` functions (receipts, checkpoints, cosignatures, tlog-proof
bundles) and RFC 6962 proofs from the slow reference tree, so nothing here can agree with a bug in the
code under test by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import format_note
from protocol.policy import LogEntry, TrustPolicy, WatcherEntry
from protocol.quorum import QuorumPolicy
from protocol.receipts import Receipt, build_receipt, genesis_root
from protocol.tlog_proof import TlogProof
from tests.reference_rfc6962 import ReferenceTree

CORRIDOR = "PAK-KSA"
PAK_ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KSA_ORIGIN = "sez.gov.sa/corridor/PAK-KSA"
TIME = 1_795_000_000


def _seed(label: str) -> bytes:
    return label.encode().ljust(32, b".")[:32]


def transfer(i: int) -> dict[str, object]:
    return {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "bank-pk-1", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "bank-sa-1", "jurisdiction": "KSA"},
        "currency": "USD",
        "amount": str(100 + i),
    }


@dataclass
class Corridor:
    """PAK's log with ``n`` receipts, KSA's cosigner, and ``watchers`` bonded watchers of equal stake."""

    n: int = 5
    watchers: int = 4
    stakes: Sequence[int] | None = None
    min_watchers: int = 3
    pak: SigningKey = field(default_factory=lambda: SigningKey(PAK_ORIGIN, _seed("pak")))
    ksa: SigningKey = field(default_factory=lambda: SigningKey(KSA_ORIGIN, _seed("ksa")))

    def __post_init__(self) -> None:
        self.watcher_keys = [
            SigningKey(f"w{i + 1}.example", _seed(f"watcher-{i}")) for i in range(self.watchers)
        ]
        self.receipts: list[Receipt] = []
        prev = genesis_root(CORRIDOR, PAK_ORIGIN)
        for i in range(self.n):
            receipt = build_receipt(
                key=self.pak, corridor_id=CORRIDOR, sequence=i, timestamp=f"2026-11-27T10:00:{i % 60:02d}Z",
                prev_root=prev, kind="transfer", payload=transfer(i),
            )  # fmt: skip
            self.receipts.append(receipt)
            prev = receipt.next_root
        self.tree = ReferenceTree([r.next_root for r in self.receipts])

    def policy(
        self, *, threshold: Fraction = Fraction(2, 3), require_counterparty: bool = True
    ) -> TrustPolicy:
        stakes = self.stakes or [1_000_000] * self.watchers
        return TrustPolicy(
            corridor_id=CORRIDOR,
            logs=(
                LogEntry(key=self.pak.verifier(), cosigner=self.pak.verifier(ALG_COSIGNATURE_V1)),
                LogEntry(key=self.ksa.verifier(), cosigner=self.ksa.verifier(ALG_COSIGNATURE_V1)),
            ),
            watchers=tuple(
                WatcherEntry(key=k.verifier(ALG_COSIGNATURE_V1), stake=s)
                for k, s in zip(self.watcher_keys, stakes, strict=True)
            ),
            stake_currency="USD",
            quorum=QuorumPolicy(
                threshold=threshold, min_watchers=self.min_watchers, require_counterparty=require_counterparty
            ),
        )

    def checkpoint(
        self, size: int | None = None, *, cosigners: Sequence[int] | None = None, counterparty: bool = True
    ) -> bytes:
        """PAK's checkpoint at ``size``, cosigned by KSA and the watchers at ``cosigners`` (default all)."""
        size = self.n if size is None else size
        cp = Checkpoint(origin=PAK_ORIGIN, size=size, root=self.tree.root(size))
        note = sign_checkpoint(cp, self.pak)
        lines = [cosign(cp, self.ksa, TIME)] if counterparty else []
        chosen = range(self.watchers) if cosigners is None else cosigners
        lines += [cosign(cp, self.watcher_keys[i], TIME + i) for i in chosen]
        return format_note(add_signatures(note, lines))

    def bundle(self, index: int = 2, size: int | None = None, **kw: object) -> bytes:
        size = self.n if size is None else size
        return TlogProof(
            index=index,
            proof=tuple(self.tree.inclusion(index, size)),
            checkpoint=self.checkpoint(size, **kw),  # type: ignore[arg-type]
            extra=self.receipts[index].raw,
        ).encode()
