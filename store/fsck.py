"""Self-check of a store: recompute everything from the stored leaves (design §14).

For each log, in order:

1. every receipt 0..size-1 is present, parses as a well-formed receipt, carries
   its own sequence and origin, verifies under the registered key, and chains
   to its predecessor (``prev_root``);
2. the digest index maps each receipt's ``next_root`` back to it;
3. the MMR recomputed from the leaves equals every stored node, no node is
   missing and none is extra, and the recomputed root equals the head;
4. every stored checkpoint carries a valid log signature and equals the
   recomputed root at its size;
5. every set of orphaned receipts (``store.orphans``: a tail set aside by a
   recovery) is whole: contiguous, counted and digested as its record says.

The check reads the store only; it never repairs. A node refuses to start if
its own log fails (design §6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import mmr
from protocol.checkpoints import open_checkpoint
from protocol.errors import SezError
from protocol.receipts import Receipt, check_chain, genesis_root, verify_receipt

from .logstore import LogStore
from .orphans import check_orphans

__all__ = ["FsckReport", "LogReport", "fsck"]


@dataclass(slots=True)
class LogReport:
    """What fsck checked for one log, and what it found wrong."""

    origin: str
    corridor_id: str
    size: int = 0
    receipts_checked: int = 0
    nodes_checked: int = 0
    checkpoints_checked: int = 0
    root: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems


@dataclass(slots=True)
class FsckReport:
    """One :class:`LogReport` per log."""

    logs: list[LogReport]

    @property
    def ok(self) -> bool:
        """True when every log verified."""
        return all(log.ok for log in self.logs)


_MAX_PROBLEMS = 20
"""Stop listing a log's problems after this many: one corruption usually causes a cascade."""


def fsck(store: LogStore, *, verify_signatures: bool = True) -> FsckReport:
    """Check every log in ``store`` as described in the module docstring."""
    return FsckReport([_check_log(store, info.origin, verify_signatures) for info in store.origins()])


def _check_log(store: LogStore, origin: str, verify_signatures: bool) -> LogReport:
    info = store.origin(origin)
    head = store.head(origin)
    report = LogReport(origin=origin, corridor_id=info.corridor_id, size=head.size, root=head.root.hex())

    def problem(text: str) -> None:
        if len(report.problems) < _MAX_PROBLEMS:
            report.problems.append(text)

    checkpoint_sizes = set(store.checkpoint_sizes(origin))
    roots: dict[int, bytes] = {0: mmr.EMPTY_ROOT} if 0 in checkpoint_sizes else {}
    appender = mmr.MMRAppender()
    prev = genesis_root(info.corridor_id, origin)

    def compare(pos: int, node: bytes) -> None:
        stored = store.node(origin, pos)
        report.nodes_checked += 1
        if stored != node:
            problem(
                f"MMR node {pos}: stored {stored.hex() if stored else 'nothing'}, recomputed {node.hex()}"
            )

    receipts = store.iter_receipts(origin)
    while True:
        try:
            seq, raw = next(receipts)
        except StopIteration:
            break
        except SezError as exc:  # the store found a receipt missing below the head
            problem(f"{exc.reason}: {exc.message}")
            break
        try:
            receipt = Receipt.from_bytes(raw)
            if receipt.origin != origin:
                raise SezError("wrong-origin", f"receipt names origin {receipt.origin!r}")
            check_chain(receipt, sequence=seq, prev_root=prev, corridor_id=info.corridor_id)
            if verify_signatures:
                verify_receipt(receipt, info.key)
        except SezError as exc:
            problem(f"receipt {seq}: {exc.reason}: {exc.message}")
            break
        if store.digest_entry(receipt.next_root) != (info.id, seq):
            problem(f"receipt {seq}: digest index entry is missing or wrong")
        appender.append(mmr.hash_leaf(receipt.next_root), compare)
        prev = receipt.next_root
        report.receipts_checked += 1
        if appender.n_leaves in checkpoint_sizes:
            roots[appender.n_leaves] = appender.root()
    if report.receipts_checked != head.size:
        problem(f"head says {head.size} receipts, {report.receipts_checked} verified")
    if store.count_receipts(origin) != head.size:
        problem(f"{store.count_receipts(origin)} receipts stored for a head of {head.size}")
    if report.ok:
        if appender.root() != head.root:
            problem(f"recomputed root {appender.root().hex()} differs from the head's {head.root.hex()}")
        if head.last_next_root != prev:
            problem("head's last next_root differs from the last receipt's")
        stored_nodes = store.count_nodes(origin)
        if stored_nodes != mmr.mmr_size(head.size):
            problem(f"{stored_nodes} MMR nodes stored, {mmr.mmr_size(head.size)} expected")
    for size in sorted(checkpoint_sizes):
        report.checkpoints_checked += 1
        note = store.checkpoint(origin, size)
        try:
            cp, _ = open_checkpoint(note, info.key)
        except SezError as exc:
            problem(f"checkpoint at size {size}: {exc.reason}: {exc.message}")
            continue
        if cp.size != size:
            problem(f"checkpoint stored under size {size} says size {cp.size}")
        elif size in roots and cp.root != roots[size]:
            problem(
                f"checkpoint at size {size}: root {cp.root.hex()} differs from recomputed {roots[size].hex()}"
            )
        elif size not in roots and report.ok:
            problem(f"checkpoint at size {size} is beyond the verified log")
    for text in check_orphans(store, origin):
        problem(text)
    return report
