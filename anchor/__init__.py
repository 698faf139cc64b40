"""Optional L1 anchoring of quorum-final checkpoints (design §10).

* :mod:`anchor.backend`: the backend interface (:class:`AnchorBackend`), fees, and
  :class:`RpcUnavailable` (every transient chain failure);
* :mod:`anchor.evm`: the EVM JSON-RPC backend, signing EIP-1559 transactions locally with eth-account;
* :mod:`anchor.task`: the anchoring task (:class:`Anchorer`) that drives the state machine of
  :mod:`protocol.anchor` and persists it through a narrow ledger interface.

The pure parts (calldata, the anchor record, the state machine table, verification from chain data)
live in :mod:`protocol.anchor`, so that light clients can use them without this package.
"""

from .backend import AnchorBackend, ChainView, Fees, RpcUnavailable, SentTransaction
from .evm import EvmBackend, JsonRpc, load_anchor_key, write_anchor_key
from .task import Anchorer, AnchorLedger, AnchorPolicy, AnchorStatistics, FinalCheckpoints

__all__ = [
    "AnchorBackend",
    "AnchorLedger",
    "AnchorPolicy",
    "AnchorStatistics",
    "Anchorer",
    "ChainView",
    "EvmBackend",
    "Fees",
    "FinalCheckpoints",
    "JsonRpc",
    "RpcUnavailable",
    "SentTransaction",
    "load_anchor_key",
    "write_anchor_key",
]
