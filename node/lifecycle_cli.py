"""``sez-node lifecycle sign|status``: the parties' side of the corridor lifecycle (design §9).

A transition needs the signatures its row requires (both parties for DRAFT -> PENDING, PENDING ->
ACTIVE and DEPRECATED; the suspending party for a suspension and its resumption). Each party signs
with its own node's key, offline, and passes the file on::

    sez-node lifecycle sign --config pak/node.toml --corridor PAK-KSA --from DRAFT --to PENDING \\
        --definition configs/corridors/PAK-KSA.json --reason "definition agreed" > t.json
    sez-node lifecycle sign --config ksa/node.toml --corridor PAK-KSA t.json > t2.json
    sez-node submit --config pak/node.toml --corridor PAK-KSA t2.json

The file is one JSON line ``{"kind": "lifecycle", "payload": {...}}``, the input of ``sez-node
submit``. Signing checks the payload's stateless rules (``protocol.lifecycle.check_payload``) except
that signatures may still be missing; the node checks the rest against the corridor's state.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from protocol import schemas
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.lifecycle import State, definition_digest, sign

from .client_cli import _Api, _load, _print_json, _refusal

__all__ = ["add_lifecycle_commands"]


def _read_transition(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalProtocolError("no-file", f"cannot read {path}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise LocalProtocolError("bad-json", f"{path} is not JSON: {exc}") from exc
    if (
        isinstance(document, dict)
        and document.get("kind") == "lifecycle"
        and isinstance(document.get("payload"), dict)
    ):
        payload: dict[str, Any] = document["payload"]
        return payload
    raise LocalProtocolError("bad-transition", f'{path} is not {{"kind": "lifecycle", "payload": {{…}}}}')


def _new_payload(args: argparse.Namespace) -> dict[str, Any]:
    if not args.from_state or not args.to_state:
        raise LocalProtocolError("usage", "give --from and --to for a new transition, or a FILE to sign")
    payload: dict[str, Any] = {
        "corridor_id": args.corridor,
        "from": args.from_state,
        "to": args.to_state,
        "reason": args.reason or f"{args.from_state} -> {args.to_state}",
    }
    if args.definition:
        try:
            definition = json.loads(Path(args.definition).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LocalProtocolError("bad-definition", f"cannot read {args.definition}: {exc}") from exc
        payload["definition_digest"] = definition_digest(definition).hex()
    if args.authority:
        payload["authority"] = args.authority
    if args.branch:  # HALTED -> ACTIVE: the branch that stays canonical (design §8)
        origin, _, rest = args.branch.rpartition("@")
        size, _, root = rest.partition(":")
        if not origin or not size.isdigit() or not root:
            raise LocalProtocolError("usage", "--branch is ORIGIN@SIZE:ROOTHEX")
        payload["resolution"] = {
            "method": args.method,
            "branch": {"origin": origin, "size": int(size), "root": root.lower()},
        }
    return payload


def cmd_sign(args: argparse.Namespace) -> int:
    """Add this node's signature to a lifecycle transition (new, or read from FILE); print it."""
    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    payload = _read_transition(args.file) if args.file else _new_payload(args)
    if payload.get("corridor_id") != corridor.id:
        raise LocalProtocolError(
            "wrong-corridor", f"the transition is for {payload.get('corridor_id')}, not {corridor.id}"
        )
    if any(entry.get("party") == corridor.party for entry in payload.get("signatures", [])):
        raise LocalProtocolError("already-signed", f"{corridor.party} has signed this transition already")
    signed = sign(payload, {corridor.party: config.signing_key(corridor.origin)})
    try:
        schemas.validate("payload.lifecycle", signed)
    except PeerProtocolError as exc:
        raise LocalProtocolError(exc.reason, f"the transition is malformed: {exc.message}") from exc
    line = json.dumps({"kind": "lifecycle", "payload": signed}, separators=(",", ":"))
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    else:
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the corridor's lifecycle state and history from the running node."""
    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    with _Api(config) as api:
        response = api.request("GET", f"/v1/corridors/{quote(corridor.id, safe='')}/lifecycle")
        if response.status_code != 200:
            _refusal(response)
        _print_json(response.json())
    return 0


def add_lifecycle_commands(sub: Any) -> None:
    """Register ``lifecycle sign`` and ``lifecycle status`` on the ``sez-node`` subparsers."""
    lifecycle = sub.add_parser("lifecycle", help="sign corridor lifecycle transitions; show the state")
    lsub = lifecycle.add_subparsers(dest="action", required=True, metavar="ACTION")
    states = [str(state) for state in State]
    p = lsub.add_parser("sign", help="sign a transition (new with --from/--to, or FILE from the other party)")
    p.add_argument("--config", required=True, metavar="FILE", help="this node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.add_argument("file", nargs="?", metavar="FILE", help="a transition the other party signed, or -")
    p.add_argument("--from", dest="from_state", choices=states)
    p.add_argument("--to", dest="to_state", choices=states)
    p.add_argument("--reason", help="why (recorded in the log)")
    p.add_argument(
        "--definition", metavar="JSON", help="the corridor definition (DRAFT->PENDING, PENDING->ACTIVE)"
    )
    p.add_argument("--authority", metavar="PARTY", help="the suspending party (SUSPENDED and back)")
    p.add_argument(
        "--branch", metavar="ORIGIN@SIZE:ROOT",
        help="HALTED->ACTIVE: the canonical branch (a checkpoint of ORIGIN: size and hex root)",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=["two-party", "quorum"], default="two-party",
        help="how the branch was chosen (with --branch; default two-party: both parties sign)",
    )  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="write the signed transition here (default: stdout)")
    p.set_defaults(func=cmd_sign)
    p = lsub.add_parser("status", help="the corridor's lifecycle state and history from the running node")
    p.add_argument("--config", required=True, metavar="FILE", help="this node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.set_defaults(func=cmd_status)
