"""``sez-node settle`` and ``sez-node settlements``: bilateral settlement through a running node's API
(design §12, issue 9; the node side is :mod:`node.settlement`).

* ``settle --config F --corridor C`` asks the node to propose the corridor's next settlement window to
  the counterparty node. On success it prints the co-signed statement and the node's ``settlement``
  receipt as one JSON line, after checking both signatures under the corridor's registered keys (our
  log key from our signing key, the counterparty's from ``counterparty_vkey``). A refusal ends in one
  line ``sez-node: <reason>: <message>`` (exit 1) whose message names the refusing log and, for a
  statement that nets differently on the other side, each differing figure (``field: proposed X,
  computed Y``).
* ``settlements --config F --corridor C`` prints the settlement receipts of both logs as JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.settlement import verify_statement

from .client_cli import _Api, _load, _print_json, _refusal

__all__ = ["add_settle_commands", "describe_refusal"]

MAX_LISTED_DIFFERENCES = 8
"""Differing figures spelled out in the one-line error; the rest are counted."""


def describe_refusal(body: Any) -> str | None:
    """The one-line message of a settlement refusal problem document (None if ``body`` is not one)."""
    if not isinstance(body, dict) or not str(body.get("type", "")).startswith("urn:sez:problem:"):
        return None
    message = str(body.get("detail", ""))
    differences = body.get("differences")
    if isinstance(differences, list) and differences:
        shown = [
            f"{d.get('field')}: proposed {json.dumps(d.get('proposed'))}, "
            f"computed {json.dumps(d.get('computed'))}"
            for d in differences[:MAX_LISTED_DIFFERENCES]
            if isinstance(d, dict)
        ]
        more = len(differences) - len(shown)
        message += " [" + "; ".join(shown) + (f"; and {more} more" if more > 0 else "") + "]"
    return message


def cmd_settle(args: argparse.Namespace) -> int:
    """Propose the next settlement window through the node; print the verified co-signed statement."""
    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    keys = {
        corridor.origin: config.signing_key(corridor.origin).verifier(),
        corridor.counterparty_origin: corridor.counterparty_key,
    }
    headers = {"Authorization": f"Bearer {config.api_token()}"}
    with _Api(config) as api:
        response = api.request(
            "POST", f"/v1/corridors/{quote(corridor.id, safe='')}/settlements", headers=headers
        )
    if response.status_code != 201:
        try:
            body = response.json()
        except ValueError:
            body = None
        message = describe_refusal(body)
        if message is None:
            _refusal(response, f" (corridor {corridor.id})")
        raise LocalProtocolError(str(body["type"]).removeprefix("urn:sez:problem:"), message)
    try:
        result = response.json()
        verify_statement(result["statement"], keys)
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalProtocolError("bad-answer", f"the node's settlement answer is not one: {exc}") from exc
    except PeerProtocolError as exc:
        raise LocalProtocolError(
            exc.reason, f"the node answered with a statement that does not verify: {exc.message}"
        ) from exc
    _print_json(result)
    return 0


def cmd_settlements(args: argparse.Namespace) -> int:
    """Print the settlement receipts of both logs of a corridor."""
    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    with _Api(config) as api:
        response = api.request("GET", f"/v1/corridors/{quote(corridor.id, safe='')}/settlements")
    if response.status_code != 200:
        _refusal(response, f" (corridor {corridor.id})")
    try:
        _print_json(response.json())
    except ValueError as exc:
        raise LocalProtocolError("bad-answer", f"settlements of {corridor.id} are not JSON") from exc
    return 0


def add_settle_commands(sub: Any) -> None:
    """Register ``settle`` and ``settlements`` on the ``sez-node`` subparsers."""
    p = sub.add_parser(
        "settle",
        help="propose the corridor's next settlement window to the counterparty (via the running node)",
        description="The node nets the transfers of both logs from the last settled window to the "
        "quorum-final sizes, signs, and asks the counterparty node to countersign; both then write the "
        "co-signed statement into their logs. Prints the statement and our receipt as JSON.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.set_defaults(func=cmd_settle)

    p = sub.add_parser("settlements", help="print the settlement receipts of both logs of a corridor")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.set_defaults(func=cmd_settlements)
