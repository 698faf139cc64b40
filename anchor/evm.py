"""EVM JSON-RPC anchoring backend: EIP-1559 transactions signed locally with eth-account.

The private key never leaves this process: transactions are signed here and sent with
``eth_sendRawTransaction``; the RPC node only ever sees signed bytes. Each anchor is a
transaction from our address to itself, value 0, calldata ``ANCHOR_TAG || SHA-256(checkpoint
body)`` (:func:`protocol.anchor.anchor_calldata`).

HTTP goes through one ``httpx.AsyncClient`` (works under trio), with a per-request timeout; any
transport failure, timeout, non-200 answer, malformed JSON-RPC envelope or JSON-RPC error surfaces
as :class:`~anchor.backend.RpcUnavailable` so the task can back off and retry.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import httpx

from protocol.anchor import anchor_calldata
from protocol.errors import LocalProtocolError

from .backend import ChainView, Fees, RpcUnavailable, SentTransaction

__all__ = ["ANCHOR_GAS_LIMIT", "EvmBackend", "JsonRpc", "load_anchor_key", "write_anchor_key"]

ANCHOR_GAS_LIMIT: Final = 30_000
"""21,000 intrinsic plus at most 36 * 16 calldata gas (or the EIP-7623 floor, 22,440): 30,000 covers
both with room; unused gas is not charged."""
RPC_TIMEOUT: Final = 5.0
"""Seconds for one JSON-RPC call; the task retries with backoff."""
MAX_RPC_BYTES: Final = 4 * 1024 * 1024
"""A JSON-RPC answer over 4 MiB is refused (a block with hashes only is a few kB)."""


def load_anchor_key(path: Path) -> Any:
    """The anchoring account from a key file (one line: the 32-byte secp256k1 key in hex, mode 0600).

    Raises:
        LocalProtocolError(bad-anchor-key): missing, readable by others, or not a key.
    """
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise LocalProtocolError("bad-anchor-key", f"cannot read {path}: {exc}") from exc
    if info.st_mode & 0o077:
        raise LocalProtocolError("bad-anchor-key", f"{path} must have mode 0600")
    # eth-account (and pydantic under it) takes about 0.5 s to import: only nodes that anchor pay it.
    limit = sys.getrecursionlimit()
    from eth_account import Account  # noqa: PLC0415

    # py_ecc (imported under eth-account) raises the recursion limit to 100,000 for its own pairing
    # code, which we never call; deep recursion elsewhere would then overflow the C stack instead of
    # raising RecursionError. Put it back.
    sys.setrecursionlimit(limit)

    try:
        return Account.from_key(text)
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError("bad-anchor-key", f"{path} does not hold a secp256k1 key in hex") from exc


def write_anchor_key(path: Path, key_hex: str) -> None:
    """Write a key file (mode 0600, refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key_hex + "\n")


class JsonRpc:
    """A minimal JSON-RPC 2.0 client over HTTP.

    Args:
        url: the RPC node's URL.
        timeout: seconds per call.
    """

    def __init__(self, url: str, *, timeout: float = RPC_TIMEOUT) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method``; return its ``result``.

        Raises:
            RpcUnavailable(rpc-unavailable): transport failure, timeout, bad HTTP or JSON-RPC envelope.
            RpcUnavailable(rpc-error): the node answered a JSON-RPC error.
        """
        (result,) = await self.batch((method, *params))
        return result

    async def batch(self, *calls: tuple[Any, ...]) -> list[Any]:
        """Several calls ``(method, *params)`` in one HTTP request (a JSON-RPC batch); results in order.

        One round trip instead of several: the anchoring task's questions about one transaction go
        together. A single call is sent as a plain request object.

        Raises:
            RpcUnavailable: as :meth:`call`, for the first call that failed or went unanswered.
        """
        requests = [
            {"jsonrpc": "2.0", "id": next(self._ids), "method": call[0], "params": list(call[1:])}
            for call in calls
        ]
        methods = ",".join(str(call[0]) for call in calls)
        payload: Any = requests if len(requests) > 1 else requests[0]
        try:
            response = await self._client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            raise RpcUnavailable("rpc-unavailable", f"{methods} at {self.url}: {exc!r}") from exc
        if response.status_code != 200 or len(response.content) > MAX_RPC_BYTES:
            raise RpcUnavailable(
                "rpc-unavailable", f"{methods} at {self.url}: HTTP {response.status_code}, "
                f"{len(response.content)} bytes",
            )  # fmt: skip
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise RpcUnavailable("rpc-unavailable", f"{methods}: answer is not JSON") from exc
        answers = body if isinstance(body, list) else [body]
        by_id = {answer.get("id"): answer for answer in answers if isinstance(answer, dict)}
        results = []
        for request in requests:
            answer = by_id.get(request["id"])
            if answer is None:
                raise RpcUnavailable("rpc-unavailable", f"{request['method']}: not answered")
            if "error" in answer:
                error = answer["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise RpcUnavailable("rpc-error", f"{request['method']}: {message}", error=error)
            results.append(answer.get("result"))
        return results


def _int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcUnavailable("rpc-unavailable", f"{what} is not a hex quantity: {value!r}")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise RpcUnavailable("rpc-unavailable", f"{what} is not a hex quantity: {value!r}") from exc


def _obj(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise RpcUnavailable("rpc-unavailable", f"{what} is neither an object nor null")


class EvmBackend:
    """:class:`~anchor.backend.AnchorBackend` for an EVM chain over JSON-RPC.

    Args:
        rpc: the JSON-RPC client (the backend does not own it; close it yourself).
        account: the eth-account ``LocalAccount`` that signs.
        chain_id: the chain id to sign for; :meth:`check_chain` refuses a node serving another.
    """

    def __init__(self, rpc: JsonRpc, account: Any, chain_id: int) -> None:
        self.rpc = rpc
        self._account = account
        self._chain_id = chain_id
        self._sender = str(account.address).lower()

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def sender(self) -> str:
        return self._sender

    async def check_chain(self) -> None:
        served = _int(await self.rpc.call("eth_chainId"), "eth_chainId")
        if served != self._chain_id:
            raise RpcUnavailable(
                "rpc-wrong-chain", f"{self.rpc.url} serves chain {served}, configured {self._chain_id}"
            )

    async def suggest_fees(self) -> Fees:
        latest, priority = await self.rpc.batch(
            ("eth_getBlockByNumber", "latest", False), ("eth_maxPriorityFeePerGas",)
        )
        block = _obj(latest, "latest block")
        base = _int((block or {}).get("baseFeePerGas", "0x0"), "baseFeePerGas")
        tip = _int(priority, "eth_maxPriorityFeePerGas")
        return Fees(max_fee_per_gas=2 * base + tip, max_priority_fee_per_gas=tip)

    async def next_nonce(self) -> int:
        return _int(await self.rpc.call("eth_getTransactionCount", self._sender, "pending"), "nonce")

    async def send_anchor(self, digest: bytes, *, nonce: int, fees: Fees) -> SentTransaction:
        tx = {
            "type": 2,
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": self._account.address,
            "value": 0,
            "gas": ANCHOR_GAS_LIMIT,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            "data": anchor_calldata(digest),
        }
        signed = self._account.sign_transaction(tx)
        tx_hash = "0x" + bytes(signed.hash).hex()
        try:
            answered = await self.rpc.call(
                "eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex()
            )
        except RpcUnavailable as exc:
            if exc.reason == "rpc-error" and "already" in exc.message.lower():
                answered = tx_hash  # "already known": the node holds exactly this transaction
            else:
                raise
        if not isinstance(answered, str) or answered.lower() != tx_hash:
            raise RpcUnavailable("rpc-unavailable", f"node answered {answered!r} for transaction {tx_hash}")
        return SentTransaction(tx_hash=tx_hash, nonce=nonce, fees=fees)

    async def view(self, tx_hash: str) -> ChainView:
        tx, receipt, head = await self.rpc.batch(
            ("eth_getTransactionByHash", tx_hash),
            ("eth_getTransactionReceipt", tx_hash),
            ("eth_blockNumber",),
        )
        tx, receipt = _obj(tx, "transaction"), _obj(receipt, "receipt")
        block = None
        if receipt is not None and receipt.get("blockNumber") is not None:
            # By number, not by hash: if that height now holds another block, the receipt is stale.
            block = _obj(await self.rpc.call("eth_getBlockByNumber", receipt["blockNumber"], False), "block")
        return ChainView(tx=tx, receipt=receipt, block=block, head=_int(head, "eth_blockNumber"))
