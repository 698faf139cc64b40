"""The corridor lifecycle with real processes: two ``sez-node run`` daemons and the parties' CLI.

Both nodes start in DRAFT (the harness does not activate them) with the shipped PAK-KSA corridor
definition. Transfers are refused with the state named; each party signs the transitions with
``sez-node lifecycle sign`` (PAK first, KSA on PAK's file), PAK submits them, and KSA learns the
state from its replica of PAK's log. A transition signed by one party only, or naming another
definition, is refused and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.integration.netharness import (
    ROOT,
    Network,
    _child_env,
    _sez_node_argv,
    make_network,
    transfer,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

C = "PAK-KSA"
DEFINITION = ROOT / "configs" / "corridors" / f"{C}.json"


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    network = make_network(tmp_path, ["PAK", "KSA"], corridors=[C], activate=False)
    for spec in network.specs.values():  # name the shipped corridor definition in both configs
        raw = tomllib.loads(spec.config.read_text())
        raw["corridors"][0]["definition"] = str(DEFINITION)
        spec.config.write_text(tomli_w.dumps(raw))
    try:
        network.start()
        yield network
    finally:
        network.close()


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_sez_node_argv(), *args], input=stdin, capture_output=True, text=True, env=_child_env(),
        timeout=60, check=False,
    )  # fmt: skip


def sign(network: Network, party: str, *args: str, stdin: str | None = None) -> str:
    done = cli("lifecycle", "sign", "--config", str(network.specs[party].config), "--corridor", C, *args,
               stdin=stdin)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def both_sign(network: Network, source: str, target: str, definition: Path = DEFINITION) -> str:
    first = sign(network, "PAK", "--from", source, "--to", target, "--definition", str(definition))
    return sign(network, "KSA", "-", stdin=first)


def submit(network: Network, text: str) -> subprocess.CompletedProcess[str]:
    return cli("submit", "--config", str(network.specs["PAK"].config), "--corridor", C, "-", stdin=text)


def state(network: Network, party: str) -> str:
    return str(network[party].http.get(f"/v1/corridors/{C}/lifecycle").json()["state"])


def test_parties_take_the_corridor_from_draft_to_active(network: Network, tmp_path: Path) -> None:
    pak, ksa = network["PAK"], network["KSA"]
    refused = pak.submit(C, transfer("early"))
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("corridor-state") and "DRAFT" in refused.json()["detail"]
    assert state(network, "PAK") == state(network, "KSA") == "DRAFT"

    # One party's signature is not enough; another definition is not this corridor's.
    one_party = sign(network, "PAK", "--from", "DRAFT", "--to", "PENDING", "--definition", str(DEFINITION))
    done = submit(network, one_party)
    assert done.returncode == 1 and done.stderr.startswith("sez-node: missing-signature:"), done.stderr
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({**json.loads(DEFINITION.read_text()), "settlement": {"currencies": ["USD"]}})
    )
    done = submit(network, both_sign(network, "DRAFT", "PENDING", other))
    assert done.returncode == 1 and "definition-mismatch" in done.stderr, done.stderr
    assert pak.status(C)["log"]["size"] == 0  # nothing stored by any refusal

    # Both sign, PAK records: PENDING, then ACTIVE; KSA follows from its replica.
    for source, target in (("DRAFT", "PENDING"), ("PENDING", "ACTIVE")):
        done = submit(network, both_sign(network, source, target))
        assert done.returncode == 0, done.stderr
    assert state(network, "PAK") == "ACTIVE"
    wait_until(
        lambda: state(network, "KSA") == "ACTIVE", 60, "KSA to read ACTIVE from its replica", network=network
    )
    assert pak.submit(C, transfer("PAK-1")).status_code == 201
    assert ksa.submit(C, transfer("KSA-1", "KSA", "PAK")).status_code == 201
    lifecycle = ksa.http.get(f"/v1/corridors/{C}/lifecycle").json()
    assert [(h["from"], h["to"], h["signers"]) for h in lifecycle["history"]] == [
        ("DRAFT", "PENDING", ["KSA", "PAK"]), ("PENDING", "ACTIVE", ["KSA", "PAK"]),
    ]  # fmt: skip
    assert "transfer" in lifecycle["allowed_kinds"] and lifecycle["rejected"] == []
    assert pak.status(C)["lifecycle"] == "ACTIVE"
