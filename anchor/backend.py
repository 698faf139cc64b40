"""The anchoring backend interface: what the anchoring task needs from an L1 chain.

The task (:mod:`anchor.task`) drives the pure state machine of :mod:`protocol.anchor`; a backend
only sends transactions and answers questions about the chain. One backend exists today, EVM over
JSON-RPC (:mod:`anchor.evm`); tests may use any object with these methods.

Every method may raise :class:`RpcUnavailable` (the node cannot be reached, timed out, or answered
garbage or an error): the task treats it as transient, backs off and retries; it is never a reason
to change an anchor's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from protocol.errors import SezError

__all__ = ["AnchorBackend", "ChainView", "Fees", "RpcUnavailable", "SentTransaction"]


class RpcUnavailable(SezError):
    """The chain's RPC node could not answer (reason ``rpc-unavailable`` or ``rpc-error``)."""


@dataclass(frozen=True, slots=True)
class Fees:
    """EIP-1559 fees in wei."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def bumped(self, percent: int) -> Fees:
        """Both fees raised by at least ``percent`` % (and by at least 1 wei), for a replacement."""
        return Fees(
            max_fee_per_gas=max(self.max_fee_per_gas + 1, -(-self.max_fee_per_gas * (100 + percent) // 100)),
            max_priority_fee_per_gas=max(
                self.max_priority_fee_per_gas + 1, -(-self.max_priority_fee_per_gas * (100 + percent) // 100)
            ),
        )


@dataclass(frozen=True, slots=True)
class SentTransaction:
    """A signed transaction the RPC node accepted into its pool."""

    tx_hash: str
    nonce: int
    fees: Fees


@dataclass(frozen=True, slots=True)
class ChainView:
    """What the chain says about one transaction now (JSON-RPC results, None where it answered null)."""

    tx: dict[str, Any] | None
    receipt: dict[str, Any] | None
    block: dict[str, Any] | None
    """The block the receipt names, fetched by number: if its hash differs, that block was replaced."""
    head: int


class AnchorBackend(Protocol):
    """An L1 chain the anchoring task can write to and read from."""

    @property
    def chain_id(self) -> int:
        """The chain id transactions are signed for."""

    @property
    def sender(self) -> str:
        """Our sending address (lowercase ``0x`` hex)."""

    async def check_chain(self) -> None:
        """Raise :class:`RpcUnavailable` unless the RPC node answers and serves ``chain_id``."""

    async def suggest_fees(self) -> Fees:
        """Fees that should get a transaction into the next blocks."""

    async def next_nonce(self) -> int:
        """Our next nonce, counting pending transactions."""

    async def send_anchor(self, digest: bytes, *, nonce: int, fees: Fees) -> SentTransaction:
        """Sign locally and send an anchoring transaction (calldata ``ANCHOR_TAG || digest``)."""

    async def view(self, tx_hash: str) -> ChainView:
        """The transaction, its receipt, the block at the receipt's number, and the head."""
