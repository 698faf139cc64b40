"""The node's configuration: a TOML file validated by ``schemas/config.node.json``.

Every problem is reported as :class:`ConfigError` naming the field (a dotted
path such as ``corridors[0].counterparty_vkey``) and what is wrong with it, so
an operator can fix the file without reading code. Relative paths are resolved
against the folder of the configuration file.
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import tomli_w

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import loads_strict
from protocol.keys import SigningKey, VerifierKey
from protocol.lifecycle import check_definition
from protocol.schemas import load_schema

from .keyfile import load_signing_key, write_secret_file
from .private_files import require_private

__all__ = [
    "JURISDICTION_NAMES",
    "AnchorConfig",
    "ConfigError",
    "CorridorConfig",
    "NodeConfig",
    "load_config",
    "write_initial_config",
]

JURISDICTION_NAMES = {"PAK": "sez.gov.pk", "KSA": "sez.gov.sa", "UAE": "sez.gov.ae", "CHN": "sez.gov.cn"}
"""Default host names: origins are ``<name>/corridor/<corridor id>`` (design §3)."""


MAX_DEFINITION_BYTES = 1024 * 1024
"""A corridor definition file is refused over 1 MiB."""


class ConfigError(LocalProtocolError):
    """The configuration file is missing, malformed, or names something wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__("bad-config", f"{where}: {problem}", field=where)
        self.where = where


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorConfig:
    """Optional L1 anchoring of a corridor (design §10): the ``anchor`` table of a corridor entry."""

    chain_id: int
    rpc_url: str
    key_file: Path
    every_checkpoints: int = 10
    every_seconds: int = 600
    confirmations: int = 6
    poll_seconds: float = 2.0
    stuck_seconds: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CorridorConfig:
    """One corridor this node is a party to."""

    id: str
    origin: str
    counterparty_origin: str
    counterparty_key: VerifierKey
    peers: tuple[str, ...]
    checkpoint_every: int = 100
    checkpoint_interval: int = 2
    min_watchers: int = 3
    """Quorum policy: distinct active watchers a checkpoint needs to be final (design §7)."""
    definition: Mapping[str, Any] | None = field(default=None, compare=False)
    """The corridor definition (``configs/corridors/<id>.json``) if the config names one: its policy
    is the corridor's, and DRAFT -> PENDING must bind its digest."""
    anchor: AnchorConfig | None = None
    """L1 anchoring; None (the default) means off."""
    party: str = ""
    """Our jurisdiction code in this corridor (``PAK`` in ``PAK-KSA``); the other is the counterparty."""

    @property
    def counterparty_party(self) -> str:
        """The counterparty's jurisdiction code."""
        first, second = self.id.split("-")
        return second if self.party == first else first

    @property
    def peer_ids(self) -> tuple[str, ...]:
        """The peer ids named by ``peers`` (the part after ``/p2p/``)."""
        return tuple(addr.rsplit("/p2p/", 1)[1] for addr in self.peers)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """A loaded, validated node configuration. Paths are absolute."""

    path: Path
    jurisdiction: str
    name: str
    data_dir: Path
    signing_key_file: Path
    identity_key_file: Path
    api_token_file: Path
    listen: str
    http_host: str
    http_port: int
    log_level: str
    corridors: tuple[CorridorConfig, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)
    own_log_check_timeout: float = 15.0
    """Seconds the start-up own-log check (``node.recovery``) waits for a counterparty before the
    writer proceeds with a warning (so that a fresh network still starts)."""

    def signing_key(self, origin: str) -> SigningKey:
        """The node's signing key under the name ``origin`` (one seed signs every origin of the node)."""
        base = load_signing_key(self.signing_key_file)
        return SigningKey(origin, base.seed)

    def api_token(self) -> str:
        """The bearer token of the submit API.

        Raises:
            ConfigError: the token file is missing, empty, or readable by others.
        """
        try:
            info = self.api_token_file.stat()
            token = self.api_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("node.api_token_file", f"cannot read {self.api_token_file}: {exc}") from exc
        if info.st_mode & 0o077:
            raise ConfigError("node.api_token_file", f"{self.api_token_file} must have mode 0600")
        if len(token) < 32:
            raise ConfigError("node.api_token_file", "token is shorter than 32 characters")
        return token

    def corridor(self, corridor_id: str) -> CorridorConfig:
        """The corridor ``corridor_id``.

        Raises:
            LocalProtocolError(unknown-corridor): this node is not a party to it.
        """
        for corridor in self.corridors:
            if corridor.id == corridor_id:
                return corridor
        raise LocalProtocolError("unknown-corridor", f"this node is not a party to corridor {corridor_id!r}")


def _where(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _anchor_config(table: dict[str, Any] | None, base: Path) -> AnchorConfig | None:
    if table is None:
        return None
    return AnchorConfig(
        chain_id=table["chain_id"], rpc_url=table["rpc_url"], key_file=(base / table["key_file"]).resolve(),
        every_checkpoints=table.get("every_checkpoints", 10), every_seconds=table.get("every_seconds", 600),
        confirmations=table.get("confirmations", 6), poll_seconds=float(table.get("poll_seconds", 2.0)),
        stuck_seconds=float(table.get("stuck_seconds", 60.0)),
    )  # fmt: skip


def load_config(path: str | Path) -> NodeConfig:
    """Read, validate and resolve a node configuration file.

    Raises:
        ConfigError: with the offending field and the problem.
    """
    config_path = Path(path).resolve()
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(config_path), "configuration file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(config_path), f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(config_path), f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested bracket
        raise ConfigError(str(config_path), "not valid TOML: nested too deeply") from exc
    validator = jsonschema.Draft202012Validator(load_schema("config.node"))
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        raise ConfigError(_where(first), first.message)
    base = config_path.parent
    node = raw["node"]
    host, _, port = node["http"].rpartition(":")
    corridors = []
    seen: set[str] = set()
    for index, entry in enumerate(raw["corridors"]):
        where = f"corridors[{index}]"
        if entry["id"] in seen:
            raise ConfigError(f"{where}.id", f"corridor {entry['id']} is listed twice")
        seen.add(entry["id"])
        if node["jurisdiction"] not in entry["id"].split("-"):
            raise ConfigError(
                f"{where}.id", f"{node['jurisdiction']} is not a party to corridor {entry['id']}"
            )
        try:
            counterparty = VerifierKey.from_vkey(entry["counterparty_vkey"])
        except PeerProtocolError as exc:
            raise ConfigError(f"{where}.counterparty_vkey", exc.message) from exc
        if counterparty.name != entry["counterparty_origin"]:
            raise ConfigError(
                f"{where}.counterparty_vkey",
                f"key is named {counterparty.name!r}, "
                f"not the counterparty origin {entry['counterparty_origin']!r}",
            )
        if entry["origin"] == entry["counterparty_origin"]:
            raise ConfigError(f"{where}.counterparty_origin", "must differ from our own origin")
        definition = None
        if "definition" in entry:
            definition = _load_definition(base / entry["definition"], entry, f"{where}.definition")
            if "min_watchers" in entry:
                raise ConfigError(f"{where}.min_watchers", "comes from the corridor definition's policy")
        corridors.append(
            CorridorConfig(
                id=entry["id"],
                origin=entry["origin"],
                counterparty_origin=entry["counterparty_origin"],
                counterparty_key=counterparty,
                peers=tuple(entry["peers"]),
                checkpoint_every=entry.get("checkpoint_every", 100),
                checkpoint_interval=entry.get("checkpoint_interval", 2),
                min_watchers=(
                    definition["policy"]["min_watchers"] if definition else entry.get("min_watchers", 3)
                ),
                definition=definition,
                party=node["jurisdiction"],
                anchor=_anchor_config(entry.get("anchor"), base),
            )
        )
    for key in ("data_dir", "signing_key", "identity_key", "api_token_file"):
        if "\x00" in node[key]:  # the OS cannot name such a file; pathlib raises ValueError
            raise ConfigError(f"node.{key}", "a path must not contain a NUL character")
    config = NodeConfig(
        path=config_path,
        jurisdiction=node["jurisdiction"],
        name=node["name"],
        data_dir=(base / node["data_dir"]).resolve(),
        signing_key_file=(base / node["signing_key"]).resolve(),
        identity_key_file=(base / node["identity_key"]).resolve(),
        api_token_file=(base / node["api_token_file"]).resolve(),
        listen=node["listen"],
        http_host=host,
        http_port=int(port),
        log_level=node.get("log_level", "info"),
        corridors=tuple(corridors),
        raw=raw,
        own_log_check_timeout=float(node.get("own_log_check_timeout", 15.0)),
    )
    for corridor in config.corridors:
        try:
            config.signing_key(corridor.origin)
        except LocalProtocolError as exc:
            raise ConfigError("node.signing_key", exc.message) from exc
    _require_private_secrets(config)
    return config


def _require_private_secrets(config: NodeConfig) -> None:
    """Refuse a loose API token or identity key now, before the daemon opens its store or a port.

    The identity key may not exist yet (``run`` creates it, mode 0600); the token must exist.
    """
    secrets_ = [("node.api_token_file", config.api_token_file, "API token file")]
    if config.identity_key_file.exists():
        secrets_.append(("node.identity_key", config.identity_key_file, "identity key file"))
    for where, path, what in secrets_:
        try:
            require_private(path, what)
        except LocalProtocolError as exc:
            raise ConfigError(where, exc.message) from exc


def _load_definition(path: Path, entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The corridor definition at ``path``, checked, and naming this corridor's two origins."""
    try:
        # loads_strict bounds the nesting itself: json.loads alone would recurse in C as deep as the
        # file nests, and a library may have raised the recursion limit (py_ecc does).
        definition: dict[str, Any] = loads_strict(path.read_bytes(), max_bytes=MAX_DEFINITION_BYTES)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(where, f"cannot read the corridor definition {path}: {exc}") from exc
    except PeerProtocolError as exc:
        raise ConfigError(where, f"the corridor definition {path} is not valid JSON: {exc.message}") from exc
    try:
        check_definition(definition)
    except PeerProtocolError as exc:
        raise ConfigError(where, f"{path}: {exc.reason}: {exc.message}") from exc
    if definition["id"] != entry["id"]:
        raise ConfigError(where, f"{path} defines corridor {definition['id']}, not {entry['id']}")
    origins = {party["origin"] for party in definition["parties"]}
    if origins != {entry["origin"], entry["counterparty_origin"]}:
        raise ConfigError(
            where, f"{path} names the origins {sorted(origins)}, not this corridor's origin and counterparty"
        )
    return definition


def write_initial_config(
    out: Path, *, jurisdiction: str, listen: str, http: str, corridors: list[dict[str, Any]]
) -> Path:
    """Create ``out`` with a signing key, an API token and ``node.toml`` (the identity key is the caller's).

    Raises:
        LocalProtocolError(file-exists): ``out`` already holds a configuration.
    """
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "node.toml"
    if config_path.exists():
        raise LocalProtocolError("file-exists", f"{config_path} exists; refusing to overwrite a node")
    name = JURISDICTION_NAMES.get(jurisdiction, f"sez.{jurisdiction.lower()}")
    key = SigningKey.generate(name)
    write_secret_file(out / "signing.key", key.to_private_line() + "\n")
    write_secret_file(out / "api.token", secrets.token_urlsafe(32) + "\n")
    document = {
        "node": {
            "jurisdiction": jurisdiction,
            "name": name,
            "data_dir": "data",
            "signing_key": "signing.key",
            "identity_key": "identity.key",
            "api_token_file": "api.token",
            "listen": listen,
            "http": http,
            "log_level": "info",
        },
        "corridors": corridors,
    }
    config_path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return config_path
