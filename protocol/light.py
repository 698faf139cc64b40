"""Light-client verification of a receipt bundle (design §11), pure and offline.

A sez receipt bundle is a ``c2sp.org/tlog-proof@v1`` bundle whose ``extra``
field holds the receipt's canonical JSON. :func:`verify_receipt_bundle` checks,
in order (cheap checks first, signatures last):

1. the bundle decodes and carries a receipt in ``extra``;
2. the receipt is well formed and its ``next_root`` recomputes from its content;
3. the receipt's origin is the log key's name and its sequence is the bundle's index;
4. the inclusion path leads from ``SHA-256(0x00 || next_root)`` to the checkpoint's root;
5. the log's signature on the checkpoint, then the receipt's own signature.

Cosignature quorum under a corridor trust policy is added with the watcher
issue; this function already verifies any cosignature lines of the keys it is
given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import mmr
from .anchor import checkpoint_digest, split_bundle_extra
from .checkpoints import Checkpoint
from .errors import PeerProtocolError
from .keys import VerifierKey
from .receipts import Receipt, VerifiedReceipt, verify_receipt
from .tlog_proof import TlogProof, verify_tlog_proof

__all__ = ["BundleVerdict", "verify_receipt_bundle"]


@dataclass(frozen=True, slots=True)
class BundleVerdict:
    """What a successful verification established."""

    receipt: VerifiedReceipt
    checkpoint: Checkpoint
    checks: tuple[str, ...]


def verify_receipt_bundle(
    data: bytes, log_key: VerifierKey, cosigners: Iterable[VerifierKey] = ()
) -> BundleVerdict:
    """Verify a receipt bundle against the log's verifier key.

    Raises:
        PeerProtocolError: the first failed check, with its reason (``bad-proof-bundle``,
            ``missing-receipt``, receipt reasons such as ``next-root-mismatch``,
            ``wrong-origin``, ``index-mismatch``, ``root-mismatch``, ``bad-log-signature``,
            ``bad-signature``, ...).
    """
    bundle = TlogProof.decode(data)
    if bundle.extra is None:
        raise PeerProtocolError("missing-receipt", "bundle carries no receipt in its extra line")
    receipt_bytes, anchor = split_bundle_extra(bundle.extra)
    receipt = Receipt.from_bytes(receipt_bytes)
    checks = ["bundle format", "receipt schema and canonical form", "receipt next_root recomputed"]
    if receipt.origin != log_key.name:
        raise PeerProtocolError(
            "wrong-origin", f"receipt origin {receipt.origin!r} is not the log key's {log_key.name!r}"
        )
    if receipt.sequence != bundle.index:
        raise PeerProtocolError(
            "index-mismatch", f"receipt sequence {receipt.sequence} is not the bundle index {bundle.index}"
        )
    checks.append("receipt origin and index")
    checkpoint = verify_tlog_proof(bundle, mmr.hash_leaf(receipt.next_root), log_key, cosigners)
    checks += [f"inclusion path to checkpoint root (size {checkpoint.size})", "log signature on checkpoint"]
    verified = verify_receipt(receipt, log_key)
    checks.append("receipt signature")
    if anchor is not None:
        # Offline, an anchor binds to the bundle only by digest; the chain check needs an RPC node.
        if anchor.digest != checkpoint_digest(bundle.checkpoint) or anchor.origin != checkpoint.origin:
            raise PeerProtocolError(
                "anchor-digest-mismatch", "the bundle's anchor record anchors another checkpoint"
            )
        checks.append(f"anchor record names this checkpoint (chain {anchor.chain_id}, tx {anchor.tx_hash})")
    return BundleVerdict(verified, checkpoint, tuple(checks))
