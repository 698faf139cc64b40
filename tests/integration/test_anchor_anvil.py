"""The anchoring task and the EVM backend against a real anvil node, with a real LMDB store.

Each test starts its own anvil on a free loopback port (tests/integration/anvil.py) and stops it.
Chain facts are read back over JSON-RPC and checked with ``protocol.anchor.verify_anchor``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from eth_account import Account

from anchor.backend import RpcUnavailable
from anchor.evm import EvmBackend, JsonRpc, write_anchor_key
from anchor.task import Anchorer, AnchorPolicy
from node.anchoring import CorridorAnchors
from node.config import AnchorConfig
from protocol.anchor import AnchorRecord, AnchorState, checkpoint_digest, verify_anchor
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.wire import AnchorAnnouncement, encode
from store import LogStore
from store.anchors import AnchorStore

from .anvil import CHAIN_ID, DEV_KEY, DEV_KEY_2, Anvil, require_anvil

pytestmark = pytest.mark.slow

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
LOG_KEY = SigningKey.generate(ORIGIN)
DEADLINE = 30.0


class Finals:
    """Our log's quorum-final checkpoints, as the node's quorum collector would report them."""

    def __init__(self) -> None:
        self.notes: dict[int, bytes] = {}

    def finalize(self, size: int) -> bytes:
        cp = Checkpoint(origin=ORIGIN, size=size, root=hashlib.sha256(b"%d" % size).digest())
        self.notes[size] = format_note(sign_checkpoint(cp, LOG_KEY))
        return self.notes[size]

    def latest_final(self) -> tuple[int, bytes] | None:
        if not self.notes:
            return None
        size = max(self.notes)
        return size, self.notes[size]

    def checkpoints_between(self, low: int, high: int) -> int:
        return sum(1 for size in self.notes if low < size <= high)


@pytest.fixture(autouse=True)
def _needs_anvil() -> None:
    require_anvil()


def _anchorer(store: LogStore, rpc: JsonRpc, finals: Finals, **policy: float) -> tuple[Anchorer, AnchorStore]:
    ledger = AnchorStore(store)
    settings = {"every_checkpoints": 1, "every_seconds": 3600.0, "confirmations": 3, "poll_interval": 0.05}
    settings.update(policy)
    anchorer = Anchorer(
        corridor_id="PAK-KSA", origin=ORIGIN, backend=EvmBackend(rpc, Account.from_key(DEV_KEY), CHAIN_ID),
        ledger=ledger, source=finals, policy=AnchorPolicy(**settings),  # type: ignore[arg-type]
    )  # fmt: skip
    return anchorer, ledger


async def _drive(
    anchorer: Anchorer,
    ledger: AnchorStore,
    done: Callable[[list[AnchorRecord]], bool],
    *,
    chain: Anvil | None = None,
    what: str,
) -> list[AnchorRecord]:
    """Step the anchorer (mining a block between steps when ``chain``) until ``done`` or the deadline."""
    with trio.fail_after(DEADLINE):
        while True:
            await anchorer.step_reporting()
            records = ledger.anchors("PAK-KSA", ORIGIN)
            if done(records):
                return records
            if chain is not None:
                await trio.to_thread.run_sync(chain.mine)
            await trio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover (fail_after raises first)


def _state(*states: AnchorState) -> Callable[[list[AnchorRecord]], bool]:
    return lambda records: bool(records) and records[-1].state in states


async def _verify_from_chain(rpc: JsonRpc, record: AnchorRecord, confirmations: int) -> None:
    backend = EvmBackend(rpc, Account.from_key(DEV_KEY), CHAIN_ID)
    view = await backend.view(record.tx_hash)
    verify_anchor(record, tx=view.tx, receipt=view.receipt, block=view.block, head=view.head,
                  confirmations=confirmations, log_key=LOG_KEY.verifier())  # fmt: skip


async def test_anchor_is_confirmed_and_verifies_from_the_chain(tmp_path: Path) -> None:
    finals = Finals()
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            anchorer, ledger = _anchorer(store, rpc, finals)
            await anchorer.step_reporting()
            assert ledger.anchors("PAK-KSA") == []  # nothing final yet: nothing anchored
            note = finals.finalize(5)
            records = await _drive(
                anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="confirmed"
            )
            record = records[-1]
            assert record.size == 5 and record.checkpoint_sha256 == checkpoint_digest(note).hex()
            assert record.confirmations >= 3 and record.block_number is not None
            tx = chain.call("eth_getTransactionByHash", record.tx_hash)
            assert tx["input"] == "0x" + (b"SEZ\x01" + checkpoint_digest(note)).hex()
            assert tx["to"].lower() == tx["from"].lower() == record.sender  # to self, value 0
            assert int(tx["type"], 16) == 2  # EIP-1559
            await _verify_from_chain(rpc, record, 3)
            assert anchorer.statistics().anchored_size == 5
            # The next final checkpoint is anchored as a new record; the old one stays confirmed.
            finals.finalize(9)
            records = await _drive(
                anchorer, ledger, lambda rs: len(rs) == 2 and rs[-1].state is AnchorState.CONFIRMED,
                chain=chain, what="second anchor",
            )  # fmt: skip
            assert [r.size for r in records] == [5, 9] and records[0].state is AnchorState.CONFIRMED
        finally:
            await rpc.aclose()


async def test_reorg_is_detected_and_the_anchor_resubmitted(tmp_path: Path) -> None:
    finals = Finals()
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            anchorer, ledger = _anchorer(store, rpc, finals, confirmations=2)
            snapshot = chain.call("evm_snapshot")
            finals.finalize(4)
            first = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="confirmed")
            )[-1]
            # Reorg: the chain goes back to before the anchor's block, then grows past it again.
            assert chain.call("evm_revert", snapshot) is True
            chain.mine(int(first.block_number or 0) + 3)
            assert chain.call("eth_getTransactionReceipt", first.tx_hash) is None
            await anchorer.step_reporting()
            after = ledger.anchors("PAK-KSA", ORIGIN)[-1]
            assert after.state in (AnchorState.RESUBMITTED, AnchorState.INCLUDED)
            assert anchorer.statistics().reorged == 1
            assert after.attempts[0] == first.tx_hash and len(after.attempts) == 2
            final = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="re-anchored")
            )[-1]
            assert final.tx_hash != first.tx_hash
            await _verify_from_chain(rpc, final, 2)
            with pytest.raises(PeerProtocolError) as info:  # the old record no longer verifies
                await _verify_from_chain(rpc, first, 2)
            assert info.value.reason == "anchor-tx-missing"
        finally:
            await rpc.aclose()


async def test_stuck_transaction_is_replaced_with_higher_fees(tmp_path: Path) -> None:
    finals = Finals()
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            chain.call("evm_setAutomine", False)
            anchorer, ledger = _anchorer(store, rpc, finals, stuck_after=0.3, confirmations=1)
            finals.finalize(3)
            records = await _drive(
                anchorer, ledger, lambda rs: bool(rs) and len(rs[-1].attempts) >= 2, what="bump"
            )
            first_tx, bumped_tx = records[-1].attempts[:2]
            first = chain.call("eth_getTransactionByHash", first_tx)
            bumped = chain.call("eth_getTransactionByHash", bumped_tx)
            assert bumped is not None and first is None  # the replacement took the nonce's place in the pool
            assert records[-1].state is AnchorState.SUBMITTED and records[-1].nonce == 0
            assert int(bumped["maxPriorityFeePerGas"], 16) > 0 and anchorer.statistics().bumped >= 1
            chain.call("evm_mine")
            record = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="mined")
            )[-1]
            assert record.tx_hash in records[-1].attempts[1:]
            mined = chain.call("eth_getTransactionByHash", record.tx_hash)
            assert int(mined["maxFeePerGas"], 16) >= int(bumped["maxFeePerGas"], 16)
        finally:
            await rpc.aclose()


async def test_rpc_node_stopped_and_restarted_loses_nothing(tmp_path: Path) -> None:
    finals = Finals()
    chain = Anvil(tmp_path, state=True)
    chain.start()
    try:
        rpc = JsonRpc(chain.url)
        with LogStore(tmp_path / "db") as store:
            anchorer, ledger = _anchorer(store, rpc, finals, confirmations=3)
            finals.finalize(6)
            submitted = (await _drive(anchorer, ledger, _state(AnchorState.SUBMITTED, AnchorState.INCLUDED),
                                      what="submitted"))[-1]  # fmt: skip
            chain.mine(1)
            chain.stop()
            # RPC down: rounds fail, are counted and reported, nothing stored changes, nothing raises.
            before = ledger.anchors("PAK-KSA")
            for _ in range(3):
                assert await anchorer.step_reporting() is False
            stats = anchorer.statistics()
            assert stats.rpc_failures == 3 and stats.consecutive_failures == 3
            assert stats.last_error is not None and stats.last_error.startswith("rpc-unavailable")
            assert ledger.anchors("PAK-KSA") == before
            with pytest.raises(RpcUnavailable):
                await anchorer.step()
        await rpc.aclose()
        # The daemon restarts too: a new anchorer on the reopened store resumes from the stored record.
        chain.start()
        rpc = JsonRpc(chain.url)
        with LogStore(tmp_path / "db") as store:
            anchorer, ledger = _anchorer(store, rpc, finals, confirmations=3)
            assert ledger.anchors("PAK-KSA")[-1].tx_hash == submitted.tx_hash
            record = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="resumed")
            )[-1]
            assert record.size == 6 and len(ledger.anchors("PAK-KSA")) == 1
            assert anchorer.statistics().consecutive_failures == 0
            await _verify_from_chain(rpc, record, 3)
        await rpc.aclose()
    finally:
        chain.stop()


async def test_forged_or_mismatched_anchor_fails_verification(tmp_path: Path) -> None:
    finals = Finals()
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            anchorer, ledger = _anchorer(store, rpc, finals, confirmations=1)
            finals.finalize(5)
            record = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="confirmed")
            )[-1]
            # 1. A record claiming that transaction anchors another checkpoint.
            other = finals.finalize(50)
            forged = dataclasses.replace(
                record, size=50, checkpoint=other.decode(), checkpoint_sha256=checkpoint_digest(other).hex()
            )
            with pytest.raises(PeerProtocolError) as info:
                await _verify_from_chain(rpc, forged, 1)
            assert info.value.reason == "anchor-calldata-mismatch"
            # 2. A record pointing at an ordinary transfer (no anchor calldata).
            plain = chain.call("eth_sendTransaction", {"from": record.sender, "to": "0x" + "00" * 19 + "01",
                                                       "value": "0x1"})  # fmt: skip
            with pytest.raises(PeerProtocolError) as info:
                await _verify_from_chain(
                    rpc, dataclasses.replace(record, tx_hash=plain, attempts=(plain,)), 1
                )
            assert info.value.reason == "anchor-bad-calldata"
            # 3. A record for another chain id, and one for a transaction that was never sent.
            with pytest.raises(PeerProtocolError) as info:
                await _verify_from_chain(rpc, dataclasses.replace(record, chain_id=1), 1)
            assert info.value.reason == "anchor-wrong-chain"
            ghost = "0x" + "42" * 32
            with pytest.raises(PeerProtocolError) as info:
                await _verify_from_chain(
                    rpc, dataclasses.replace(record, tx_hash=ghost, attempts=(ghost,)), 1
                )
            assert info.value.reason == "anchor-tx-missing"
            # 4. More confirmations than the chain has.
            with pytest.raises(PeerProtocolError) as info:
                await _verify_from_chain(rpc, record, 1000)
            assert info.value.reason == "anchor-unconfirmed"
            # 5. A checkpoint the log never signed (another key) fails the log signature.
            with pytest.raises(PeerProtocolError) as info:
                backend = EvmBackend(rpc, Account.from_key(DEV_KEY), CHAIN_ID)
                view = await backend.view(record.tx_hash)
                verify_anchor(record, tx=view.tx, receipt=view.receipt, block=view.block, head=view.head,
                              confirmations=1, log_key=SigningKey.generate(ORIGIN).verifier())  # fmt: skip
            assert info.value.reason in ("missing-log-signature", "bad-log-signature")
        finally:
            await rpc.aclose()


async def test_wrong_chain_id_is_reported_not_fatal(tmp_path: Path) -> None:
    finals = Finals()
    finals.finalize(2)
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            ledger = AnchorStore(store)
            anchorer = Anchorer(
                corridor_id="PAK-KSA", origin=ORIGIN, backend=EvmBackend(rpc, Account.from_key(DEV_KEY), 1),
                ledger=ledger, source=finals, policy=AnchorPolicy(every_checkpoints=1),
            )  # fmt: skip
            assert await anchorer.step_reporting() is False
            assert (anchorer.statistics().last_error or "").startswith("rpc-wrong-chain")
            assert ledger.anchors("PAK-KSA") == []
        finally:
            await rpc.aclose()


def _wire(record: AnchorRecord) -> bytes:
    return encode(AnchorAnnouncement(corridor="PAK-KSA", record=record.to_bytes()))


async def test_gossiped_confirmed_anchor_is_checked_against_the_chain(tmp_path: Path) -> None:
    """A node stores a counterparty's confirmed anchor only if the chain bears it out."""
    finals = Finals()
    with Anvil(tmp_path) as chain, LogStore(tmp_path / "db") as store:
        rpc = JsonRpc(chain.url)
        try:
            anchorer, ledger = _anchorer(store, rpc, finals, confirmations=1)
            finals.finalize(5)
            real = (
                await _drive(anchorer, ledger, _state(AnchorState.CONFIRMED), chain=chain, what="confirmed")
            )[-1]
        finally:
            await rpc.aclose()
        key_file = tmp_path / "anchor.key"
        write_anchor_key(key_file, DEV_KEY_2)
        ours = SigningKey.generate("sez.gov.sa/corridor/PAK-KSA")
        with LogStore(tmp_path / "other") as other:
            receiver = CorridorAnchors(
                store=other, corridor_id="PAK-KSA", origin=ours.name,
                log_keys={ours.name: ours.verifier(), ORIGIN: LOG_KEY.verifier()}, quorum=None, host=None,  # type: ignore[arg-type]
                config=AnchorConfig(chain_id=CHAIN_ID, rpc_url=chain.url, key_file=key_file, confirmations=1),
            )  # fmt: skip
            assert receiver.rpc is not None
            try:
                other_note = finals.finalize(77)
                mismatched = dataclasses.replace(
                    real, size=77, checkpoint=other_note.decode(),
                    checkpoint_sha256=checkpoint_digest(other_note).hex(),
                )  # fmt: skip
                with pytest.raises(PeerProtocolError) as info:
                    await receiver.receive(_wire(mismatched))
                assert info.value.reason == "anchor-calldata-mismatch"
                assert receiver.records() == []
                assert await receiver.receive(_wire(real)) is True
                assert receiver.anchored_size(ORIGIN) == 5
                assert await receiver.receive(_wire(real)) is False  # a republication: no-op
                # A replayed older state cannot undo an anchor the chain still bears out.
                stale = dataclasses.replace(
                    real, state=AnchorState.SUBMITTED, block_number=None, block_hash=None, confirmations=0
                )
                assert await receiver.receive(_wire(stale)) is False
                assert receiver.anchored_size(ORIGIN) == 5
            finally:
                await receiver.rpc.aclose()
