"""``sez-light verify --rpc URL``: check a bundle's anchor on the chain itself (design §10, §11).

The bundle's ``extra`` may carry an anchor record (``{"receipt", "anchor"}``, as ``sez-node proof
--anchor`` / ``GET …/proof/{n}?anchor=1`` writes it). Offline, :func:`protocol.light.verify_bundle`
only checks that the record names the bundle's checkpoint. With an RPC URL, this module asks the
chain for the transaction, its receipt, its block and the head (four JSON-RPC calls over plain HTTP,
standard library only: ``sez-light`` depends on ``protocol`` and nothing else) and hands the answers
to :func:`protocol.anchor.verify_anchor`, which decides. The RPC node is trusted only for what it
answers about the chain; a light client that needs more trust asks several.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Final

from protocol.anchor import AnchorRecord, AnchorVerdict, split_bundle_extra, verify_anchor
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey
from protocol.tlog_proof import TlogProof

__all__ = ["bundle_anchor", "verify_on_chain"]

RPC_TIMEOUT: Final = 15.0
MAX_RPC_ANSWER: Final = 1 << 20


def bundle_anchor(data: bytes) -> AnchorRecord | None:
    """The anchor record a bundle carries, or None.

    Raises:
        PeerProtocolError: a malformed bundle or anchor record.
    """
    bundle = TlogProof.decode(data)
    if bundle.extra is None:
        return None
    return split_bundle_extra(bundle.extra)[1]


def _call(url: str, method: str, params: list[Any]) -> Any:
    if not url.startswith(("http://", "https://")):
        raise PeerProtocolError("rpc-bad-url", f"the RPC URL must be http:// or https://, not {url!r}")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT) as response:  # noqa: S310 - scheme checked
            raw = response.read(MAX_RPC_ANSWER + 1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise PeerProtocolError("rpc-unreachable", f"{url} did not answer {method}: {exc}") from exc
    if len(raw) > MAX_RPC_ANSWER:
        raise PeerProtocolError("rpc-bad-answer", f"{method} answer over {MAX_RPC_ANSWER} bytes")
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise PeerProtocolError("rpc-bad-answer", f"{method} answer is not JSON") from exc
    if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
        raise PeerProtocolError("rpc-bad-answer", f"{method} failed: {str(answer)[:200]}")
    return answer["result"]


def verify_on_chain(
    record: AnchorRecord, url: str, *, confirmations: int, log_key: VerifierKey | None = None
) -> AnchorVerdict:
    """Verify ``record`` against the chain behind ``url``.

    Raises:
        PeerProtocolError: ``rpc-unreachable``, ``rpc-bad-answer``, ``anchor-wrong-chain`` (the RPC
            node serves another chain), or any :func:`protocol.anchor.verify_anchor` reason.
    """
    chain = _call(url, "eth_chainId", [])
    if not isinstance(chain, str) or int(chain, 16) != record.chain_id:
        raise PeerProtocolError(
            "anchor-wrong-chain", f"{url} serves chain {chain}, the anchor is on chain {record.chain_id}"
        )
    tx = _call(url, "eth_getTransactionByHash", [record.tx_hash])
    receipt = _call(url, "eth_getTransactionReceipt", [record.tx_hash])
    block = None
    if isinstance(receipt, dict) and isinstance(receipt.get("blockNumber"), str):
        block = _call(url, "eth_getBlockByNumber", [receipt["blockNumber"], False])
    head = _call(url, "eth_blockNumber", [])
    try:
        head_number = int(head, 16)
    except (TypeError, ValueError) as exc:
        raise PeerProtocolError("rpc-bad-answer", f"eth_blockNumber answered {head!r}") from exc
    return verify_anchor(
        record, tx=tx, receipt=receipt, block=block, head=head_number,
        confirmations=confirmations, log_key=log_key,
    )  # fmt: skip
