"""``sez-node devnet``: a local four-jurisdiction network with watchers on loopback (design §15).

What it does, in order (each step waits for the previous one's result on the API, bounded):

1. **Writes** a folder per node (PAK, KSA, UAE, CHN) and per watcher (``--watchers N``, default 4)
   with fresh keys, under a temporary folder (removed at the end, unless the run failed: its logs are
   then kept for inspection) or ``--dir`` (kept):
   :mod:`node.devnet_topology`. Every watcher serves all three corridors (PAK-KSA, PAK-UAE, PAK-CHN).
2. **Starts** every node (``sez-node run``) and watcher (``sez-watcher run``) as its own process and
   waits for each one's ready line: :mod:`node.devnet_processes`.
3. **DRAFT -> PENDING** in every corridor: both parties sign the shipped definition
   (``configs/corridors/<id>.json``), and each party records the transition in its own log.
4. **Bonds** the watchers while PENDING: one signed ``watcher.bond`` request per watcher and corridor
   (``protocol.stake.sign_request``, what ``sez-watcher bond`` prints), all of a corridor's in one
   batch written by its first party, so one checkpoint covers them. With ``min_watchers`` 3 in the
   shipped policies, bonding one checkpoint at a time would strand the corridor (``node.quorum``):
   the first final bond would make one active watcher, and bootstrap finality would end with it.
   Then waits until both nodes of every corridor count N active watchers (the bonds are final by
   bilateral bootstrap finality).
5. **PENDING -> ACTIVE** in every corridor, both parties signing, each recording it.
6. **Traffic**: transfers both ways in every corridor at ``--rate`` per second for ``--duration``
   seconds through the HTTP API, with a progress line per corridor every 2 s (log sizes, replica
   lag, quorum-final sizes, active watchers, forks).
7. **Settles**: waits until the end state is stable (:func:`node.devnet_report.wait_settled`), prints
   the summary, and verifies one random receipt per corridor as a light client would, under the
   corridor's exported trust policy and the quorum rule.
8. **Stops** every process (SIGTERM, bounded wait, then SIGKILL), on success, on failure, and on
   Ctrl-C (SIGINT) or SIGTERM of the devnet itself.

Exit status: 0 when nothing is lost, every log is quorum-final at its head and every light-client
check passed; 1 otherwise; 130 / 143 when interrupted by SIGINT / SIGTERM.

``--watchers 0`` runs without watchers: finality is then bilateral (bootstrap) only, and the light
client's policy has no watchers.

``--anchor`` also anchors every log on a local EVM chain (design §10): before step 1 it starts anvil
(:mod:`node.devnet_chain`; refused with exit 2 before anything starts when ``./run anvil-setup`` has not
installed it) on a free loopback port, one more child process stopped on every path out, its log in
``<folder>/anvil/anvil.log``. Every corridor entry of every node gets an ``anchor`` table on that chain
with its own funded dev key. Progress lines and the summary show each log's anchored size; after the
logs settle the devnet waits (bounded) until every log's writer holds a confirmed anchor at the log's
head, and the light-client check of step 7 uses an anchored bundle (``?anchor=1``), verified under the
policy and then on the chain itself (:func:`node.devnet_chain.verify_on_chain`). The run is OK only if
every log has at least one confirmed anchor and every check passed.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from protocol.errors import SezError
from protocol.lifecycle import activation, definition_digest
from protocol.stake import BOND_REQUEST, sign_request

from .devnet_chain import BLOCK_TIME, CHAIN_ID, ChainFailed, ChainMissing, DevnetChain, anvil_binary
from .devnet_processes import Child, ChildFailed, stop_all
from .devnet_report import (
    LightCheck,
    Traffic,
    corridor_snapshot,
    progress_lines,
    summarize,
    unanchored,
    unsettled,
    verify_anchored_receipts,
    verify_random_receipts,
    wait_anchored,
    wait_settled,
)
from .devnet_topology import (
    ANCHOR_CADENCE,
    CORRIDORS,
    COUNTRY,
    WATCHER_COUNT,
    WATCHER_STAKE,
    DevnetNode,
    DevnetWatcher,
    check_description,
    corridor_currencies,
    corridor_definition,
    free_ports,
    write_network,
)
from .writer import utc_timestamp

__all__ = ["add_devnet_command", "run_devnet"]

READY_TIMEOUT: Final = 90.0
"""Seconds for every node and watcher to print its ready line (8 processes importing libp2p on 2 cores)."""
BOND_TIMEOUT: Final = 90.0
"""Seconds for the watchers' bonds to become final in every corridor."""
SETTLE_TIMEOUT: Final = 120.0
"""Seconds after the traffic for every log to be replicated and quorum-final at its head."""
ANCHOR_TIMEOUT: Final = 60.0
"""With ``--anchor``, seconds after the logs settled for every log to be anchored at its head (an anchor
round every 2 s, two 1-second blocks to confirm, six anchorers on 2 cores: ample)."""
PROGRESS_EVERY: Final = 2.0
NODE_TOML: Final = "node.toml"
_EXIT_ON: Final = {"SIGINT": 130, "SIGTERM": 143}


RECOVERING_WAIT = 60.0
"""Seconds a devnet step waits for a node's own-log check (503 ``recovering``) to complete."""


class DevnetError(RuntimeError):
    """A step of the devnet failed; the message says which and where to look."""


def _post(node: DevnetNode, corridor: str, transitions: list[dict[str, Any]], what: str) -> int:
    """POST a batch of transitions to ``node``; return how many receipts it wrote, or raise.

    A node still checking its own log with its counterparty (``node.recovery``) answers 503
    ``recovering``; that is waited out, bounded by ``RECOVERING_WAIT`` seconds.
    """
    deadline = time.monotonic() + RECOVERING_WAIT
    while True:
        response = httpx.post(
            f"{node.url}/v1/corridors/{corridor}/transitions", json={"transitions": transitions},
            headers={"Authorization": f"Bearer {node.token}"}, timeout=30, trust_env=False,
        )  # fmt: skip
        recovering = response.status_code == 503 and "recovering" in response.text
        if not recovering or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if response.status_code != 201:
        raise DevnetError(f"{node.jurisdiction} refused {what} in {corridor}: {response.text}")
    return len(response.json()["receipts"])


def _lifecycle_step(
    nodes: Mapping[str, DevnetNode], corridor: str, payload: dict[str, Any], traffic: Traffic
) -> None:
    """Record one signed lifecycle transition in both parties' logs."""
    for party in corridor.split("-"):
        node = nodes[party]
        step = f"{payload['from']} -> {payload['to']}"
        written = _post(node, corridor, [{"kind": "lifecycle", "payload": payload}], step)
        traffic.wrote(node.origin(corridor), "lifecycle", written)


def _bond_requests(watchers: Sequence[DevnetWatcher], corridor: str) -> list[dict[str, Any]]:
    """One signed ``watcher.bond`` per watcher for ``corridor`` (what ``sez-watcher bond`` prints)."""
    currency = corridor_definition(corridor)["policy"]["stake_currency"]
    transitions = []
    for watcher in watchers:
        request = {
            "type": BOND_REQUEST, "watcher": watcher.vkey, "amount": WATCHER_STAKE, "currency": currency,
            "corridors": [corridor], "collateral_ref": f"devnet-escrow-{watcher.label}-{corridor}",
            "timestamp": utc_timestamp(),
        }  # fmt: skip
        transitions.append({"kind": "watcher.bond", "payload": sign_request(request, watcher.key)})
    return transitions


def _wait_bonds_final(nodes: Mapping[str, DevnetNode], count: int, timeout: float) -> float:
    """Wait until both nodes of every corridor count ``count`` active watchers; return the seconds taken."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        active = {c: corridor_snapshot(nodes, c)["active_watchers"] for c in CORRIDORS}
        if all(n == count for n in active.values()):
            return time.monotonic() - began
        if time.monotonic() >= deadline:
            raise DevnetError(
                f"the watchers' bonds did not become final within {timeout:.0f}s "
                f"(active watchers per corridor: {active}, expected {count})"
            )
        time.sleep(0.5)


def _prepare_corridors(
    nodes: Mapping[str, DevnetNode], watchers: Sequence[DevnetWatcher], traffic: Traffic
) -> None:
    """DRAFT -> PENDING, bond the watchers, wait for the bonds to be final, PENDING -> ACTIVE."""
    agreements = {}
    for corridor in CORRIDORS:
        signers = {party: nodes[party].key for party in corridor.split("-")}
        digest = definition_digest(corridor_definition(corridor)).hex()
        agreements[corridor] = activation(corridor, signers, digest, reason="devnet")
    for corridor in CORRIDORS:
        _lifecycle_step(nodes, corridor, agreements[corridor][0], traffic)
        print(f"devnet: {corridor} DRAFT -> PENDING, signed by {' and '.join(corridor.split('-'))}")
    if watchers:
        for corridor in CORRIDORS:
            writer = nodes[corridor.split("-")[0]]
            written = _post(writer, corridor, _bond_requests(watchers, corridor), "the watchers' bonds")
            traffic.wrote(writer.origin(corridor), "watcher.bond", written)
        print(
            f"devnet: bonded {len(watchers)} watchers x {WATCHER_STAKE} in every corridor (one batch each); "
            "waiting for the bonds to become final"
        )
        took = _wait_bonds_final(nodes, len(watchers), BOND_TIMEOUT)
        print(f"devnet: every corridor has {len(watchers)} active watchers ({took:.1f}s)")
    else:
        print("devnet: no watchers (--watchers 0): finality is bilateral only")
    for corridor in CORRIDORS:
        _lifecycle_step(nodes, corridor, agreements[corridor][1], traffic)
        print(f"devnet: {corridor} PENDING -> ACTIVE, signed by {' and '.join(corridor.split('-'))}")


def _drive(  # noqa: PLR0917 - a thread target: its arguments come as one tuple
    node: DevnetNode,
    corridor: str,
    rate: float,
    duration: float,
    traffic: Traffic,
    stop: threading.Event,
    seed: int,
) -> None:
    """Post transfers from ``node`` into ``corridor`` at ``rate``/s in batches of up to 50."""
    rng = random.Random(seed)
    other = next(p for p in corridor.split("-") if p != node.jurisdiction)
    batch = max(1, min(50, int(rate / 5)))
    interval = batch / rate
    origin = node.origin(corridor)
    currencies = corridor_currencies(corridor)
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node.token}"}, timeout=30,
                      trust_env=False) as client:  # fmt: skip
        start = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - start < duration:
            delay = start + n * interval - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            transitions = [{"kind": "transfer", "payload": {
                "transfer_id": f"{node.jurisdiction}-{corridor}-{n}-{i}",
                "sender": {"entity_id": f"{node.jurisdiction.lower()}-firm-{rng.randrange(20)}",
                           "jurisdiction": COUNTRY[node.jurisdiction]},
                "receiver": {"entity_id": f"{other.lower()}-firm-{rng.randrange(20)}",
                             "jurisdiction": COUNTRY[other]},
                "currency": rng.choice(currencies), "amount": str(rng.randrange(1, 10**9)),
            }} for i in range(batch)]  # fmt: skip
            try:
                response = client.post(
                    f"/v1/corridors/{corridor}/transitions", json={"transitions": transitions}
                )
                ok = response.status_code == 201
            except httpx.HTTPError:
                ok = False
            traffic.add(origin, batch if ok else 0, 0 if ok else batch)
            n += 1


def _run_traffic(
    nodes: Mapping[str, DevnetNode], rate: float, duration: float, traffic: Traffic, stop: threading.Event
) -> None:
    drivers: list[threading.Thread] = []
    for corridor in CORRIDORS:
        for party in corridor.split("-"):
            work = (nodes[party], corridor, rate, duration, traffic, stop, len(drivers))
            thread = threading.Thread(target=_drive, args=work, daemon=True, name=f"drive-{party}-{corridor}")
            drivers.append(thread)
            thread.start()
    print(f"devnet: traffic: {rate:g} transfers/s each way in every corridor for {duration:g}s")
    began = time.monotonic()
    while any(t.is_alive() for t in drivers):
        for line in progress_lines(nodes, time.monotonic() - began):
            print(line, flush=True)
        stop.wait(PROGRESS_EVERY)
    for thread in drivers:
        thread.join()


def _print_summary(summary: Mapping[str, Any]) -> None:
    print("devnet: summary")
    for corridor, entry in summary["corridors"].items():
        print(
            f"  {corridor}: {entry['lifecycle']}, {entry['active_watchers']} active watchers, "
            f"{entry['forks']} forks"
        )
        for origin, row in entry["origins"].items():
            setup = sum(row["setup_receipts"].values())
            anchored = (
                f", anchored {row['anchored']} ({row['anchored_at_counterparty']} at the counterparty)"
                if "anchoring" in summary
                else ""
            )
            print(
                f"    {origin}: submitted {row['submitted']}, refused {row['refused']}, "
                f"stored {row['stored']} ({row['transfers_stored']} transfers, {row['acks']} acks, "
                f"{setup} set-up), replicated {row['replicated']}, quorum-final {row['quorum_final']}"
                f"{anchored}, lost {row['lost']}"
            )
    for watcher in summary["watchers"]:
        print(f"  {watcher['label']}: {watcher['vkey']}")


def _print_light(check: LightCheck) -> None:
    if check.sequence < 0:
        print(f"light client: {check.corridor}: {check.message}")
        return
    if check.anchored:
        where = "log" if check.served_by == check.policy_from else "replica"
        print(
            f"light client: {check.corridor}: receipt {check.origin}#{check.sequence}, anchored bundle "
            f"(?anchor=1) from {check.served_by}'s {where}, anchored checkpoint size {check.size}, policy "
            f"exported by {check.policy_from}: {check.message}"
        )
    else:
        print(
            f"light client: {check.corridor}: receipt {check.origin}#{check.sequence} from "
            f"{check.served_by}'s replica, checkpoint size {check.size} (quorum-final), policy exported by "
            f"{check.policy_from}: {check.message}"
        )
    for line in check.checks:
        print(f"    {line}")
    if check.on_chain:
        print("    on chain (protocol.anchor.verify_anchor):")
        for line in check.on_chain:
            print(f"      {line}")


def _settle_and_report(
    nodes: Mapping[str, DevnetNode],
    watchers: Sequence[DevnetWatcher],
    traffic: Traffic,
    summary_path: Path | None,
    chain: DevnetChain | None = None,
) -> int:
    print("devnet: traffic stopped; waiting until every log is replicated and quorum-final at its head")
    began = time.monotonic()
    shown = [began]

    def progress() -> None:
        if time.monotonic() - shown[0] >= PROGRESS_EVERY:
            shown[0] = time.monotonic()
            for line in progress_lines(nodes, shown[0] - began):
                print(line)

    snapshot, settled = wait_settled(nodes, SETTLE_TIMEOUT, progress)
    took = time.monotonic() - began
    for line in progress_lines(nodes, took):
        print(line)
    if not settled:
        print(f"devnet: the logs did not settle within {SETTLE_TIMEOUT:.0f}s:", file=sys.stderr)
        for problem in unsettled(snapshot) or ["their sizes were still changing"]:
            print(f"devnet:   {problem}", file=sys.stderr)
    anchoring: dict[str, Any] | None = None
    if chain is not None:
        snapshot, anchoring = _wait_anchored(nodes, snapshot, shown)
    summary = summarize(snapshot, traffic, watchers, settled)
    if anchoring is not None:
        anchored = [
            row["anchored"] for entry in summary["corridors"].values() for row in entry["origins"].values()
        ]
        anchoring["every_log_anchored"] = bool(anchored) and min(anchored) >= 1
        summary["anchoring"] = anchoring
    _print_summary(summary)
    rng = random.Random(time.time_ns())
    if chain is not None:
        checks = verify_anchored_receipts(nodes, rng, chain.url)
    else:
        checks = verify_random_receipts(nodes, rng)
    for check in checks:
        _print_light(check)
    summary["light_client"] = [check.to_json() for check in checks]
    summary["ok"] = summary["lost"] == 0 and summary["quorum_final"] and all(c.verified for c in checks)
    if anchoring is not None:
        summary["ok"] = summary["ok"] and anchoring["every_log_anchored"]
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    anchored_note = "" if anchoring is None else ", every log anchored on chain"
    if summary["ok"]:
        print(
            f"devnet: OK: nothing lost, every log quorum-final at its head{anchored_note}, "
            "every light-client check passed"
        )
        return 0
    anchored_fail = "" if anchoring is None else f", every log anchored: {anchoring['every_log_anchored']}"
    print(
        f"devnet: FAILED: lost {summary['lost']}, quorum-final at head: {summary['quorum_final']}"
        f"{anchored_fail}, light-client checks passed: {sum(c.verified for c in checks)} of {len(checks)}",
        file=sys.stderr,
    )
    return 1


def _wait_anchored(
    nodes: Mapping[str, DevnetNode], settled: dict[str, Any], shown: list[float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait (bounded) until every log is anchored at its head; return the snapshot and the figures."""
    print("devnet: waiting until every log's head is anchored and confirmed on chain")
    began = time.monotonic()

    def progress() -> None:
        if time.monotonic() - shown[0] >= PROGRESS_EVERY:
            shown[0] = time.monotonic()
            for line in progress_lines(nodes, shown[0] - began):
                print(line)

    snapshot, at_head = wait_anchored(nodes, ANCHOR_TIMEOUT, progress)
    took = time.monotonic() - began
    if at_head:
        print(f"devnet: every log is anchored at its head ({took:.1f}s)")
    else:
        print(
            f"devnet: not every log was anchored at its head within {ANCHOR_TIMEOUT:.0f}s:", file=sys.stderr
        )
        for problem in unanchored(snapshot) if snapshot else ["the nodes did not answer"]:
            print(f"devnet:   {problem}", file=sys.stderr)
    figures = {
        "chain_id": CHAIN_ID,
        "cadence": dict(ANCHOR_CADENCE),
        "at_head": at_head,
        "seconds": round(took, 1),
    }
    return (snapshot or settled), figures


def _ignore_signals() -> None:
    """During the final clean-up, a second Ctrl-C must not leave children behind (the stop is bounded).

    Only when ``cmd_devnet`` installed its handlers: a caller's own handlers are left alone.
    """
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is _interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_devnet(
    *,
    rate: float,
    duration: float,
    directory: Path | None,
    summary_path: Path | None,
    watchers: int = WATCHER_COUNT,
    anchor: bool = False,
) -> int:
    """Run the devnet (see the module docstring); return the exit status."""
    if anchor and anvil_binary() is None:
        print(
            "sez-node: anvil-missing: --anchor needs a local EVM node and anvil is not installed: run "
            "`./run anvil-setup` (it installs the pinned @foundry-rs/anvil into .tools/), or run the devnet "
            "without --anchor",
            file=sys.stderr,
        )
        return 2
    if watchers < 0 or rate <= 0 or duration < 0:
        print("sez-node: bad-argument: --watchers and --duration must be >= 0, --rate > 0", file=sys.stderr)
        return 2
    keep = directory is not None
    base = directory if directory is not None else Path(tempfile.mkdtemp(prefix="sez-devnet-"))
    if keep and base.exists() and any(base.iterdir()):
        print(f"sez-node: file-exists: {base} is not empty; choose a new --dir", file=sys.stderr)
        return 1
    base.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    chain: DevnetChain | None = None
    stop = threading.Event()
    status = 1
    try:
        check_description()
        if anchor:
            chain = DevnetChain(base / "anvil", free_ports(1)[0])
            chain.start()
            print(
                f"devnet: anvil ready (pid {chain.pid}): chain {CHAIN_ID} at {chain.url}, a block every "
                f"{BLOCK_TIME}s; every log anchors with its own funded dev account"
            )
        print(f"devnet: writing four nodes and {watchers} watchers under {base}")
        nodes, watcher_dirs = write_network(base, watchers, chain.url if chain is not None else None)
        for node in nodes.values():
            child = Child(node.jurisdiction, node.directory / "node.log")
            child.start(
                [sys.executable, "-m", "node.cli", "run", "--config", str(node.directory / "node.toml")]
            )
            children.append(child)
        for watcher in watcher_dirs:
            child = Child(watcher.label, watcher.directory / "watcher.log")
            child.start([sys.executable, "-m", "watcher.cli", "run", "--config", str(watcher.config)])
            children.append(child)
        deadline = time.monotonic() + READY_TIMEOUT
        for child in children:
            child.wait_ready(deadline)
            where = nodes[child.label].url if child.label in nodes else child.ready.get("http", "")
            peer = child.ready.get("peer_id")
            print(f"devnet: {child.label} ready (pid {child.pid}): http {where}, peer {peer}")
        traffic = Traffic()
        _prepare_corridors(nodes, watcher_dirs, traffic)
        _run_traffic(nodes, rate, duration, traffic, stop)
        status = _settle_and_report(nodes, watcher_dirs, traffic, summary_path, chain)
    except KeyboardInterrupt as interrupt:
        name = str(interrupt) or "SIGINT"
        status = _EXIT_ON.get(name, 130)
        print(f"devnet: interrupted ({name}); stopping every process", flush=True)
    except (ChildFailed, ChainFailed, ChainMissing, DevnetError, httpx.HTTPError, OSError) as exc:
        print(f"sez-node: devnet-failed: {exc}", file=sys.stderr)
        status = 1
    except SezError as exc:
        print(f"sez-node: {exc.reason}: {exc.message}", file=sys.stderr)
        status = 1
    finally:
        stop.set()
        _ignore_signals()
        for label, code in stop_all(children).items():
            print(f"devnet: {label} stopped (exit {code})", flush=True)
        if chain is not None and chain.pid is not None:
            print(f"devnet: anvil stopped (exit {chain.stop()})", flush=True)
        if keep or status == 1:
            print(f"devnet: the nodes' and watchers' folders (keys, data, logs) are kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"devnet: exit {status}", flush=True)
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_devnet(args: argparse.Namespace) -> int:
    """Entry point of ``sez-node devnet``: SIGINT (Ctrl-C) and SIGTERM both stop every process cleanly."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # live progress also through a pipe or a log file
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    return run_devnet(
        rate=args.rate, duration=args.duration, directory=args.dir, summary_path=args.summary,
        watchers=args.watchers, anchor=args.anchor,
    )  # fmt: skip


def add_devnet_command(sub: Any) -> None:
    """Register ``devnet`` on the ``sez-node`` subparsers."""
    p = sub.add_parser(
        "devnet", help="run PAK, KSA, UAE and CHN nodes and watchers on loopback with corridor traffic"
    )
    p.add_argument(
        "--watchers", type=int, default=4, help="watchers, each serving every corridor (default 4)"
    )
    p.add_argument("--rate", type=float, default=50.0, help="transfers per second per corridor direction")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument(
        "--dir", type=Path, help="keep the nodes' folders here (default: a temporary folder, removed)"
    )
    p.add_argument("--summary", type=Path, help="write the summary as JSON here")
    p.add_argument(
        "--anchor", action="store_true",
        help="also anchor every log's quorum-final checkpoints on a local anvil chain (./run anvil-setup)",
    )  # fmt: skip
    p.set_defaults(func=cmd_devnet)
