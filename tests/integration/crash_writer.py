"""Crash-safety helper: append signed batches to a store forever, acknowledging each commit on stdout.

Run by tests/integration/test_crash_safety.py, which kills it with SIGKILL at random moments::

    python crash_writer.py DATA_DIR SEED_HEX RNG_SEED MAX_BATCH

* ``DATA_DIR``: the store (created if missing); the log is re-registered on every start (idempotent).
* ``SEED_HEX``: the 32-byte Ed25519 seed of the log key (name = the origin), so that the test can
  verify what this process signed.
* ``RNG_SEED``: seeds the batch sizes, 1..``MAX_BATCH``.

Protocol on stdout, one line each, flushed at once:

* ``READY <size> <root-hex>``: the store is open and the log's head was read; appending resumes from it.
* ``ACK <size> <root-hex>``: printed only after ``LogStore.append`` returned, i.e. after the batch and
  its signed checkpoint committed (the acknowledgement of design §14).
"""

from __future__ import annotations

import random
import sys

from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.receipts import build_receipt, verify_receipt
from store import LogStore

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
CORRIDOR = "PAK-KSA"
TIMESTAMP = "2026-11-27T10:00:00Z"


def main(argv: list[str]) -> int:
    data_dir, seed_hex, rng_seed, max_batch = argv[1], argv[2], int(argv[3]), int(argv[4])
    key = SigningKey(ORIGIN, bytes.fromhex(seed_hex))
    verifier = key.verifier()
    rng = random.Random(rng_seed)

    def sign(cp: Checkpoint) -> bytes:
        return format_note(sign_checkpoint(cp, key))

    with LogStore(data_dir) as store:
        store.register_origin(ORIGIN, CORRIDOR, verifier)
        head = store.head(ORIGIN)
        out = sys.stdout
        out.write(f"READY {head.size} {head.root.hex()}\n")
        out.flush()
        seq, prev = head.size, head.last_next_root
        while True:
            batch = []
            for _ in range(rng.randint(1, max_batch)):
                receipt = build_receipt(
                    key=key,
                    corridor_id=CORRIDOR,
                    sequence=seq,
                    timestamp=TIMESTAMP,
                    prev_root=prev,
                    kind="transfer",
                    payload={
                        "transfer_id": f"crash-{seq}",
                        "sender": {"entity_id": "pk-bank-1", "jurisdiction": "PAK"},
                        "receiver": {"entity_id": "sa-bank-2", "jurisdiction": "SAU"},
                        "currency": "PKR",
                        "amount": str(seq),
                    },
                )
                batch.append(verify_receipt(receipt, verifier))
                seq, prev = seq + 1, receipt.next_root
            result = store.append(ORIGIN, batch, sign=sign)
            out.write(f"ACK {result.head.size} {result.head.root.hex()}\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
