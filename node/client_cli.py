"""``sez-node init``, ``peer add``, ``submit``, ``status`` and ``proof``: setting up a node, and
talking to a running node's HTTP API (design §15).

Setting up a node takes two steps, because a corridor needs facts from both parties:

1. ``sez-node init`` creates the node's folder: ``node.toml``, ``signing.key``, ``api.token`` and
   ``identity.key`` (all secrets mode 0600). It prints what the counterparty needs, as JSON: the
   libp2p address with the peer id (``listen``) and, per corridor, our origin and its verifier key
   (``origins``). The counterparty's key and address are not known yet, so each corridor gets
   ``peers = []`` and a placeholder ``counterparty_vkey`` that ``load_config`` (hence ``sez-node
   run``) refuses, naming the field and saying to run ``sez-node peer add``.
2. ``sez-node peer add`` fills one corridor from what the counterparty's ``init`` printed: their
   verifier key for the corridor and their listen address.

The placeholder keeps the file schema-valid (the schema requires ``counterparty_vkey``) and keeps
every corridor's origins visible in the file from the start, so an operator sees what is missing.

The API commands read the node's own configuration for the address, the bearer token and the keys
that receipts and proof bundles must verify under. Every failure is one line ``sez-node: <reason>:
<message>`` with exit status 1 (node/cli.py prints it); a node that does not answer is
``unreachable``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote

import httpx
import tomli_w

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import VerifierKey
from protocol.light import verify_bundle, verify_receipt_bundle
from protocol.receipts import Receipt, verify_receipt
from protocol.schemas import load_schema

from .config import JURISDICTION_NAMES, ConfigError, NodeConfig, load_config, write_initial_config
from .keyfile import load_signing_key
from .log_cli import non_negative as _non_negative

__all__ = ["add_client_commands"]

DEFAULT_PORTS = {"PAK": (7101, 8101), "KSA": (7102, 8102), "UAE": (7103, 8103), "CHN": (7104, 8104)}
"""(libp2p port, HTTP API port) per jurisdiction, so four nodes fit on one machine."""
KNOWN_CORRIDORS = ("PAK-KSA", "PAK-UAE", "PAK-CHN")
"""The corridors of design §3; ``init`` joins the ones its jurisdiction is a party to."""
PLACEHOLDER_PREFIX = "UNSET: run sez-node peer add"
"""Start of the placeholder ``counterparty_vkey`` written by ``init`` (no ``+``: never a valid vkey)."""

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to the node's API (it is on loopback: a slow connect is a dead node)."""
REQUEST_TIMEOUT = 60.0
"""Seconds to wait for an answer; a submission is answered only once its batch is durable."""
MAX_LINE_BYTES = 64 * 1024
"""One transition line, as the API's body limit (``node.api.MAX_BODY_BYTES``)."""
MAX_BUNDLE_BYTES = 1024 * 1024
"""A proof bundle is a few kilobytes; anything this large is not one."""

_FILES = ("node.toml", "signing.key", "api.token", "identity.key")


def _print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=True), flush=True)


def _schema_pattern(*path: str) -> re.Pattern[str]:
    """A ``pattern`` of ``schemas/config.node.json``, so the CLI checks exactly what the loader will."""
    node: Any = load_schema("config.node")
    for part in path:
        node = node[part]
    return re.compile(node["pattern"])


def _placeholder(corridor_id: str) -> str:
    return f"{PLACEHOLDER_PREFIX} --corridor {corridor_id}"


def _corridor_parties(corridor_id: str, jurisdiction: str) -> str:
    """Check ``corridor_id`` for a node of ``jurisdiction``; return the other party."""
    parties = corridor_id.split("-")
    if len(parties) != 2 or parties[0] == parties[1] or not all(p in JURISDICTION_NAMES for p in parties):
        raise LocalProtocolError(
            "bad-corridor",
            f"corridor {corridor_id!r} is not two different jurisdictions of "
            f"{', '.join(sorted(JURISDICTION_NAMES))} joined by '-', e.g. PAK-KSA",
        )
    if jurisdiction not in parties:
        raise LocalProtocolError("bad-corridor", f"{jurisdiction} is not a party to corridor {corridor_id}")
    return parties[1] if parties[0] == jurisdiction else parties[0]


# --- init and peer add ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Create a node folder and print what the counterparties need."""
    jurisdiction: str = args.jurisdiction
    out = Path(args.out)
    p2p_port, http_port = DEFAULT_PORTS[jurisdiction]
    listen: str = args.listen or f"/ip4/127.0.0.1/tcp/{p2p_port}"
    http: str = args.http or f"127.0.0.1:{http_port}"
    if not _schema_pattern("properties", "node", "properties", "listen").fullmatch(listen):
        raise LocalProtocolError("bad-listen", f"--listen {listen!r} is not /ip4/HOST/tcp/PORT (or /ip6/…)")
    port = http.rpartition(":")[2]
    if not (
        _schema_pattern("properties", "node", "properties", "http").fullmatch(http) and 0 < int(port) < 65536
    ):
        raise LocalProtocolError("bad-http", f"--http {http!r} is not HOST:PORT")
    corridor_ids: list[str] = args.corridor or [c for c in KNOWN_CORRIDORS if jurisdiction in c.split("-")]
    if not corridor_ids:
        raise LocalProtocolError(
            "no-corridor",
            f"{jurisdiction} is a party to none of {', '.join(KNOWN_CORRIDORS)}; name one with --corridor",
        )
    if len(set(corridor_ids)) != len(corridor_ids):
        raise LocalProtocolError("bad-corridor", "a corridor is named twice")
    name = JURISDICTION_NAMES[jurisdiction]
    corridors: list[dict[str, Any]] = []
    for corridor_id in corridor_ids:
        other = _corridor_parties(corridor_id, jurisdiction)
        corridors.append(
            {
                "id": corridor_id,
                "origin": f"{name}/corridor/{corridor_id}",
                "counterparty_origin": f"{JURISDICTION_NAMES[other]}/corridor/{corridor_id}",
                "counterparty_vkey": _placeholder(corridor_id),
                "peers": [],
            }
        )
    # Refuse before writing anything: a half-made folder would need cleaning by hand.
    for file_name in _FILES:
        if (out / file_name).exists():
            raise LocalProtocolError("file-exists", f"{out / file_name} exists; refusing to overwrite a node")
    config_path = write_initial_config(
        out, jurisdiction=jurisdiction, listen=listen, http=http, corridors=corridors
    )
    from .p2p.identity import generate_identity, peer_id_of, save_identity  # noqa: PLC0415 - libp2p takes 2 s to import

    identity = generate_identity()
    save_identity(identity, out / "identity.key")
    peer_id = peer_id_of(identity)
    base_key = load_signing_key(out / "signing.key")
    origins = {}
    for corridor in corridors:
        origin = corridor["origin"]
        verifier = VerifierKey(name=origin, public=base_key.public)
        origins[corridor["id"]] = {"origin": origin, "vkey": verifier.to_vkey()}
    _print_json(
        {
            "config": str(config_path.resolve()),
            "jurisdiction": jurisdiction,
            "peer_id": peer_id,
            "listen": f"{listen}/p2p/{peer_id}",
            "http": http,
            "origins": origins,
        }
    )
    print(
        "sez-node: next: give the counterparty the listen address and the corridor's vkey printed above, "
        f"then, with theirs, run `sez-node peer add --config {config_path} --corridor ID "
        "--vkey THEIR_VKEY --peer THEIR_LISTEN` for each corridor",
        file=sys.stderr,
    )
    return 0


def _check_peer(address: str, own_peer_id: str | None) -> str:
    pattern = _schema_pattern("properties", "corridors", "items", "properties", "peers", "items")
    if not pattern.fullmatch(address):
        raise LocalProtocolError(
            "bad-peer", f"--peer {address!r} is not /ip4/HOST/tcp/PORT/p2p/PEER_ID (as init prints it)"
        )
    peer_id = address.rsplit("/p2p/", 1)[1]
    try:
        from .p2p.identity import parse_peer_id  # noqa: PLC0415 - libp2p takes 2 s to import

        parse_peer_id(peer_id)
    except LocalProtocolError as exc:
        raise LocalProtocolError("bad-peer", f"--peer {address!r}: {exc.message}") from exc
    if peer_id == own_peer_id:
        raise LocalProtocolError("bad-peer", f"--peer {address!r} is this node's own peer id")
    return address


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (same mode), so a crash leaves the old or the new file."""
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_peer_add(args: argparse.Namespace) -> int:
    """Fill in one corridor's counterparty key and peer address."""
    path = Path(args.config)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "configuration file does not exist") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    corridors = document.get("corridors")
    if not isinstance(corridors, list):
        raise ConfigError("corridors", f"{path} lists no corridors")
    index, entry = next(
        ((i, c) for i, c in enumerate(corridors) if isinstance(c, dict) and c.get("id") == args.corridor),
        (-1, None),
    )
    if entry is None:
        known = ", ".join(str(c.get("id")) for c in corridors if isinstance(c, dict)) or "none"
        raise LocalProtocolError(
            "unknown-corridor", f"{path} has no corridor {args.corridor!r} (it has: {known})"
        )
    where = f"corridors[{index}]"
    try:
        key = VerifierKey.from_vkey(args.vkey)
    except PeerProtocolError as exc:
        raise LocalProtocolError("bad-vkey", f"--vkey: {exc.message}") from exc
    expected = entry.get("counterparty_origin")
    if key.name != expected:
        raise LocalProtocolError(
            "bad-vkey",
            f"--vkey is named {key.name!r}, but the counterparty's log in {args.corridor} is {expected!r}: "
            "use the vkey the counterparty's init printed for this corridor",
        )
    if key.name == entry.get("origin"):
        raise LocalProtocolError("bad-vkey", "--vkey is this node's own key")
    current = entry.get("counterparty_vkey", "")
    if not str(current).startswith(PLACEHOLDER_PREFIX) and current != args.vkey:
        raise LocalProtocolError(
            "vkey-exists",
            f"{where}.counterparty_vkey is already {current!r}; changing a counterparty's key is a "
            "trust decision: edit the file by hand",
        )
    own_peer_id: str | None = None
    identity_file = path.parent / str(document.get("node", {}).get("identity_key", "identity.key"))
    if identity_file.exists():
        from .p2p.identity import load_identity, peer_id_of  # noqa: PLC0415 - libp2p takes 2 s to import

        own_peer_id = peer_id_of(load_identity(identity_file))
    peers = list(entry.get("peers", []))
    for address in args.peer:
        _check_peer(address, own_peer_id)
        if address not in peers:
            peers.append(address)
    entry["counterparty_vkey"] = args.vkey
    entry["peers"] = peers
    _write_atomically(path, tomli_w.dumps(document))
    pending = [
        str(c.get("id"))
        for c in corridors
        if isinstance(c, dict) and str(c.get("counterparty_vkey", "")).startswith(PLACEHOLDER_PREFIX)
    ]
    _print_json(
        {
            "config": str(path.resolve()),
            "corridor": args.corridor,
            "counterparty_origin": key.name,
            "counterparty_vkey": args.vkey,
            "peers": peers,
            "pending": pending,
        }
    )
    return 0


# --- the API commands ----------------------------------------------------------------------------


def _load(path: str) -> NodeConfig:
    """``load_config``, with a plain instruction when ``init`` placeholders are still in the file."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = {}  # load_config reports it
    corridors = raw.get("corridors")
    for index, entry in enumerate(corridors if isinstance(corridors, list) else []):
        if isinstance(entry, dict) and str(entry.get("counterparty_vkey", "")).startswith(PLACEHOLDER_PREFIX):
            raise ConfigError(
                f"corridors[{index}].counterparty_vkey",
                f"the counterparty of {entry.get('id')} is not set yet; run `sez-node peer add --config "
                f"{path} --corridor {entry.get('id')} --vkey VKEY --peer MULTIADDR`",
            )
    return load_config(path)


def _base_url(config: NodeConfig) -> str:
    host = config.http_host
    if host in ("0.0.0.0", "*", ""):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    return f"http://{host}:{config.http_port}"


class _Api:
    """A synchronous HTTP client of one node's API that turns transport failures into ``SezError``."""

    def __init__(self, config: NodeConfig) -> None:
        self.base_url = _base_url(config)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            trust_env=False,  # the API is on loopback: never through an HTTP proxy from the environment
        )

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise LocalProtocolError("unreachable", f"node API at {self.base_url} is not answering") from exc
        except httpx.TimeoutException as exc:
            raise LocalProtocolError(
                "timeout", f"node API at {self.base_url} did not answer within {REQUEST_TIMEOUT:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise LocalProtocolError("http-error", f"node API at {self.base_url}: {exc}") from exc


def _refusal(response: httpx.Response, suffix: str = "") -> NoReturn:
    """Raise the problem document of a non-2xx ``response`` as ``reason: detail``."""
    reason, detail = f"http-{response.status_code}", response.text.strip()[:200] or response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and str(body.get("type", "")).startswith("urn:sez:problem:"):
        reason = str(body["type"]).removeprefix("urn:sez:problem:")
        detail = str(body.get("detail", ""))
    raise LocalProtocolError(reason, f"{detail}{suffix}")


def _lines(source: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(source, start=1):
        if len(raw) > MAX_LINE_BYTES + 2:
            raise LocalProtocolError("too-large", f"line over {MAX_LINE_BYTES} bytes (line {number})")
        line = raw.strip()
        if line:
            yield number, line


def _submit_all(api: _Api, config: NodeConfig, corridor_id: str, source: IO[bytes], name: str) -> int:
    corridor = config.corridor(corridor_id)
    verifier = config.signing_key(corridor.origin).verifier()
    headers = {"Authorization": f"Bearer {config.api_token()}", "Content-Type": "application/json"}
    url = f"/v1/corridors/{quote(corridor_id, safe='')}/transitions"
    count = 0
    for number, line in _lines(source):
        response = api.request("POST", url, content=line, headers=headers)
        if response.status_code != 201:
            _refusal(response, f" (line {number})")
        try:
            receipt = verify_receipt(Receipt.from_bytes(response.content), verifier).receipt
        except PeerProtocolError as exc:
            raise LocalProtocolError(
                exc.reason,
                f"the node answered with a receipt that does not verify: {exc.message} (line {number})",
            ) from exc
        sys.stdout.write(receipt.raw.decode() + "\n")
        sys.stdout.flush()
        count += 1
    if not count:
        raise LocalProtocolError("empty", f"{name} holds no transitions")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """POST each JSON line to the node; print each receipt; stop at the first refusal."""
    config = _load(args.config)
    with _Api(config) as api:
        if args.file == "-":
            return _submit_all(api, config, args.corridor, sys.stdin.buffer, "<stdin>")
        try:
            handle = open(args.file, "rb")  # noqa: SIM115 - closed below; FileNotFoundError named
        except FileNotFoundError as exc:
            raise LocalProtocolError("no-file", f"transition file {args.file} does not exist") from exc
        with handle:
            return _submit_all(api, config, args.corridor, handle, args.file)


def cmd_status(args: argparse.Namespace) -> int:
    """Print ``{corridor: status}`` for every corridor of the node, or the one named."""
    config = _load(args.config)
    ids = [config.corridor(args.corridor).id] if args.corridor else [c.id for c in config.corridors]
    result = {}
    with _Api(config) as api:
        for corridor_id in ids:
            response = api.request("GET", f"/v1/corridors/{quote(corridor_id, safe='')}/status")
            if response.status_code != 200:
                _refusal(response, f" (corridor {corridor_id})")
            try:
                result[corridor_id] = response.json()
            except ValueError as exc:
                raise LocalProtocolError(
                    "bad-answer", f"status of {corridor_id} from {api.base_url} is not JSON"
                ) from exc
    _print_json(result)
    return 0


def _finality(api: _Api, origin: str, sequence: int) -> dict[str, Any] | None:
    """The receipt's finality from the node, or None if the node does not serve quorum finality."""
    response = api.request("GET", f"/v1/logs/{quote(origin, safe='/')}/receipts/{sequence}/finality")
    if response.status_code == 404 and "does not serve quorum finality" in response.text:
        return None
    if response.status_code != 200:
        _refusal(response)
    try:
        finality: dict[str, Any] = response.json()
        int(finality["quorum_final_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalProtocolError("bad-answer", f"finality of {origin}#{sequence} is not understood") from exc
    return finality


def cmd_proof(args: argparse.Namespace) -> int:
    """Fetch a proof bundle, verify it, and only then write it.

    Without ``--size``, the bundle is taken against the origin's **quorum-final** checkpoint (its
    cosignatures are what a light client needs) and verified under the corridor's trust policy from
    the node (``protocol.light.verify_bundle``); a receipt not yet covered by a quorum-final checkpoint
    is refused as ``not-final``. With ``--size S`` the bundle is taken at that size and verified under
    the log key only (it need not be final); the output says whether the receipt is quorum-final
    (``quorum_final``) and whether the bundle's checkpoint is the quorum-final one. A node that does not
    serve quorum finality gets the latest checkpoint, verified under the log key, ``"quorum_final": null``.
    """
    from .policy_cli import fetch_policy  # noqa: PLC0415 - policy_cli imports this module

    config = _load(args.config)
    corridor = config.corridor(args.corridor)
    if args.origin == corridor.origin:
        log_key = config.signing_key(corridor.origin).verifier()
    elif args.origin == corridor.counterparty_origin:
        log_key = corridor.counterparty_key
    else:
        raise LocalProtocolError(
            "unknown-origin",
            f"{args.origin!r} is neither our log ({corridor.origin}) nor the counterparty's "
            f"({corridor.counterparty_origin}) in corridor {corridor.id}",
        )
    size: int | None = args.size
    checks: list[str] = []
    with _Api(config) as api:
        finality = _finality(api, args.origin, args.sequence)
        final_size = None if finality is None else int(finality["quorum_final_size"])
        if size is None and final_size is not None:
            if args.sequence >= final_size:
                raise LocalProtocolError(
                    "not-final",
                    f"receipt {args.origin}#{args.sequence} is not yet covered by a quorum-final checkpoint "
                    f"(quorum-final size {final_size}); try again once it is, or pass --size N for a bundle "
                    f"against a checkpoint that is not final; {args.out} not written",
                )
            size = final_size
        policy = fetch_policy(api, corridor.id) if args.size is None and final_size is not None else None
        params = {} if size is None else {"size": str(size)}
        response = api.request(
            "GET", f"/v1/logs/{quote(args.origin, safe='/')}/proof/{args.sequence}", params=params
        )
    if response.status_code != 200:
        _refusal(response)
    data = response.content
    try:
        if len(data) > MAX_BUNDLE_BYTES:
            raise PeerProtocolError("too-large", f"answer over {MAX_BUNDLE_BYTES} bytes")
        verdict = verify_receipt_bundle(data, log_key)
        receipt = verdict.receipt.receipt
        if receipt.corridor_id != corridor.id:
            raise PeerProtocolError("wrong-corridor", f"receipt is of corridor {receipt.corridor_id}")
        if size is not None and verdict.checkpoint.size != size:
            raise PeerProtocolError(
                "size-mismatch", f"checkpoint is at size {verdict.checkpoint.size}, not {size}"
            )
        checks = list(verdict.checks)
        if policy is not None:
            report = verify_bundle(data, policy)
            if not report.verified:
                raise PeerProtocolError(
                    str(report.reason), f"under the corridor's trust policy: {report.message}"
                )
            checks = [f"{c.name}: {c.detail}" for c in report.checks]
    except PeerProtocolError as exc:
        raise LocalProtocolError(
            exc.reason,
            f"the bundle from {api.base_url} does not verify under {log_key.to_vkey()}: {exc.message}; "
            f"{args.out} not written",
        ) from exc
    out = Path(args.out)
    _write_new(out, data)
    _print_json(
        {
            "bundle": str(out),
            "origin": receipt.origin,
            "sequence": receipt.sequence,
            "kind": receipt.kind,
            "size": verdict.checkpoint.size,
            "root": verdict.checkpoint.root.hex(),
            "quorum_final": None if final_size is None else receipt.sequence < final_size,
            "quorum_final_size": final_size,
            "checkpoint_quorum_final": None if final_size is None else verdict.checkpoint.size == final_size,
            "verified": checks,
        }
    )
    return 0


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half a bundle."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # a proof bundle is public by design
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the parser ----------------------------------------------------------------------------------


_INIT_EPILOG = """\
Setting up a corridor between two nodes:
  1. each operator runs init; it prints JSON with "listen" (libp2p address with /p2p/PEER_ID)
     and "origins" (per corridor: our log's origin and its C2SP verifier key "vkey");
  2. the operators exchange those two values;
  3. each runs, per corridor:
       sez-node peer add --config DIR/node.toml --corridor ID --vkey THEIR_VKEY --peer THEIR_LISTEN
Until step 3, node.toml holds a placeholder counterparty_vkey and `sez-node run` refuses to start,
naming the field.
"""


def add_client_commands(sub: Any) -> None:
    """Register ``init``, ``peer add``, ``submit``, ``status``, ``proof`` on the ``sez-node`` subparsers."""
    p = sub.add_parser(
        "init",
        help="create a node folder: config, signing key, API token, libp2p identity (0600)",
        description="Create DIR with node.toml, signing.key, api.token and identity.key (secrets mode 0600) "
        "and print what counterparties need as JSON. Refuses to overwrite an existing node.",
        epilog=_INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jurisdiction", required=True, choices=sorted(DEFAULT_PORTS))
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create the node in")
    p.add_argument(
        "--listen", metavar="MULTIADDR",
        help="libp2p listen address "
        "(default /ip4/127.0.0.1/tcp/710N: PAK 7101, KSA 7102, UAE 7103, CHN 7104)",
    )  # fmt: skip
    p.add_argument(
        "--http", metavar="HOST:PORT", help="HTTP API address (default 127.0.0.1:810N, N as for --listen)"
    )
    p.add_argument(
        "--corridor", action="append", metavar="ID",
        help=f"a corridor to join, repeatable (default: those of {', '.join(KNOWN_CORRIDORS)} "
        "the jurisdiction is a party to)",
    )  # fmt: skip
    p.set_defaults(func=cmd_init)

    peer = sub.add_parser("peer", help="manage a corridor's counterparty in node.toml")
    peersub = peer.add_subparsers(dest="peer_command", required=True, metavar="COMMAND")
    p = peersub.add_parser(
        "add",
        help="set a corridor's counterparty key and peer address (after init)",
        description="Fill in the counterparty of one corridor from what its operator's `sez-node init` "
        "printed: origins[ID].vkey and listen.",
        epilog=_INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="this node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID", help="corridor id, e.g. PAK-KSA")
    p.add_argument("--vkey", required=True, help="the counterparty log's C2SP verifier key for this corridor")
    p.add_argument(
        "--peer", required=True, action="append", metavar="MULTIADDR",
        help="the counterparty's /ip4/HOST/tcp/PORT/p2p/PEER_ID; repeatable",
    )  # fmt: skip
    p.set_defaults(func=cmd_peer_add)

    p = sub.add_parser("submit", help="submit transitions (JSON lines) to a running node")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.add_argument("file", metavar="FILE", help='JSON lines {"kind": …, "payload": {…}}, or - for stdin')
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="print corridor status from a running node")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", metavar="ID", help="one corridor (default: all of the node's)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("proof", help="fetch, verify and save a receipt's proof bundle from a running node")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
    p.add_argument("--corridor", required=True, metavar="ID")
    p.add_argument("--origin", required=True, help="our origin or the counterparty's in the corridor")
    p.add_argument("--sequence", required=True, type=_non_negative, metavar="N")
    p.add_argument("--size", type=_non_negative, metavar="S", help="checkpoint size (default: latest)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="file to write the verified bundle to")
    p.set_defaults(func=cmd_proof)
