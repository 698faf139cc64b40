"""What the devnet shows and reports: live progress, the settled end state, the summary, light-client checks.

Everything here reads the nodes' HTTP API only (``/v1/corridors/{c}/status``, ``.../evidence``,
``.../policy``, ``/v1/logs/{origin}/proof/{seq}``), as an operator or a light client would.

The end state is read once it is **stable** (:func:`wait_settled`): traffic has stopped, and two
reads in a row agree on every log's size, every replica equals its log's head (no lag), and every log
is quorum-final at its head on both of its corridor's nodes. The last ``ack`` receipts are written
after the last transfers (a node acks the counterparty's newest checkpoint), so reading ``stored`` and
``replicated`` at one moment without this wait could see one side with an ack the other has not
replicated yet. The wait is on that API state, bounded, never a fixed sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from protocol.light import verify_bundle
from protocol.policy import TrustPolicy

from .devnet_topology import CORRIDORS, DevnetNode, DevnetWatcher

__all__ = [
    "LightCheck",
    "Traffic",
    "corridor_snapshot",
    "progress_lines",
    "summarize",
    "unsettled",
    "verify_random_receipts",
    "wait_settled",
]


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
            f"{row['writer']} {row['stored']} (lag {row['lag']}, final {row['quorum_final']})"
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
        if snapshot and snapshot == previous and not unsettled(snapshot):
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
    of its log missing from the counterparty's replica. ``transfers_stored`` is the log's size minus
    the receipts that are not transfers (acks, and the lifecycle and bond receipts the devnet wrote).
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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the summary."""
        return {
            "corridor": self.corridor, "origin": self.origin, "sequence": self.sequence,
            "checkpoint_size": self.size, "served_by": self.served_by, "policy_from": self.policy_from,
            "verified": self.verified, "message": self.message, "checks": list(self.checks),
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
