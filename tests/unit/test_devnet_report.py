"""The devnet's accounting (``node.devnet_report``): what counts as lost, settled and quorum-final.

The end-to-end runs (tests/integration/test_devnet.py) only see the happy outcome; these cases feed
the summary the snapshots a broken network would give and check that it says so.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from node.devnet_report import Traffic, _settled_view, summarize, unanchored, unsettled
from node.devnet_topology import DevnetWatcher
from protocol.keys import SigningKey

PAK = "sez.gov.pk/corridor/PAK-KSA"
KSA = "sez.gov.sa/corridor/PAK-KSA"


def _row(writer: str, stored: int, acks: int) -> dict[str, Any]:
    return {
        "writer": writer, "stored": stored, "replicated": stored, "lag": 0, "quorum_final": stored,
        "quorum_final_at_counterparty": stored, "acks": acks, "lifecycle": "ACTIVE",
        "anchoring": False, "anchored": 0, "anchored_at_counterparty": 0,
    }  # fmt: skip


def _snapshot() -> dict[str, Any]:
    """PAK: 2 lifecycle + 4 bonds + 10 transfers + 3 acks; KSA: 2 lifecycle + 12 transfers + 2 acks."""
    return {
        "PAK-KSA": {
            "origins": {PAK: _row("PAK", 19, 3), KSA: _row("KSA", 16, 2)},
            "active_watchers": 4,
            "forks": 0,
            "lifecycle": ["ACTIVE"],
        }
    }


def _traffic() -> Traffic:
    traffic = Traffic()
    traffic.add(PAK, 10, 0)
    traffic.add(KSA, 12, 0)
    traffic.wrote(PAK, "lifecycle", 2)
    traffic.wrote(PAK, "watcher.bond", 4)
    traffic.wrote(KSA, "lifecycle", 2)
    return traffic


WATCHER = DevnetWatcher(
    "watcher1", Path("w1"), Path("w1/watcher.toml"), SigningKey("w1.example", bytes(32)), 1, 2, "12D3Koo"
)


def test_a_settled_network_loses_nothing_and_is_quorum_final() -> None:
    snapshot = _snapshot()
    assert unsettled(snapshot) == []
    summary = summarize(snapshot, _traffic(), [WATCHER], settled=True)
    assert summary["lost"] == 0 and summary["quorum_final"] is True
    pak = summary["corridors"]["PAK-KSA"]["origins"][PAK]
    assert pak["transfers_stored"] == 10 and pak["setup_receipts"] == {"lifecycle": 2, "watcher.bond": 4}
    assert summary["corridors"]["PAK-KSA"]["lifecycle"] == "ACTIVE"
    assert summary["watchers"] == [{"label": "watcher1", "vkey": WATCHER.vkey, "peer_id": "12D3Koo"}]
    assert WATCHER.vkey.startswith("w1.example+")


def test_an_accepted_transfer_missing_from_the_log_is_lost() -> None:
    snapshot = _snapshot()
    row = snapshot["PAK-KSA"]["origins"][KSA]
    row["stored"] = row["replicated"] = row["quorum_final"] = row["quorum_final_at_counterparty"] = 15
    summary = summarize(snapshot, _traffic(), [], settled=True)
    assert summary["lost"] == 1 and summary["corridors"]["PAK-KSA"]["origins"][KSA]["lost"] == 1
    assert summary["quorum_final"] is True  # what is stored is final; the loss is reported as such


def test_a_receipt_missing_from_the_replica_is_lost_and_unsettled() -> None:
    snapshot = _snapshot()
    snapshot["PAK-KSA"]["origins"][PAK].update(replicated=18, lag=1)
    assert unsettled(snapshot) == [f"{PAK}: replica 18 of 19 (lag 1)"]
    summary = summarize(snapshot, _traffic(), [], settled=False)
    assert summary["lost"] == 1 and summary["settled"] is False and summary["quorum_final"] is False


def test_a_log_not_final_at_its_head_on_either_node_is_reported() -> None:
    snapshot = _snapshot()
    at_writer = copy.deepcopy(snapshot)
    at_writer["PAK-KSA"]["origins"][PAK]["quorum_final"] = 17
    assert unsettled(at_writer) == [f"{PAK}: quorum-final 17 of 19 at its writer"]
    summary = summarize(at_writer, _traffic(), [], settled=True)
    assert summary["quorum_final"] is False and summary["lost"] == 0
    assert summary["corridors"]["PAK-KSA"]["origins"][PAK]["quorum_final_at_head"] is False
    # The watchers' lines reached the writer but not the counterparty (the race fixed in node.quorum).
    at_counterparty = copy.deepcopy(snapshot)
    at_counterparty["PAK-KSA"]["origins"][KSA]["quorum_final_at_counterparty"] = 3
    assert unsettled(at_counterparty) == [f"{KSA}: quorum-final 3 of 16 at the counterparty"]
    assert summarize(at_counterparty, _traffic(), [], settled=True)["quorum_final"] is False


def test_refused_batches_are_counted_apart_from_submitted() -> None:
    traffic = _traffic()
    traffic.add(PAK, 0, 5)
    row = summarize(_snapshot(), traffic, [], settled=True)["corridors"]["PAK-KSA"]["origins"][PAK]
    assert row["submitted"] == 10 and row["refused"] == 5 and row["lost"] == 0


def test_anchoring_progress_does_not_keep_the_logs_from_settling() -> None:
    """Anchoring trails finality by design: two reads that differ only in anchored sizes agree."""
    first, second = _snapshot(), _snapshot()
    second["PAK-KSA"]["origins"][PAK].update(anchoring=True, anchored=12, anchored_at_counterparty=9)
    assert _settled_view(first) == _settled_view(second)
    second["PAK-KSA"]["origins"][PAK]["stored"] = 20  # a size change still counts
    assert _settled_view(first) != _settled_view(second)


def test_a_log_not_anchored_at_its_head_is_named_and_reported_in_the_summary() -> None:
    snapshot = _snapshot()
    snapshot["PAK-KSA"]["origins"][PAK].update(anchoring=True, anchored=19, anchored_at_counterparty=16)
    snapshot["PAK-KSA"]["origins"][KSA].update(anchoring=True, anchored=14, anchored_at_counterparty=0)
    assert unanchored(snapshot) == [f"{KSA}: anchored 14 of 16"]
    origins = summarize(snapshot, _traffic(), [], settled=True)["corridors"]["PAK-KSA"]["origins"]
    assert (origins[PAK]["anchored"], origins[PAK]["anchored_at_counterparty"]) == (19, 16)
    assert (origins[KSA]["anchored"], origins[KSA]["anchored_at_counterparty"]) == (14, 0)
    snapshot["PAK-KSA"]["origins"][KSA]["anchored"] = 16
    assert unanchored(snapshot) == []
