"""What the devnet shows and reports: live progress, the settled end state, the summary, light-client checks.

Everything here reads the nodes' HTTP API only (``/v1/corridors/{c}/status``, ``.../evidence``,
``.../policy``, ``/v1/logs/{origin}/proof/{seq}``), as an operator or a light client would.

The end state is read once it is **stable** (:func:`wait_settled`): traffic has stopped, and two
reads in a row agree on every log's size, every replica equals its log's head (no lag), and every log
is quorum-final at its head on both of its corridor's nodes. The last ``ack`` receipts are written
after the last transfers (a node acks the counterparty's newest checkpoint), so reading ``stored`` and
``replicated`` at one moment without this wait could see one side with an ack the other has not
replicated yet. The wait is on that API state, bounded, never a fixed sleep.

With ``--anchor`` each log's ``anchored`` size (the largest size a confirmed L1 anchor covers, from the
corridor status's ``anchoring``) is shown too; it is left out of the settle comparison (anchoring
trails finality by design) and waited for afterwards (:func:`wait_anchored`). The light-client check
then uses an anchored bundle (:func:`verify_anchored_receipts`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from protocol.anchor import AnchorRecord, AnchorState, split_bundle_extra
from protocol.errors import PeerProtocolError
from protocol.light import verify_bundle
from protocol.policy import TrustPolicy
from protocol.tlog_proof import TlogProof

from .devnet_chain import verify_on_chain
from .devnet_topology import ANCHOR_CADENCE, CORRIDORS, DevnetNode, DevnetWatcher

__all__ = [
    "LightCheck",
    "Traffic",
    "corridor_snapshot",
    "progress_lines",
    "summarize",
    "unsettled",
    "verify_anchored_receipts",
    "verify_random_receipts",
    "wait_anchored",
    "wait_settled",
]

_ANCHOR_FIELDS = ("anchoring", "anchored", "anchored_at_counterparty")
"""Snapshot fields that are not part of the settled end state (anchoring trails finality)."""


@dataclass
class Traffic:
    """Per origin: transfers the nodes accepted (201) and refused, and the receipts the devnet wrote
    itself (lifecycle transitions, watcher bonds), so that ``lost`` can be computed exactly."""

    submitted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    setup: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, origin: str, accepted: int, refused: int) -> None:
        """Count one batch (called from the driver threads)."""
        with self.lock:
            self.submitted[origin] = self.submitted.get(origin, 0) + accepted
            self.refused[origin] = self.refused.get(origin, 0) + refused

    def wrote(self, origin: str, kind: str, count: int) -> None:
        """Count ``count`` receipts of ``kind`` the devnet wrote into ``origin`` during set-up."""
        kinds = self.setup.setdefault(origin, {})
        kinds[kind] = kinds.get(kind, 0) + count


def _get(node: DevnetNode, path: str, **params: str) -> httpx.Response:
    response = httpx.get(f"{node.url}{path}", params=params, timeout=10, trust_env=False)
    response.raise_for_status()
    return response


def status(node: DevnetNode, corridor: str) -> dict[str, Any]:
    """``GET /v1/corridors/{corridor}/status`` of ``node``."""
    result: dict[str, Any] = _get(node, f"/v1/corridors/{corridor}/status").json()
    return result


def _parties(nodes: Mapping[str, DevnetNode], corridor: str) -> tuple[DevnetNode, DevnetNode]:
    first, second = corridor.split("-")
    return nodes[first], nodes[second]


def corridor_snapshot(nodes: Mapping[str, DevnetNode], corridor: str) -> dict[str, Any]:
    """One read of a corridor from both nodes: per origin its head, replica, quorum-final sizes; forks."""
    a, b = _parties(nodes, corridor)
    statuses = {a.jurisdiction: status(a, corridor), b.jurisdiction: status(b, corridor)}
    forks = max(len(_get(n, f"/v1/corridors/{corridor}/evidence").json()["evidence"]) for n in (a, b))
    origins = {}
    for writer, reader in ((a, b), (b, a)):
        own, other = statuses[writer.jurisdiction], statuses[reader.jurisdiction]
        origin = writer.origin(corridor)
        origins[origin] = {
            "writer": writer.jurisdiction,
            "stored": own["log"]["size"],
            "replicated": other["counterparty"]["size"],
            "lag": other["counterparty"]["lag"],
            "quorum_final": own["finality"][origin]["quorum_final_size"],
            "quorum_final_at_counterparty": other["finality"][origin]["quorum_final_size"],
            "acks": own["stats"]["acks_written"],
            "lifecycle": own["lifecycle"],
            "anchoring": own["anchoring"]["enabled"],
            "anchored": own["anchoring"]["anchored_size"].get(origin, 0),
            "anchored_at_counterparty": other["anchoring"]["anchored_size"].get(origin, 0),
        }
    return {
        "origins": origins,
        "active_watchers": min(
            s["finality"][o]["active_watchers"] for s in statuses.values() for o in origins
        ),
        "forks": forks,
        "lifecycle": sorted({s["lifecycle"] for s in statuses.values()}),
    }


def progress_lines(nodes: Mapping[str, DevnetNode], elapsed: float) -> list[str]:
    """One line per corridor: each log's size, replica lag and quorum-final size; watchers; forks."""
    lines = []
    for corridor in CORRIDORS:
        try:
            snap = corridor_snapshot(nodes, corridor)
        except httpx.HTTPError as exc:
            lines.append(f"[{elapsed:6.1f}s] {corridor}: unavailable ({exc})")
            continue
        logs = "  ".join(
            f"{row['writer']} {row['stored']} (lag {row['lag']}, final {row['quorum_final']}"
            + (f", anchored {row['anchored']})" if row["anchoring"] else ")")
            for row in snap["origins"].values()
        )
        lines.append(
            f"[{elapsed:6.1f}s] {corridor}: {logs}  watchers {snap['active_watchers']}  forks {snap['forks']}"
        )
    return lines


def unsettled(snapshot: Mapping[str, Any]) -> list[str]:
    """What keeps each log of ``snapshot`` from the settled end state (empty when every log is settled)."""
    problems = []
    for snap in snapshot.values():
        for origin, row in snap["origins"].items():
            stored = row["stored"]
            if row["replicated"] != stored or row["lag"]:
                problems.append(f"{origin}: replica {row['replicated']} of {stored} (lag {row['lag']})")
            if row["quorum_final"] != stored:
                problems.append(f"{origin}: quorum-final {row['quorum_final']} of {stored} at its writer")
            if (there := row["quorum_final_at_counterparty"]) != stored:
                problems.append(f"{origin}: quorum-final {there} of {stored} at the counterparty")
    return problems


def _settled_view(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``snapshot`` without the anchoring fields: what two reads in a row must agree on."""
    return {
        corridor: {
            **snap,
            "origins": {
                origin: {k: v for k, v in row.items() if k not in _ANCHOR_FIELDS}
                for origin, row in snap["origins"].items()
            },
        }
        for corridor, snap in snapshot.items()
    }


def unanchored(snapshot: Mapping[str, Any]) -> list[str]:
    """The logs of ``snapshot`` whose writer does not hold a confirmed anchor at the log's head."""
    return [
        f"{origin}: anchored {row['anchored']} of {row['stored']}"
        for snap in snapshot.values()
        for origin, row in snap["origins"].items()
        if row["anchored"] != row["stored"]
    ]


def wait_anchored(
    nodes: Mapping[str, DevnetNode], timeout: float, on_poll: Callable[[], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Wait (bounded) until every log's writer holds a confirmed anchor covering the log's head.

    Called once the logs settled (no new checkpoints): each anchorer then anchors its last quorum-final
    checkpoint within ``every_seconds`` and confirms it ``confirmations`` blocks later.

    Returns:
        The last snapshot of every corridor, and whether every log was anchored at its head in time.
    """
    deadline = time.monotonic() + timeout
    snapshot: dict[str, Any] = {}
    while True:
        try:
            snapshot = {corridor: corridor_snapshot(nodes, corridor) for corridor in CORRIDORS}
        except httpx.HTTPError:
            snapshot = snapshot or {}
        if snapshot and not unanchored(snapshot):
            return snapshot, True
        if time.monotonic() >= deadline:
            return snapshot, False
        if on_poll is not None:
            on_poll()
        time.sleep(0.5)


def wait_settled(
    nodes: Mapping[str, DevnetNode], timeout: float, on_poll: Callable[[], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Wait (bounded) until two reads in a row agree and every log is replicated and quorum-final at its head.

    ``on_poll`` is called after every read that did not settle (the devnet prints progress from it).

    Returns:
        The last snapshot of every corridor, and whether it settled before ``timeout``.
    """
    deadline = time.monotonic() + timeout
    previous: dict[str, Any] | None = None
    snapshot: dict[str, Any] = {}
    while True:
        try:
            snapshot = {corridor: corridor_snapshot(nodes, corridor) for corridor in CORRIDORS}
        except httpx.HTTPError:
            snapshot = {}
        view = _settled_view(snapshot)
        if snapshot and previous is not None and view == _settled_view(previous) and not unsettled(snapshot):
            return snapshot, True
        if time.monotonic() >= deadline:
            return snapshot or (previous or {}), False
        previous = snapshot
        if on_poll is not None:
            on_poll()
        time.sleep(0.5)


def summarize(
    snapshot: Mapping[str, Any], traffic: Traffic, watchers: Sequence[DevnetWatcher], settled: bool
) -> dict[str, Any]:
    """The summary (printed and ``--summary FILE``): per corridor and origin, the counts and ``lost``.

    ``lost`` for an origin is the transfers accepted (201) that are not in its log, plus the receipts
    of its log missing from the counterparty's replica. ``anchored`` is the largest size of the log a
    confirmed L1 anchor covers (its writer's view; 0 without ``--anchor``), ``anchored_at_counterparty``
    the same as the counterparty holds it (verified from the chain after gossip). ``transfers_stored``
    is the log's size minus the receipts that are not transfers (acks, and the lifecycle and bond
    receipts the devnet wrote).
    """
    corridors: dict[str, Any] = {}
    lost_total = 0
    all_final = settled
    for corridor, snap in snapshot.items():
        origins = {}
        for origin, row in snap["origins"].items():
            setup = traffic.setup.get(origin, {})
            submitted = traffic.submitted.get(origin, 0)
            transfers = row["stored"] - row["acks"] - sum(setup.values())
            lost = max(0, submitted - transfers) + max(0, row["stored"] - row["replicated"])
            lost_total += lost
            final = row["quorum_final"] == row["stored"] == row["quorum_final_at_counterparty"]
            all_final = all_final and final
            origins[origin] = {
                "writer": row["writer"], "lifecycle": row["lifecycle"],
                "submitted": submitted, "refused": traffic.refused.get(origin, 0),
                "stored": row["stored"], "transfers_stored": transfers, "acks": row["acks"],
                "setup_receipts": dict(sorted(setup.items())), "replicated": row["replicated"],
                "quorum_final": row["quorum_final"], "quorum_final_at_head": final, "lost": lost,
                "anchored": row["anchored"], "anchored_at_counterparty": row["anchored_at_counterparty"],
            }  # fmt: skip
        corridors[corridor] = {
            "lifecycle": snap["lifecycle"][0] if len(snap["lifecycle"]) == 1 else snap["lifecycle"],
            "active_watchers": snap["active_watchers"],
            "forks": snap["forks"],
            "origins": origins,
        }
    return {
        "corridors": corridors,
        "watchers": [{"label": w.label, "vkey": w.vkey, "peer_id": w.peer_id} for w in watchers],
        "settled": settled,
        "quorum_final": all_final,
        "lost": lost_total,
    }


@dataclass(frozen=True)
class LightCheck:
    """One light-client verification: which receipt, from where, and every named check."""

    corridor: str
    origin: str
    sequence: int
    size: int
    served_by: str
    policy_from: str
    verified: bool
    message: str
    checks: tuple[str, ...]
    anchored: bool = False
    """With ``--anchor``: an anchored bundle (``?anchor=1``); ``size`` is the anchored checkpoint's."""
    on_chain: tuple[str, ...] = ()
    """With ``--anchor``: what :func:`protocol.anchor.verify_anchor` checked on the chain (else empty)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the summary."""
        return {
            "corridor": self.corridor, "origin": self.origin, "sequence": self.sequence,
            "checkpoint_size": self.size, "served_by": self.served_by, "policy_from": self.policy_from,
            "verified": self.verified, "message": self.message, "checks": list(self.checks),
            "anchored": self.anchored, "on_chain": list(self.on_chain),
        }  # fmt: skip


def verify_random_receipts(nodes: Mapping[str, DevnetNode], rng: random.Random) -> list[LightCheck]:
    """Per corridor: one random receipt of a random log, verified as ``sez-light verify --policy`` would.

    The bundle comes from the **counterparty's** node (its replica), against the quorum-final
    checkpoint of that log (``?size=`` the quorum-final size); the trust policy is the one the log's
    own party exports (``GET /v1/corridors/{c}/policy``); :func:`protocol.light.verify_bundle` checks
    it offline: bundle, receipt, origin, index, log signature, inclusion, receipt signature,
    cosignatures and the quorum rule.
    """
    results = []
    for corridor in CORRIDORS:
        writer, reader = _parties(nodes, corridor)
        if rng.randrange(2):
            writer, reader = reader, writer
        origin = writer.origin(corridor)
        final = status(reader, corridor)["finality"][origin]["quorum_final_size"]
        where = (reader.jurisdiction, writer.jurisdiction)
        if final == 0:
            results.append(
                LightCheck(corridor, origin, -1, 0, *where, False, "nothing is quorum-final yet", ())
            )
            continue
        sequence = rng.randrange(final)
        bundle = _get(reader, f"/v1/logs/{origin}/proof/{sequence}", size=str(final)).content
        policy = TrustPolicy.from_json(_get(writer, f"/v1/corridors/{corridor}/policy").content)
        report = verify_bundle(bundle, policy)
        checks = tuple(f"{'ok' if c.ok else 'FAILED'} {c.name}: {c.detail}" for c in report.checks)
        results.append(
            LightCheck(corridor, origin, sequence, final, *where, report.verified, report.message, checks)
        )
    return results


def _confirmed_anchors(node: DevnetNode, corridor: str, origin: str) -> list[AnchorRecord]:
    """``origin``'s confirmed anchors as ``node`` lists them (``GET /v1/corridors/{c}/anchors``), by size."""
    listing = _get(node, f"/v1/corridors/{corridor}/anchors").json()
    records = [AnchorRecord.from_json(r) for r in listing["anchors"]]
    done = [r for r in records if r.origin == origin and r.state is AnchorState.CONFIRMED]
    return sorted(done, key=lambda r: r.size)


def verify_anchored_receipts(
    nodes: Mapping[str, DevnetNode], rng: random.Random, rpc_url: str
) -> list[LightCheck]:
    """Per corridor: one random receipt of a random log in an **anchored** bundle, verified twice.

    The receipt is one the log's newest confirmed anchor covers and no older one does, so the bundle
    (``GET /v1/logs/{origin}/proof/{n}?anchor=1``: proven against the anchored checkpoint, the anchor
    record in ``extra``) is made against that checkpoint. It comes from the counterparty's replica when
    the counterparty holds that anchor (received by gossip, verified from the chain), else from the
    writer. Then:

    1. :func:`protocol.light.verify_bundle` under the trust policy the log's party exports (bundle,
       receipt, origin, index, log signature, inclusion, receipt signature, cosignatures, quorum, and
       that the anchor record names the bundle's checkpoint);
    2. :func:`protocol.anchor.verify_anchor` on the chain's own answers (``rpc_url``): transaction,
       chain, sender, calldata digest, inclusion, confirmations, and the log's signature.
    """
    results = []
    confirmations = int(ANCHOR_CADENCE["confirmations"])
    for corridor in CORRIDORS:
        writer, reader = _parties(nodes, corridor)
        if rng.randrange(2):
            writer, reader = reader, writer
        origin = writer.origin(corridor)
        anchors = _confirmed_anchors(writer, corridor, origin)
        if not anchors:
            where = (reader.jurisdiction, writer.jurisdiction)
            results.append(
                LightCheck(
                    corridor, origin, -1, 0, *where, False, "no confirmed anchor yet", (), anchored=True
                )
            )
            continue
        newest = anchors[-1]
        low = anchors[-2].size if len(anchors) > 1 else 0
        sequence = rng.randrange(low, newest.size)
        held = status(reader, corridor)["anchoring"]["anchored_size"].get(origin, 0)
        server = reader if held >= newest.size else writer
        bundle = _get(server, f"/v1/logs/{origin}/proof/{sequence}", anchor="1").content
        policy = TrustPolicy.from_json(_get(writer, f"/v1/corridors/{corridor}/policy").content)
        report = verify_bundle(bundle, policy)
        checks = tuple(f"{'ok' if c.ok else 'FAILED'} {c.name}: {c.detail}" for c in report.checks)
        where = (server.jurisdiction, writer.jurisdiction)
        verified, message = report.verified, report.message
        on_chain: tuple[str, ...] = ()
        carried = split_bundle_extra(TlogProof.decode(bundle).extra or b"")[1] if verified else None
        if verified and carried is None:
            verified, message = False, "REJECTED: the bundle carries no anchor record"
        elif carried is not None:
            try:
                verdict = verify_on_chain(
                    carried, rpc_url, confirmations=confirmations, log_key=writer.log_key(corridor)
                )
            except (PeerProtocolError, httpx.HTTPError) as exc:
                verified = False
                message = f"REJECTED on chain: {getattr(exc, 'reason', type(exc).__name__)}: {exc}"
            else:
                on_chain = (
                    *(f"ok {check}" for check in verdict.checks),
                    f"anchored at size {carried.size} by {carried.sender} in tx {carried.tx_hash}, "
                    f"block {verdict.block_number} (timestamp {verdict.block_timestamp})",
                )
        results.append(
            LightCheck(
                corridor,
                origin,
                sequence,
                newest.size,
                *where,
                verified,
                message,
                checks,
                anchored=True,
                on_chain=on_chain,
            )
        )
    return results
