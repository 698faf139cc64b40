"""Clock-skew scenario: KSA's wall clock runs ``skew`` seconds ahead (or behind) of PAK's.

KSA runs under :mod:`tests.faults.skewed_node` (its process's wall clock offset; monotonic clocks
untouched). Checked:

1. both nodes take transfers; the network converges (replicas complete, both logs cosigned by the
   counterparty and quorum-final): receipts are accepted and replicated whatever the timestamps,
   because no ingest rule compares a receipt's time with the receiver's clock;
2. the skew is real: KSA's receipts carry timestamps ``skew`` seconds off PAK's clock (within
   ``TOLERANCE``), and so do KSA's cosignature times on PAK's checkpoint;
3. evidence age checks with skewed material: ``log-equivocation`` evidence built from a receipt KSA
   really wrote and a conflicting one signed with KSA's key (what a forking KSA would produce) is
   dated by KSA's clock. An honest verifier (``protocol.evidence.verify_evidence`` with PAK's ``now``
   and the default ``max_clock_skew`` of 300 s) refuses it as ``evidence-from-future`` when KSA runs
   more than 300 s ahead and accepts it otherwise; with a verifier clock equal to KSA's it is
   accepted either way (the age check, not the evidence, decided);
4. every acknowledged receipt is served afterwards, the nodes stop cleanly, fsck is clean.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from protocol.checkpoints import open_checkpoint, verify_cosignatures
from protocol.errors import PeerProtocolError
from protocol.evidence import log_equivocation_from_receipts, verify_evidence
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.receipts import build_receipt
from protocol.stake import SlashPolicy
from tests.faults.harness import (
    CORRIDOR,
    AckLoad,
    Tally,
    lost_receipts,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.netharness import make_network, transfer

__all__ = ["run_skew"]

TOLERANCE = 30.0
"""Seconds between reading a timestamp and the clocks compared (2-core machine under load)."""
EVIDENCE_WINDOW = 86400


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def run_skew(base: Path, *, skew: float = 600.0, transfers: float = 3.0, log: Any = print) -> Tally:
    """Run the clock-skew scenario under ``base`` with KSA ``skew`` seconds off; return its tally."""
    tally = Tally("clock-skew")
    network = make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=50)
    network.specs["KSA"].launcher = [sys.executable, "-m", "tests.faults.skewed_node", str(skew)]
    loads: list[AckLoad] = []
    try:
        network.start()
        wait_connected(network)
        pak, ksa = network["PAK"], network["KSA"]
        tally.faults = 1
        loads = [AckLoad(network[n], f"{n}-skew", pause=0.01).start() for n in ("PAK", "KSA")]
        time.sleep(transfers)
        for load in loads:
            load.stop()
        tally.converge_seconds.append(wait_converged(network))
        for load in loads:
            tally.acknowledged += len(load.acked)
            missing = lost_receipts(load.node, load.acked)
            tally.lost += len(missing)
            if missing:
                tally.failures.append(f"{load.node.name} lost {missing[:5]}")
        # 2. the skew shows in what KSA signs.
        ksa_origin, pak_origin = network.specs["KSA"].origin(CORRIDOR), network.specs["PAK"].origin(CORRIDOR)
        ksa_size = ksa.status(CORRIDOR)["log"]["size"]
        last = json.loads(pak.receipt(ksa_origin, ksa_size - 1))  # from PAK's replica
        offset = _unix(last["timestamp"]) - time.time()
        if abs(offset - skew) > TOLERANCE:
            tally.failures.append(f"KSA's receipt timestamp is {offset:.0f} s off, not {skew:g}")
        cp, note = open_checkpoint(pak.checkpoint(pak_origin), network.specs["PAK"].log_key(CORRIDOR))
        cosigner = network.specs["KSA"].log_key(CORRIDOR).with_alg(ALG_COSIGNATURE_V1)
        stamps = verify_cosignatures(note, cp, [cosigner])
        cosign_offset = stamps.get(ksa_origin, 0) - time.time()
        if abs(cosign_offset - skew) > TOLERANCE + 5:
            tally.failures.append(f"KSA's cosignature time is {cosign_offset:.0f} s off, not {skew:g}")
        # 3. evidence dated by the skewed clock.
        key = SigningKey(ksa_origin, network.specs["KSA"].key.seed)
        fork = build_receipt(
            key=key, corridor_id=CORRIDOR, sequence=last["sequence"], timestamp=last["timestamp"],
            prev_root=bytes.fromhex(last["prev_root"]), kind="transfer",
            payload=transfer("fork", "KSA", "PAK"),
        )  # fmt: skip
        evidence = log_equivocation_from_receipts(pak.receipt(ksa_origin, ksa_size - 1), fork.raw)
        max_skew = int(SlashPolicy.__dataclass_fields__["max_clock_skew"].default)
        keys = {
            ksa_origin: network.specs["KSA"].log_key(CORRIDOR),
            pak_origin: network.specs["PAK"].log_key(CORRIDOR),
        }

        def verdict(now: float) -> str:
            try:
                verify_evidence(
                    evidence, log_keys=keys, now=int(now), window=EVIDENCE_WINDOW, max_skew=max_skew
                )
            except PeerProtocolError as exc:
                return exc.reason
            return "accepted"

        honest, skewed = verdict(time.time()), verdict(time.time() + skew)
        expected = "evidence-from-future" if skew > max_skew else "accepted"
        if honest != expected or skewed != "accepted":
            tally.failures.append(
                f"evidence age check: honest clock {honest} (want {expected}), skewed {skewed}"
            )
        tally.notes.append(
            f"skew {skew:+g} s: receipt offset {offset:+.0f} s, cosignature offset {cosign_offset:+.0f} s; "
            f"evidence from the skewed node: {honest} by PAK's clock (max_clock_skew {max_skew} s), "
            f"{skewed} by KSA's"
        )
        log(f"  {tally.notes[-1]}")
        stop_and_check(tally, network)
    finally:
        for load in loads:
            load.stop()
        network.close()
    return tally
