"""Light-client benchmark (issue 8): verifying a receipt bundle against the bare Ed25519 work in it.

A bundle of PAK's log carrying **seven cosignatures** (the counterparty's and six watchers') is verified
with :func:`protocol.light.verify_bundle` under the corridor's trust policy: every step of ``sez-light
verify`` (bundle and checkpoint parsing, the receipt's canonical form, schema and ``next_root``, origin and
index, the log signature, the inclusion path, the receipt signature, every cosignature, the stake quorum).

The reference is the bare pynacl (libsodium) verification of the same nine signatures the bundle contains
(receipt, log, seven cosignatures): the same keys, messages and signatures, ``VerifyKey.verify`` in a loop
and nothing else. Both are timed in the same process, interleaved round by round (``--rounds``), so that
load from elsewhere on the machine hits both alike; the ratio of each round and the median ratio are
printed, and the ratio of the fastest round of each (less sensitive to other load on the machine).
Target: ratio <= 1.2. Timings are printed, never asserted.

The bundles cycle over ``--bundles`` different receipts (index and path length vary), so no call sees the
same bytes as the one before it.

    python -m tests.bench light [--rounds 15] [--iterations 200] [--bundles 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import nacl.signing

from protocol.checkpoints import cosignature_message, parse_checkpoint
from protocol.keys import ALG_COSIGNATURE_V1
from protocol.light import verify_bundle
from protocol.policy import TrustPolicy
from protocol.receipts import SIGNATURE_DOMAIN
from tests.light_fixture import Corridor

WATCHERS = 6
"""Six watchers and the counterparty: seven cosignatures."""

SUMMARY_KEYS = (
    "cosignatures", "signatures", "bundle_us", "reference_us",
    "ratio_median", "ratio_of_minima", "ratios", "target",
)  # fmt: skip


def _triples(corridor: Corridor, bundle_index: int) -> list[tuple[nacl.signing.VerifyKey, bytes, bytes]]:
    """(key, message, signature) of every signature in the bundle of receipt ``bundle_index``."""
    receipt = corridor.receipts[bundle_index]
    cp, note = parse_checkpoint(corridor.checkpoint())
    keys = {corridor.pak.name: corridor.pak.public, corridor.ksa.name: corridor.ksa.public}
    keys.update({k.name: k.public for k in corridor.watcher_keys})
    triples = [
        (nacl.signing.VerifyKey(corridor.pak.public), SIGNATURE_DOMAIN + receipt.next_root, receipt.signature)
    ]
    for line in note.signatures:
        key = nacl.signing.VerifyKey(keys[line.name])
        if line.name == cp.origin:
            triples.append((key, cp.body().encode(), line.signature))
        else:
            timestamp = int.from_bytes(line.signature[:8], "big")
            triples.append((key, cosignature_message(cp, timestamp), line.signature[8:]))
    return triples


def _timed(action: Callable[[], None], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        action()
    return (time.perf_counter() - start) / iterations


def run_light(
    *, rounds: int = 15, iterations: int = 200, bundles: int = 16, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark; return the summary (``SUMMARY_KEYS``)."""
    corridor = Corridor(n=max(bundles, 2) + 3, watchers=WATCHERS)
    policy: TrustPolicy = corridor.policy()
    items = [corridor.bundle(index=i) for i in range(bundles)]
    triples = [_triples(corridor, i) for i in range(bundles)]
    cosignatures = len(triples[0]) - 2
    for data in items:  # every bundle verifies, and every signature in the reference does
        report = verify_bundle(data, policy)
        assert report.verified, report.message
    for group in triples:
        for key, message, signature in group:
            key.verify(message, signature)
    assert policy.cosigner_keys(corridor.pak.name)[0].alg == ALG_COSIGNATURE_V1
    out(
        f"bundle: PAK-KSA receipt, {cosignatures} cosignatures ({WATCHERS} watchers + counterparty), "
        f"{len(triples[0])} Ed25519 signatures in all; {bundles} bundles cycled"
    )
    position = 0

    def one_bundle() -> None:
        nonlocal position
        verify_bundle(items[position], policy)
        position = (position + 1) % bundles

    spot = 0

    def bare() -> None:
        nonlocal spot
        for key, message, signature in triples[spot]:
            key.verify(message, signature)
        spot = (spot + 1) % bundles

    ratios, bundle_times, reference_times = [], [], []
    for number in range(1, rounds + 1):
        reference = _timed(bare, iterations)
        measured = _timed(one_bundle, iterations)
        reference_after = _timed(bare, iterations)
        ref = (reference + reference_after) / 2
        ratios.append(measured / ref)
        bundle_times.append(measured)
        reference_times.append(ref)
        out(
            f"round {number:3d}: verify_bundle {measured * 1e6:8.1f} us   bare {len(triples[0])} verifies "
            f"{ref * 1e6:8.1f} us   ratio {measured / ref:5.2f}"
        )
    summary = {
        "cosignatures": cosignatures,
        "signatures": len(triples[0]),
        "bundle_us": round(statistics.median(bundle_times) * 1e6, 1),
        "reference_us": round(statistics.median(reference_times) * 1e6, 1),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_of_minima": round(min(bundle_times) / min(reference_times), 3),
        "ratios": [round(r, 3) for r in ratios],
        "target": 1.2,
    }
    out(
        f"median: verify_bundle {summary['bundle_us']} us, bare verifies {summary['reference_us']} us, "
        f"ratio {summary['ratio_median']} (target <= 1.2); fastest round of each: ratio "
        f"{summary['ratio_of_minima']} (less sensitive to load from elsewhere)"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench light", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved measurement rounds (default 15)")
    parser.add_argument("--iterations", type=int, default=200, help="verifications per round (default 200)")
    parser.add_argument("--bundles", type=int, default=16, help="different bundles cycled (default 16)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    args = parser.parse_args(argv)
    summary = run_light(rounds=args.rounds, iterations=args.iterations, bundles=args.bundles)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0
