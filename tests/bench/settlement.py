"""``python -m tests.bench settlement``: how fast a node nets a settlement window (issue 9).

    python -m tests.bench settlement [--receipts N] [--dir D]

Writes N signed transfer receipts, half in PAK's log and half in KSA's, in random directions and
currencies (amounts up to 10**30), into one fresh LMDB store (``D/settlement-store``), then measures
on that store:

* **reference**: reading every receipt of both logs from LMDB and ``json.loads`` of each: the floor
  of any netting that looks at every receipt;
* **propose**: :meth:`node.settlement.SettlementBook.propose` for the whole window (read, parse and
  check each receipt, net, sign);
* **countersign**: :meth:`~node.settlement.SettlementBook.countersign` of that proposal by the other
  party (verify the proposer's signature, recompute, compare, sign): what the counterparty does before
  it answers, so what :data:`node.settlement.SETTLE_SECONDS_PER_RECEIPT` must cover.

Each is printed as receipts per second and as a ratio to the reference; ``budget`` is the proposer's
timeout for this window divided by the measured countersign time (above 1: the counterparty answers
in time). The netted figures are checked against a plain sum of what was written. The last line is
the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.settlement import SETTLE_SECONDS_PER_RECEIPT, SETTLE_TIMEOUT, SettlementBook
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.receipts import build_receipt, genesis_root, verify_receipt
from store import LogStore

CORRIDOR = "PAK-KSA"
PAK = SigningKey("sez.gov.pk/corridor/PAK-KSA", bytes(range(32)))
KSA = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(1, 33)))
BATCH = 1000
SUMMARY_KEYS = ("receipts", "reference", "propose", "countersign", "budget", "figures_match")


def _write(store: LogStore, key: SigningKey, payloads: list[dict[str, Any]]) -> None:
    verifier = key.verifier()
    store.register_origin(key.name, CORRIDOR, verifier)

    def sign(cp: Checkpoint) -> bytes:
        return format_note(sign_checkpoint(cp, key))

    prev = genesis_root(CORRIDOR, key.name)
    for start in range(0, len(payloads), BATCH):
        batch = []
        for offset, payload in enumerate(payloads[start : start + BATCH]):
            receipt = build_receipt(
                key=key, corridor_id=CORRIDOR, sequence=start + offset, timestamp="2026-11-27T10:00:00Z",
                prev_root=prev, kind="transfer", payload=payload,
            )  # fmt: skip
            prev = receipt.next_root
            batch.append(verify_receipt(receipt, verifier))
        store.append(key.name, batch, sign=sign)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def run_settlement(*, receipts: int, directory: Path, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; print each figure with ``out`` and return the summary."""
    rnd = random.Random(12)
    logs: dict[str, list[dict[str, Any]]] = {PAK.name: [], KSA.name: []}
    sums: dict[str, list[int]] = {}
    for n in range(receipts):
        sender, receiver = rnd.choice([("PAK", "KSA"), ("KSA", "PAK"), ("PAK", "SAU"), ("SAU", "PAK")])
        currency = rnd.choice(["USD", "SAR", "PKR", "EUR"])
        amount = rnd.randrange(10**30)
        logs[rnd.choice([PAK.name, KSA.name])].append({
            "transfer_id": f"T-{n}", "sender": {"entity_id": f"a{n}", "jurisdiction": sender},
            "receiver": {"entity_id": f"b{n}", "jurisdiction": receiver}, "currency": currency,
            "amount": str(amount),
        })  # fmt: skip
        entry = sums.setdefault(currency, [0, 0])
        entry[0 if sender == "PAK" else 1] += amount
    path = directory / "settlement-store"
    shutil.rmtree(path, ignore_errors=True)
    with LogStore(path) as store:
        seconds, _ = _timed(lambda: [_write(store, key, logs[key.name]) for key in (PAK, KSA)])
        out(f"receipts: {receipts} written in {seconds:.1f} s (not measured below)")

        def final(origin: str) -> int:
            return store.head(origin).size

        pak = SettlementBook(store, CORRIDOR, PAK, counterparty_origin=KSA.name,
                             counterparty_key=KSA.verifier(), final_size=final)  # fmt: skip
        ksa = SettlementBook(store, CORRIDOR, KSA, counterparty_origin=PAK.name,
                             counterparty_key=PAK.verifier(), final_size=final)  # fmt: skip

        def reference() -> int:
            count = 0
            for key in (PAK, KSA):
                for _, raw in store.iter_receipts(key.name):
                    json.loads(raw)
                    count += 1
            return count

        ref_s, count = _timed(reference)
        assert count == receipts
        propose_s, proposal = _timed(pak.propose)
        countersign_s, cosigned = _timed(lambda: ksa.countersign(proposal.to_bytes()))
    figures = {p.currency: [p.a_to_b.gross, p.b_to_a.gross] for p in cosigned.positions}
    timeout = SETTLE_TIMEOUT + receipts * SETTLE_SECONDS_PER_RECEIPT
    summary: dict[str, Any] = {
        "receipts": receipts,
        "reference": {"seconds": ref_s, "per_s": receipts / ref_s},
        "propose": {"seconds": propose_s, "per_s": receipts / propose_s, "ratio": ref_s / propose_s},
        "countersign": {
            "seconds": countersign_s,
            "per_s": receipts / countersign_s,
            "ratio": ref_s / countersign_s,
            "us_per_receipt": countersign_s / receipts * 1e6,
        },
        "budget": {"timeout_seconds": timeout, "ratio": timeout / countersign_s},
        "figures_match": figures == sums,
    }
    out(f"reference (LMDB read + json.loads): {summary['reference']['per_s']:,.0f} receipts/s")
    for name in ("propose", "countersign"):
        item = summary[name]
        rate, ratio, seconds = item["per_s"], item["ratio"], item["seconds"]
        out(f"{name}: {rate:,.0f} receipts/s = {ratio:.2f} x reference ({seconds:.2f} s)")
    out(f"budget: proposer waits {timeout:.1f} s = {summary['budget']['ratio']:.1f} x the countersign time")
    out(f"figures match the plain sum: {summary['figures_match']}")
    out(json.dumps(summary, sort_keys=True))
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench settlement", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "sez-bench")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    summary = run_settlement(receipts=args.receipts, directory=args.dir)
    return 0 if summary["figures_match"] else 1
