"""``sez-node policy export``: a corridor's trust policy from a running node, for light clients (design §15).

Fetches ``GET /v1/corridors/{corridor}/policy`` (the same client as ``sez-node status``), checks it
before printing: it must parse under ``schemas/policy.json``, be of the corridor asked for, and name
*this node's* log key and the counterparty key of the node's own configuration (a light client's trust
starts from the operator, not from whatever the API answered). Prints it as canonical JSON
(``--format json``, the default) or as a C2SP tlog-policy file with the ``#sez`` stake extension
(``--format tlog-policy``; README "Trust policy"), to stdout or ``--out FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.policy import TrustPolicy

from .client_cli import _Api, _load, _print_json, _refusal, _write_new

__all__ = ["add_policy_commands", "fetch_policy"]


def fetch_policy(api: _Api, corridor_id: str) -> TrustPolicy:
    """The corridor's policy from the node's API, parsed and schema-checked.

    Raises:
        LocalProtocolError: the node refused (its problem reason), or answered something that is not
            a policy (``bad-answer`` with the parser's reason).
    """
    response = api.request("GET", f"/v1/corridors/{quote(corridor_id, safe='')}/policy")
    if response.status_code != 200:
        _refusal(response, f" (corridor {corridor_id})")
    try:
        policy = TrustPolicy.from_json(response.content)
    except PeerProtocolError as exc:
        raise LocalProtocolError(
            "bad-answer", f"the policy from {api.base_url} is not valid: {exc.reason}: {exc.message}"
        ) from exc
    if policy.corridor_id != corridor_id:
        raise LocalProtocolError(
            "bad-answer", f"asked for {corridor_id}, the node answered {policy.corridor_id}"
        )
    return policy


def cmd_policy_export(args: argparse.Namespace) -> int:
    """Print (or write) the corridor's trust policy as JSON or tlog-policy text."""
    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    with _Api(config) as api:
        policy = fetch_policy(api, corridor.id)
    expected = {
        corridor.origin: config.signing_key(corridor.origin).verifier(),
        corridor.counterparty_origin: corridor.counterparty_key,
    }
    for entry in policy.logs:
        if expected.get(entry.origin) != entry.key:
            raise LocalProtocolError(
                "bad-answer",
                f"the node's policy names log key {entry.key.to_vkey()} for {entry.origin}, "
                "which this node's configuration does not",
            )
    text = policy.to_json().decode() + "\n" if args.format == "json" else policy.to_tlog_policy()
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write_new(Path(args.out), text.encode())
        summary: dict[str, Any] = {
            "policy": args.out,
            "corridor": policy.corridor_id,
            "format": args.format,
            "watchers": len(policy.watchers),
            "bootstrap": policy.bootstrap,
        }
        _print_json(summary)
    return 0


def add_policy_commands(sub: Any) -> None:
    """Register ``policy export`` on the ``sez-node`` subparsers."""
    policy = sub.add_parser("policy", help="a corridor's trust policy for light clients")
    policysub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    p = policysub.add_parser(
        "export",
        help="print a corridor's trust policy from a running node (JSON or C2SP tlog-policy)",
        description="Fetch the corridor's trust policy (log keys, active watchers and their stake, the "
        "quorum rule) from the node's API, check it against this node's configuration, and print it.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.add_argument(
        "--format", choices=("json", "tlog-policy"), default="json", help="output format (default json)"
    )
    p.add_argument("--out", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    p.set_defaults(func=cmd_policy_export)
