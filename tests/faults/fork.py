"""Fork and disk-loss scenarios: a node's own log goes wrong, the network puts it right (design §8).

``fork`` (:func:`run_forks`): PAK and KSA with ``WATCHERS`` real ``sez-watcher run`` processes, each
bonded through the CLI (``sez-watcher bond`` piped into ``sez-node submit``) and active. Each fork,
under load:

1. both nodes take transfers, then the network converges (every receipt quorum-final);
2. PAK is stopped and its data directory copied (the backup); PAK takes more transfers, which KSA
   replicates and the watchers finalize: the *canonical branch* past the backup;
3. KSA goes down and PAK is restored from the backup and started: its own-log check finds nobody
   within ``own_log_check_timeout`` (3 s) and it takes ``LOSING_WRITES`` transfers on the old branch
   (the *losing branch*; had it written nothing, it would pull its later receipts back from KSA on
   reconnection and no fork would happen);
4. KSA comes back while PAK keeps taking a transfer a second: KSA's replica sees a receipt PAK signed
   that conflicts with the one it holds; both nodes halt (ACTIVE -> HALTED with the evidence);
5. KSA, whose log is not the forked one, finds that its branch of PAK's log holds a quorum of bonded
   stake and writes HALTED -> ACTIVE with a ``quorum`` resolution, which PAK verifies; PAK sets its
   losing branch aside (kept, listed by ``/orphans``), pulls the canonical branch from KSA, checks its
   root and resumes. No operator acts.

Checked after each fork: both nodes ACTIVE with the resolution ``quorum``, no unresolved fork, PAK's
log equal to KSA's copy, every receipt PAK acknowledged on the losing branch found in PAK's orphans
(kept, never deleted), the network converged again (the converge time runs from KSA's restart).
At the end: every acknowledged receipt of the canonical branches served byte for byte (``lost`` must
be 0), no watcher slashed (the honest watchers never cosigned the losing branch), clean exits, fsck
clean and identical copies.

``disk-loss`` (:func:`run_disk_losses`): PAK and KSA; each loss, under load on the other node, a node
(PAK and KSA in turn) is SIGKILLed, its data directory deleted (keys and config kept) and the node
started again: it must pull its own log back from its counterparty before writing (``recovery.pulled``),
resume at the right sequence without a fork, and the network converge. At the end every acknowledged
receipt is served byte for byte, fsck clean.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.faults.crash import WatcherProcess
from tests.faults.harness import (
    CORRIDOR,
    AckLoad,
    Tally,
    count_lost,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.netharness import (
    Network,
    _child_env,
    _sez_node_argv,
    make_network,
    transfer,
    wait_until,
)
from tests.integration.test_watcher_process import _watcher_argv
from tests.integration.watched import make_watched_network

__all__ = ["run_disk_losses", "run_forks"]

WATCHERS = 4
BOND = 1000
TIMEOUT = 90.0
LOSING_WRITES = 5
"""Transfers the restored PAK takes while KSA is down (without them PAK would heal by pulling)."""
PROVOKE_EVERY = 1.0
"""Seconds between the transfers PAK takes on the losing branch until KSA halts."""


def _make_watched_network(base: Path) -> tuple[Network, list[WatcherProcess]]:
    network, folders = make_watched_network(base, WATCHERS, corridor=CORRIDOR)
    watchers = [WatcherProcess(network.child(f.name), f.config, f.http_port) for f in folders]
    return network, watchers


def _bond_through_cli(network: Network, watcher: WatcherProcess) -> None:
    """``sez-watcher bond ... | sez-node submit --config PAK --corridor C -``."""
    escrow = f"escrow-{watcher.config.parent.name}"
    argv = [*_watcher_argv(), "bond", "--config", str(watcher.config), "--corridor", CORRIDOR,
            "--amount", str(BOND), "--currency", "USD", "--collateral-ref", escrow]  # fmt: skip
    request = subprocess.run(argv, capture_output=True, text=True, check=True, env=_child_env(), timeout=60)
    pak_config = str(network["PAK"].spec.config)
    submit = subprocess.run(
        [*_sez_node_argv(), "submit", "--config", pak_config, "--corridor", CORRIDOR, "-"],
        input=request.stdout, capture_output=True, text=True, check=False, env=_child_env(), timeout=60,
    )  # fmt: skip
    if submit.returncode != 0:
        raise AssertionError(f"bond of {watcher.config.parent.name} refused: {submit.stderr}")


def _watchers(network: Network, node: str) -> dict[str, Any]:
    entries: dict[str, Any] = network[node].http.get(f"/v1/corridors/{CORRIDOR}/watchers").json()
    return entries


def _active_watchers(network: Network, node: str) -> int:
    return sum(1 for w in _watchers(network, node)["watchers"] if w["active"])


def _lifecycle(network: Network, node: str) -> dict[str, Any]:
    state: dict[str, Any] = network[node].http.get(f"/v1/corridors/{CORRIDOR}/lifecycle").json()
    return state


def _resolutions(network: Network, node: str) -> int:
    return sum(
        1 for t in _lifecycle(network, node)["history"] if (t["from"], t["to"]) == ("HALTED", "ACTIVE")
    )


def _orphaned_bytes(network: Network) -> set[bytes]:
    """PAK's orphaned receipts, each in the form of :func:`_canonical_json`."""
    listing = network["PAK"].http.get(f"/v1/corridors/{CORRIDOR}/orphans").json()
    return {
        json.dumps(r, separators=(",", ":"), sort_keys=True).encode()
        for record in listing["sets"]
        for r in record["receipts"]
    }


def _canonical_json(raw: bytes) -> bytes:
    return json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True).encode()


class _Forks:
    """The fork scenario's network, loads and tallies (see the module docstring)."""

    def __init__(self, base: Path, rng: random.Random, tally: Tally, log: Any) -> None:
        self.base, self.rng, self.tally, self.log = base, rng, tally, log
        self.network, self.watchers = _make_watched_network(base)
        self.acked: dict[str, dict[str, tuple[int, bytes]]] = {"PAK": {}, "KSA": {}}
        self.losing: dict[str, bytes] = {}
        """Receipts PAK acknowledged on a losing branch (they must end in its orphans)."""
        self.loads: list[AckLoad] = []

    def load_for(self, names: tuple[str, ...], prefix: str, seconds: float) -> None:
        """Transfers to ``names`` for ``seconds`` (after each took one); acknowledged ones recorded."""
        self.loads[:] = [AckLoad(self.network[n], f"{n}-{prefix}", pause=0.01).start() for n in names]
        try:
            for load in self.loads:
                load.wait_acked(1, TIMEOUT)
            time.sleep(seconds)
        finally:
            self.stop_loads()

    def stop_loads(self) -> None:
        for load in self.loads:
            load.stop()
            self.acked[load.node.spec.jurisdiction].update(load.acked)
        self.loads.clear()

    def bond_all(self) -> None:
        """Bonds while KSA is down: one checkpoint covers all of them, KSA's cosignature makes them final."""
        network = self.network
        network.start("PAK")
        for watcher in self.watchers:
            watcher.start()
            _bond_through_cli(network, watcher)
        network.start("KSA")
        for node in ("PAK", "KSA"):
            wait_until(lambda node=node: _active_watchers(network, node) == WATCHERS, TIMEOUT,
                       f"{node} to count {WATCHERS} active watchers", network=network)  # fmt: skip
        wait_connected(network)

    def fork_once(self, index: int) -> float:
        """One fork, from the backup to convergence after the recovery; the seconds from KSA's restart."""
        network, rng = self.network, self.rng
        pak, ksa = network["PAK"], network["KSA"]
        pak_dir = network.specs["PAK"].data_dir
        self.load_for(("PAK", "KSA"), f"f{index}-before", rng.uniform(0.5, 1.5))
        wait_converged(network)
        assert pak.stop() == 0
        backup = self.base / f"backup-{index}"
        shutil.copytree(pak_dir, backup)
        network.start("PAK")
        self.load_for(("PAK",), f"f{index}-canonical", rng.uniform(0.5, 1.5))
        wait_converged(network)  # the canonical branch past the backup is quorum-final

        before = _resolutions(network, "KSA")
        assert ksa.stop() == 0 and pak.stop() == 0
        shutil.rmtree(pak_dir)
        shutil.copytree(backup, pak_dir)
        network.start("PAK")  # its own-log check times out: nobody to ask
        provoked = 0
        for _ in range(LOSING_WRITES):  # PAK writes on the old branch while KSA is away
            response = pak.submit(CORRIDOR, transfer(f"PAK-f{index}-losing-{provoked}"))
            provoked += 1
            if response.status_code != 201:
                raise AssertionError(f"restored PAK refused a transfer: {response.text}")
            self.losing[f"f{index}-{provoked}"] = response.content
        network.start("KSA")
        started = time.monotonic()

        def halted_or_provoke() -> bool:
            nonlocal provoked
            if ksa.status(CORRIDOR)["halted"] or _resolutions(network, "KSA") > before:
                return True
            response = pak.submit(CORRIDOR, transfer(f"PAK-f{index}-losing-{provoked}"))
            provoked += 1
            if response.status_code == 201:
                self.losing[f"f{index}-{provoked}"] = response.content
            time.sleep(PROVOKE_EVERY)
            return False

        wait_until(halted_or_provoke, TIMEOUT, "KSA to detect the fork", network=network)

        def resolved() -> bool:
            for node in ("PAK", "KSA"):
                state = _lifecycle(network, node)
                last = state["history"][-1]
                if state["state"] != "ACTIVE" or state["forks"] or _resolutions(network, node) <= before:
                    return False
                if (last["from"], last["to"]) != ("HALTED", "ACTIVE"):
                    return False
            recovery = pak.status(CORRIDOR)["recovery"]
            return bool(recovery["state"] == "ready" and not recovery["recovering"])

        wait_until(resolved, TIMEOUT, "the fork to be resolved by quorum and PAK to recover", network=network)
        last = _lifecycle(network, "KSA")["history"][-1]
        if not last["reason"].startswith("quorum resolution"):
            self.tally.failures.append(f"fork {index}: resolved by {last['reason']!r}, not by quorum")
        wait_converged(network)
        return time.monotonic() - started

    def finish(self) -> None:
        """The end checks: losing branches kept, no watcher slashed, nothing lost, clean stop and fsck."""
        network, tally = self.network, self.tally
        kept = _orphaned_bytes(network)
        missing = [key for key, raw in self.losing.items() if _canonical_json(raw) not in kept]
        if missing:
            tally.failures.append(f"receipts acknowledged on the losing branch and not kept: {missing[:10]}")
        slashed = [w for w in _watchers(network, "KSA")["watchers"] if w["slashed"]]
        if slashed:
            tally.failures.append(f"honest watchers slashed: {slashed}")
        count_lost(tally, network, self.acked)
        tally.notes.append(
            f"receipts acknowledged on the losing branches and set aside (kept in /orphans): "
            f"{len(self.losing)}; watchers bonded {WATCHERS}, slashed {len(slashed)}"
        )
        for watcher in self.watchers:
            watcher.child.stop()
        stop_and_check(tally, network)


def run_forks(base: Path, *, forks: int = 3, seed: int = 0, log: Any = print) -> Tally:
    """Run the fork scenario under ``base``; return its tally."""
    tally = Tally("fork")
    scenario = _Forks(base, random.Random(seed), tally, log)
    try:
        scenario.bond_all()
        for index in range(1, forks + 1):
            seconds = scenario.fork_once(index)
            tally.converge_seconds.append(seconds)
            tally.faults += 1
            log(f"  fork {index}/{forks}: halted, resolved by quorum, PAK recovered in {seconds:.2f} s")
        scenario.finish()
    finally:
        scenario.stop_loads()
        scenario.network.close()
    return tally


def run_disk_losses(base: Path, *, losses: int = 4, seed: int = 0, log: Any = print) -> Tally:
    """Run the disk-loss scenario under ``base``; return its tally."""
    rng = random.Random(seed)
    tally = Tally("disk-loss")
    network = make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=20,
                           own_log_check_timeout=30.0)  # fmt: skip
    acked: dict[str, dict[str, tuple[int, bytes]]] = {"PAK": {}, "KSA": {}}
    loads: list[AckLoad] = []
    try:
        network.start()
        wait_connected(network)
        for index in range(1, losses + 1):
            victim, other = ("PAK", "KSA") if index % 2 else ("KSA", "PAK")
            loads[:] = [AckLoad(network[n], f"{n}-l{index}", pause=0.005).start() for n in ("PAK", "KSA")]
            time.sleep(rng.uniform(0.5, 1.5))
            loads[0 if victim == "PAK" else 1].stop()  # what the victim acknowledged must reach the other
            wait_until(
                lambda victim=victim, other=other: network[other].status(CORRIDOR)["counterparty"]["size"]
                == network[victim].status(CORRIDOR)["log"]["size"],
                TIMEOUT, f"{other} to hold {victim}'s whole log", network=network,
            )  # fmt: skip
            size = network[victim].status(CORRIDOR)["log"]["size"]
            assert network[victim].kill() == -9
            shutil.rmtree(network.specs[victim].data_dir)
            started = time.monotonic()
            network.start(victim)  # ready once its own-log check has completed
            recovery = network[victim].status(CORRIDOR)["recovery"]
            if recovery["pulled"] < size:
                tally.failures.append(
                    f"loss {index}: {victim} pulled {recovery['pulled']} of its {size} receipts"
                )
            for load in loads:
                load.stop()
                acked[load.node.spec.jurisdiction].update(load.acked)
            loads.clear()
            wait_converged(network)
            tally.converge_seconds.append(time.monotonic() - started)
            tally.faults += 1
            for node in ("PAK", "KSA"):
                status = network[node].status(CORRIDOR)
                if status["halted"] or status["forks"]:
                    tally.failures.append(f"loss {index}: {node} saw a fork: {status['forks']}")
            log(f"  loss {index}/{losses} ({victim}): recovered {size} receipts, converged in "
                f"{tally.converge_seconds[-1]:.2f} s")  # fmt: skip
        count_lost(tally, network, acked)
        stop_and_check(tally, network)
    finally:
        for load in loads:
            load.stop()
        network.close()
    return tally
