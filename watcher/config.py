"""The watcher's configuration: a TOML file validated by an inline JSON Schema.

Every problem is a :class:`~node.config.ConfigError` naming the field (a dotted path such as
``logs[0].vkey``) and what is wrong with it. Relative paths resolve against the configuration
file's folder. Example::

    [watcher]
    name = "watcher1.example"          # the cosigner key name (type 0x04 cosignature/v1)
    data_dir = "data"
    signing_key = "signing.key"        # node.keyfile format, mode 0600
    identity_key = "identity.key"      # libp2p Ed25519 identity, mode 0600
    listen = "/ip4/0.0.0.0/tcp/4101"
    http = "127.0.0.1:8101"
    log_level = "info"

    [[logs]]                           # add with `sez-watcher follow --config F ...`
    corridor = "PAK-KSA"
    origin = "sez.gov.pk/corridor/PAK-KSA"
    vkey = "sez.gov.pk/corridor/PAK-KSA+<keyid>+<base64(0x01||pub)>"
    peers = ["/ip4/10.0.0.1/tcp/4001/p2p/12D3Koo..."]
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema
import tomli_w

from node.config import ConfigError
from node.keyfile import load_signing_key, write_secret_file
from node.private_files import require_private
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, ALG_ED25519, SigningKey, VerifierKey, validate_key_name

__all__ = [
    "CONFIG_NAME",
    "SCHEMA",
    "ConfigError",
    "FollowedLog",
    "WatcherConfig",
    "add_followed_log",
    "load_config",
    "write_initial_config",
]

CONFIG_NAME: Final = "watcher.toml"

_MULTIADDR = {"type": "string", "pattern": "^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/[0-9]{1,5}(/.*)?$"}
_PEER = {
    "type": "string",
    "pattern": "^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/[0-9]{1,5}/p2p/[1-9A-HJ-NP-Za-km-z]+$",
}

SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:sez:schema:config.watcher",
    "type": "object",
    "additionalProperties": False,
    "required": ["watcher", "logs"],
    "properties": {
        "watcher": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "data_dir", "signing_key", "identity_key", "listen", "http"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "data_dir": {"type": "string", "minLength": 1},
                "signing_key": {"type": "string", "minLength": 1},
                "identity_key": {"type": "string", "minLength": 1},
                "listen": _MULTIADDR,
                "http": {"type": "string", "pattern": "^[^\\s:]+:[0-9]{1,5}$"},
                "log_level": {"enum": ["debug", "info", "warning", "error"]},
            },
        },
        "logs": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["corridor", "origin", "vkey", "peers"],
                "properties": {
                    "corridor": {"type": "string", "pattern": "^[A-Z]{3}-[A-Z]{3}$"},
                    "origin": {"type": "string", "minLength": 1, "maxLength": 255},
                    "vkey": {"type": "string", "minLength": 1},
                    "peers": {"type": "array", "minItems": 1, "items": _PEER},
                },
            },
        },
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowedLog:
    """One log the watcher follows and cosigns."""

    corridor: str
    origin: str
    key: VerifierKey
    peers: tuple[str, ...]

    @property
    def peer_ids(self) -> tuple[str, ...]:
        """The peer ids named by ``peers`` (the part after ``/p2p/``)."""
        return tuple(addr.rsplit("/p2p/", 1)[1] for addr in self.peers)


@dataclass(frozen=True, slots=True, kw_only=True)
class WatcherConfig:
    """A loaded, validated watcher configuration. Paths are absolute."""

    path: Path
    name: str
    data_dir: Path
    signing_key_file: Path
    identity_key_file: Path
    listen: str
    http_host: str
    http_port: int
    log_level: str
    logs: tuple[FollowedLog, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    def signing_key(self) -> SigningKey:
        """The watcher's cosigning key, named ``name``."""
        return SigningKey(self.name, load_signing_key(self.signing_key_file).seed)

    def cosigner_key(self) -> VerifierKey:
        """The watcher's public key as a cosignature/v1 (type 0x04) verifier key."""
        return self.signing_key().verifier(ALG_COSIGNATURE_V1)

    @property
    def log_keys(self) -> dict[str, VerifierKey]:
        """origin -> the log's trusted key."""
        return {entry.origin: entry.key for entry in self.logs}

    @property
    def corridors(self) -> tuple[str, ...]:
        """The corridors of the followed logs, sorted, without repeats."""
        return tuple(sorted({entry.corridor for entry in self.logs}))


def _where(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _read(config_path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(config_path), "configuration file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(config_path), f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(config_path), f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested bracket
        raise ConfigError(str(config_path), "not valid TOML: nested too deeply") from exc


def validate(raw: dict[str, Any], config_path: Path) -> WatcherConfig:
    """Validate a parsed document and resolve it against ``config_path``'s folder.

    Raises:
        ConfigError: with the offending field and the problem.
    """
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(_where(errors[0]), errors[0].message)
    section = raw["watcher"]
    try:
        validate_key_name(section["name"])
    except (PeerProtocolError, LocalProtocolError) as exc:
        raise ConfigError("watcher.name", exc.message) from exc
    logs: list[FollowedLog] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw["logs"]):
        where = f"logs[{index}]"
        if entry["origin"] in seen:
            raise ConfigError(f"{where}.origin", f"log {entry['origin']!r} is listed twice")
        seen.add(entry["origin"])
        try:
            key = VerifierKey.from_vkey(entry["vkey"])
        except (PeerProtocolError, LocalProtocolError) as exc:
            raise ConfigError(f"{where}.vkey", exc.message) from exc
        if key.name != entry["origin"]:
            raise ConfigError(
                f"{where}.vkey", f"key is named {key.name!r}, not the origin {entry['origin']!r}"
            )
        if key.alg != ALG_ED25519:
            raise ConfigError(f"{where}.vkey", "must be the log's Ed25519 (type 0x01) key")
        logs.append(
            FollowedLog(
                corridor=entry["corridor"], origin=entry["origin"], key=key, peers=tuple(entry["peers"])
            )
        )
    for path_key in ("data_dir", "signing_key", "identity_key"):
        if "\x00" in section[path_key]:  # the OS cannot name such a file; pathlib raises ValueError
            raise ConfigError(f"watcher.{path_key}", "a path must not contain a NUL character")
    base = config_path.parent
    host, _, port = section["http"].rpartition(":")
    config = WatcherConfig(
        path=config_path,
        name=section["name"],
        data_dir=(base / section["data_dir"]).resolve(),
        signing_key_file=(base / section["signing_key"]).resolve(),
        identity_key_file=(base / section["identity_key"]).resolve(),
        listen=section["listen"],
        http_host=host,
        http_port=int(port),
        log_level=section.get("log_level", "info"),
        logs=tuple(logs),
        raw=raw,
    )
    try:
        config.signing_key()
    except LocalProtocolError as exc:
        raise ConfigError("watcher.signing_key", exc.message) from exc
    if config.identity_key_file.exists():  # absent: the daemon creates it, mode 0600
        try:
            require_private(config.identity_key_file, "identity key file")
        except LocalProtocolError as exc:
            raise ConfigError("watcher.identity_key", exc.message) from exc
    return config


def load_config(path: str | Path) -> WatcherConfig:
    """Read, validate and resolve a watcher configuration file.

    Raises:
        ConfigError: with the offending field and the problem.
    """
    config_path = Path(path).resolve()
    return validate(_read(config_path), config_path)


def write_initial_config(out: Path, name: str, listen: str, http: str) -> Path:
    """Create ``out`` with a signing key (0600) and ``watcher.toml`` following no log yet.

    The identity key is the caller's (``node.p2p.load_or_create_identity``). Logs are added with
    :func:`add_followed_log` (``sez-watcher follow``).

    Raises:
        LocalProtocolError(file-exists): ``out`` already holds a configuration.
        ConfigError: ``name`` is not a valid key name.
    """
    try:
        validate_key_name(name)
    except (PeerProtocolError, LocalProtocolError) as exc:
        raise ConfigError("watcher.name", exc.message) from exc
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_NAME
    if config_path.exists():
        raise LocalProtocolError("file-exists", f"{config_path} exists; refusing to overwrite a watcher")
    write_secret_file(out / "signing.key", SigningKey.generate(name).to_private_line() + "\n")
    document: dict[str, Any] = {
        "watcher": {
            "name": name,
            "data_dir": "data",
            "signing_key": "signing.key",
            "identity_key": "identity.key",
            "listen": listen,
            "http": http,
            "log_level": "info",
        },
        "logs": [],
    }
    config_path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return config_path


def add_followed_log(
    path: str | Path, *, corridor: str, origin: str, vkey: str, peers: list[str]
) -> WatcherConfig:
    """Append a ``[[logs]]`` entry to the configuration at ``path``, validating the result first.

    The file is replaced atomically (write a temporary file, fsync, rename).

    Raises:
        ConfigError: the file or the new entry is invalid (nothing is written then).
    """
    config_path = Path(path).resolve()
    raw = _read(config_path)
    logs = raw.get("logs")
    if isinstance(logs, list):
        logs.append({"corridor": corridor, "origin": origin, "vkey": vkey, "peers": list(peers)})
    config = validate(raw, config_path)
    temporary = config_path.with_name(config_path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        ordered = {"watcher": raw.get("watcher"), **{k: v for k, v in raw.items() if k != "watcher"}}
        handle.write(tomli_w.dumps(ordered))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(config_path)
    return config
