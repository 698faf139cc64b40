"""A corridor's trust policy for light clients (design §7, §11): what a checkpoint must carry to be final.

A :class:`TrustPolicy` names the corridor's two logs (origin, the log's Ed25519 verifier key, and the
party's cosigner key that cosigns the *other* log), the active watchers with their stake, the stake
currency, and the quorum rule (:class:`protocol.quorum.QuorumPolicy`: threshold, ``min_watchers``,
whether the counterparty's cosignature is required). It has two encodings:

* **JSON** (``schemas/policy.json``), :meth:`TrustPolicy.to_json` / :meth:`TrustPolicy.from_json`;
  canonical (RFC 8785), stakes as strings of integers, watchers sorted by vkey.
* **C2SP tlog-policy** text (c2sp.org/tlog-policy: ``log <vkey>``, ``witness <name> <vkey>``,
  ``group <name> <k|any|all> <member>…``, ``quorum <name>``; ``#`` starts a comment),
  :meth:`TrustPolicy.to_tlog_policy` / :func:`parse_tlog_policy`. The stake-weighted rule is an
  extension carried in comment lines beginning ``#sez `` (which every tlog-policy reader ignores)::

      #sez policy v1 corridor PAK-KSA currency USD threshold 2/3 min_watchers 3 counterparty required
      #sez party <witness name> <origin>      the party cosigner that writes log <origin>
      #sez stake <witness name> <amount>      a watcher's active stake (integer minor units)

  The stock lines still express a rule a plain C2SP client can enforce, chosen to be **never weaker**
  than the stake rule: the watcher group's count ``k`` is the smallest number such that *any* ``k``
  watchers hold strictly more than the threshold of the active stake (and ``k >= min_watchers``), and
  when the counterparty is required the quorum is ``all`` of {watchers, parties}. (A stock client
  accepts either party's cosignature; sez-light requires the *other* party's, per log.) In bootstrap
  (fewer than ``min_watchers`` active watchers) the quorum is the ``parties`` group alone.

Finality (:meth:`TrustPolicy.decide`) is the node's rule (``node.quorum``): with at least
``min_watchers`` active watchers, :func:`protocol.quorum.decide` (strictly more than the threshold of
active stake, at least ``min_watchers`` distinct keys, and the counterparty's cosignature if required);
with fewer (bootstrap, *bilateral finality*), the log's signature and the counterparty's cosignature.

Pure: no I/O. Parsers raise :class:`PeerProtocolError` (``bad-policy`` with the line or path).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from .errors import LocalProtocolError, PeerProtocolError
from .jcs import canonical, loads_strict
from .keys import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey
from .quorum import QuorumDecision, QuorumPolicy, decide
from .schemas import validate

__all__ = [
    "MAX_POLICY_BYTES",
    "POLICY_TYPE",
    "LogEntry",
    "TrustPolicy",
    "WatcherEntry",
    "parse_policy",
    "parse_tlog_policy",
]

POLICY_TYPE: Final = "sez.trust-policy/v1"
MAX_POLICY_BYTES: Final = 1024 * 1024
"""A policy lists two logs and at most a few thousand watchers; anything larger is not one."""
_EXT: Final = "#sez "
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_AMOUNT = re.compile(r"0|[1-9][0-9]{0,30}")
_FRACTION = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,8})")


def _bad(message: str, **details: Any) -> PeerProtocolError:
    return PeerProtocolError("bad-policy", message, **details)


def _key(vkey: str, alg: int, where: str) -> VerifierKey:
    try:
        key = VerifierKey.from_vkey(vkey)
    except PeerProtocolError as exc:
        raise _bad(f"{where}: {exc.message}") from exc
    if key.alg != alg:
        raise _bad(f"{where}: key {key.name} has type 0x{key.alg:02x}, expected 0x{alg:02x}")
    return key


def _threshold(text: str, where: str) -> Fraction:
    match = _FRACTION.fullmatch(text)
    if match is None:
        raise _bad(f"{where}: threshold {text!r} is not a fraction N/D")
    return Fraction(int(match[1]), int(match[2]))


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One corridor party's log.

    Attributes:
        key: the log's Ed25519 (type 0x01) key; its name is the origin.
        cosigner: the same party's cosigner (type 0x04) key, with which it cosigns the *other* log.
    """

    key: VerifierKey
    cosigner: VerifierKey

    @property
    def origin(self) -> str:
        """The log's origin (its key's name)."""
        return self.key.name


@dataclass(frozen=True, slots=True, kw_only=True)
class WatcherEntry:
    """An active watcher: its cosigner (type 0x04) key and its stake (> 0, in the stake currency)."""

    key: VerifierKey
    stake: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustPolicy:
    """A corridor's trust policy (see the module docstring).

    Raises:
        LocalProtocolError(bad-policy): on construction with an inconsistent value (not two logs,
            wrong key types, duplicate keys or key names, a stake that is not positive).
    """

    corridor_id: str
    logs: tuple[LogEntry, LogEntry]
    watchers: tuple[WatcherEntry, ...]
    stake_currency: str
    quorum: QuorumPolicy

    def __post_init__(self) -> None:
        def bad(message: str) -> LocalProtocolError:
            return LocalProtocolError("bad-policy", message)

        if not isinstance(self.corridor_id, str) or not _TOKEN.fullmatch(self.corridor_id):
            raise bad(f"corridor id {self.corridor_id!r} is not a plain token")
        if len(self.logs) != 2 or self.logs[0].origin == self.logs[1].origin:
            raise bad("a corridor policy names exactly two different logs")
        cosigner_names: set[str] = set()
        for entry in self.logs:
            if entry.key.alg != ALG_ED25519 or entry.cosigner.alg != ALG_COSIGNATURE_V1:
                raise bad(
                    f"log {entry.origin}: a type-0x01 log key and a type-0x04 cosigner key are required"
                )
            cosigner_names.add(entry.cosigner.name)
        if len(cosigner_names) != 2:
            raise bad("the two parties' cosigner keys must have different names")
        for watcher in self.watchers:
            if watcher.key.alg != ALG_COSIGNATURE_V1:
                raise bad(f"watcher {watcher.key.name}: a type-0x04 cosigner key is required")
            if type(watcher.stake) is not int or watcher.stake <= 0:
                raise bad(f"watcher {watcher.key.name}: stake must be a positive integer")
            if watcher.key.name in cosigner_names:
                raise bad(f"two cosigner keys are named {watcher.key.name!r}")
            cosigner_names.add(watcher.key.name)
        if not _TOKEN.fullmatch(self.stake_currency):
            raise bad(f"stake currency {self.stake_currency!r} is not a plain token")

    # ------------------------------------------------------------------ queries

    def log(self, origin: str) -> LogEntry | None:
        """The entry of the log ``origin``, or None if the policy does not cover it."""
        return next((entry for entry in self.logs if entry.origin == origin), None)

    def counterparty_cosigner(self, origin: str) -> VerifierKey:
        """The other party's cosigner key: whose cosignature of ``origin`` counts as the counterparty's.

        Raises:
            LocalProtocolError(unknown-origin): the policy does not cover ``origin``.
        """
        for i, entry in enumerate(self.logs):
            if entry.origin == origin:
                return self.logs[1 - i].cosigner
        raise LocalProtocolError("unknown-origin", f"the policy has no log {origin!r}")

    @property
    def bootstrap(self) -> bool:
        """Fewer than ``min_watchers`` active watchers: both parties' signatures decide (bilateral)."""
        return len(self.watchers) < self.quorum.min_watchers

    def cosigner_keys(self, origin: str) -> list[VerifierKey]:
        """Every key whose cosignature of ``origin`` counts: the counterparty's, then the watchers'."""
        return [self.counterparty_cosigner(origin), *(w.key for w in self.watchers)]

    def weights(self) -> dict[str, int]:
        """vkey -> stake of every active watcher."""
        return {w.key.to_vkey(): w.stake for w in self.watchers}

    def decide(self, origin: str, cosigned: Mapping[str, int]) -> QuorumDecision:
        """Finality of a checkpoint of ``origin`` whose valid cosignatures are ``cosigned``.

        Args:
            origin: a log of the policy.
            cosigned: key name -> timestamp, as :func:`protocol.checkpoints.verify_cosignatures`
                returns it for :meth:`cosigner_keys` (names are unique within a policy).
        """
        counterparty = self.counterparty_cosigner(origin).name in cosigned
        if self.bootstrap:
            return QuorumDecision(counterparty, 0, 0, (), () if counterparty else ("counterparty",))
        # Keyed by key name (unique within a policy): no vkey encoding on the verification path.
        weights = {w.key.name: w.stake for w in self.watchers}
        cosigners = [name for name in weights if name in cosigned]
        return decide(cosigners, weights, counterparty_cosigned=counterparty, policy=self.quorum)

    # ------------------------------------------------------------------ JSON

    def to_json_value(self) -> dict[str, Any]:
        """The JSON object of ``schemas/policy.json``."""
        return {
            "type": POLICY_TYPE,
            "corridor_id": self.corridor_id,
            "logs": [
                {"origin": e.origin, "vkey": e.key.to_vkey(), "cosigner_vkey": e.cosigner.to_vkey()}
                for e in self.logs
            ],
            "watchers": [
                {"vkey": w.key.to_vkey(), "stake": str(w.stake)}
                for w in sorted(self.watchers, key=lambda w: w.key.to_vkey())
            ],
            "stake_currency": self.stake_currency,
            "threshold": f"{self.quorum.threshold.numerator}/{self.quorum.threshold.denominator}",
            "min_watchers": self.quorum.min_watchers,
            "require_counterparty": self.quorum.require_counterparty,
        }

    def to_json(self) -> bytes:
        """The canonical (RFC 8785) JSON bytes."""
        return canonical(self.to_json_value())

    @classmethod
    def from_json_value(cls, value: Any) -> TrustPolicy:
        """Build a policy from its parsed JSON object.

        Raises:
            PeerProtocolError: ``schema-violation`` or ``bad-policy``.
        """
        validate("policy", value)
        logs = []
        for i, entry in enumerate(value["logs"]):
            key = _key(entry["vkey"], ALG_ED25519, f"logs[{i}].vkey")
            if key.name != entry["origin"]:
                raise _bad(
                    f"logs[{i}]: the log key is named {key.name!r}, not the origin {entry['origin']!r}"
                )
            logs.append(
                LogEntry(key=key, cosigner=_key(entry["cosigner_vkey"], ALG_COSIGNATURE_V1, f"logs[{i}]"))
            )
        watchers = tuple(
            WatcherEntry(key=_key(w["vkey"], ALG_COSIGNATURE_V1, f"watchers[{i}]"), stake=int(w["stake"]))
            for i, w in enumerate(value["watchers"])
        )
        return _build(
            corridor_id=value["corridor_id"],
            logs=(logs[0], logs[1]),
            watchers=watchers,
            stake_currency=value["stake_currency"],
            threshold=_threshold(value["threshold"], "threshold"),
            min_watchers=value["min_watchers"],
            require_counterparty=value["require_counterparty"],
        )

    @classmethod
    def from_json(cls, data: bytes) -> TrustPolicy:
        """Parse JSON policy bytes (strict: no floats, no duplicate keys).

        Raises:
            PeerProtocolError: ``too-large``, ``bad-json``, ``float-refused``, ``schema-violation``,
                ``bad-policy``.
        """
        return cls.from_json_value(loads_strict(data, max_bytes=MAX_POLICY_BYTES))

    # ------------------------------------------------------------------ tlog-policy

    def _labels(self) -> tuple[list[str], list[str]]:
        """Witness names in the text form: parties ``party-1``/``party-2``; watchers by key name."""
        parties = ["party-1", "party-2"]
        used = set(parties) | {"watchers", "parties", "sez-quorum", "none"}
        labels = []
        for i, w in enumerate(sorted(self.watchers, key=lambda w: w.key.to_vkey())):
            label = w.key.name if _TOKEN.fullmatch(w.key.name) else f"watcher-{i + 1}"
            if label in used:
                label = f"watcher-{i + 1}"
            used.add(label)
            labels.append(label)
        return parties, labels

    def stock_watcher_count(self) -> int:
        """The watcher count ``k`` of the stock group: any ``k`` watchers meet the stake rule."""
        stakes = sorted(w.stake for w in self.watchers)
        total = sum(stakes)
        threshold = self.quorum.threshold
        running = 0
        for k, stake in enumerate(stakes, start=1):
            running += stake
            if threshold.denominator * running > threshold.numerator * total:
                return max(k, self.quorum.min_watchers)
        return len(stakes)

    def to_tlog_policy(self) -> str:
        """The C2SP tlog-policy text with the ``#sez`` stake extension (module docstring)."""
        q = self.quorum
        parties, labels = self._labels()
        watchers = sorted(self.watchers, key=lambda w: w.key.to_vkey())
        lines = [
            f"# Trust policy of sez corridor {self.corridor_id} (c2sp.org/tlog-policy).",
            "# Lines starting '#sez ' carry the stake-weighted quorum rule; sez-light enforces it.",
            "# Stock lines: a count rule never weaker than the stake rule, for any C2SP client.",
            f"#sez policy v1 corridor {self.corridor_id} currency {self.stake_currency} "
            f"threshold {q.threshold.numerator}/{q.threshold.denominator} min_watchers {q.min_watchers} "
            f"counterparty {'required' if q.require_counterparty else 'optional'}",
        ]
        lines += [f"log {entry.key.to_vkey()}" for entry in self.logs]
        for label, entry in zip(parties, self.logs, strict=True):
            lines.append(f"#sez party {label} {entry.origin}")
            lines.append(f"witness {label} {entry.cosigner.to_vkey()}")
        for label, w in zip(labels, watchers, strict=True):
            lines.append(f"#sez stake {label} {w.stake}")
            lines.append(f"witness {label} {w.key.to_vkey()}")
        lines.append(f"group parties any {' '.join(parties)}")
        if self.bootstrap:
            lines.append("# bootstrap: fewer than min_watchers active watchers; both parties decide")
            lines.append("quorum parties")
        else:
            lines.append(f"group watchers {self.stock_watcher_count()} {' '.join(labels)}")
            if q.require_counterparty:
                lines.append("group sez-quorum all watchers parties")
                lines.append("quorum sez-quorum")
            else:
                lines.append("quorum watchers")
        return "".join(line + "\n" for line in lines)


def _build(
    *,
    corridor_id: str,
    logs: tuple[LogEntry, LogEntry],
    watchers: tuple[WatcherEntry, ...],
    stake_currency: str,
    threshold: Fraction,
    min_watchers: int,
    require_counterparty: bool,
) -> TrustPolicy:
    try:
        quorum = QuorumPolicy(
            threshold=threshold, min_watchers=min_watchers, require_counterparty=require_counterparty
        )
        return TrustPolicy(
            corridor_id=corridor_id,
            logs=logs,
            watchers=watchers,
            stake_currency=stake_currency,
            quorum=quorum,
        )
    except LocalProtocolError as exc:
        raise _bad(exc.message) from exc


def parse_tlog_policy(text: str) -> TrustPolicy:
    """Parse a C2SP tlog-policy file carrying the ``#sez`` extension (see the module docstring).

    The stock lines are checked as the spec requires (known keywords, field counts, valid vkeys,
    unique names, group members defined before use, one ``quorum`` line); the trust decision is
    taken from the logs, witnesses and ``#sez`` lines, never from the count approximation.

    Raises:
        PeerProtocolError(bad-policy): with the line number; ``not-a-sez-policy`` when the file
            has no ``#sez policy`` line (a plain C2SP policy has no stake to weigh).
    """
    header: list[str] | None = None
    log_keys: list[VerifierKey] = []
    witnesses: dict[str, VerifierKey] = {}
    names: set[str] = set()
    party_of: dict[str, str] = {}
    stake_of: dict[str, int] = {}
    quorums = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        where = f"line {number}"
        if line.startswith(_EXT):
            fields = line[len(_EXT) :].split()
            if fields[:2] == ["policy", "v1"] and len(fields) == 12 and header is None:
                header = fields
            elif len(fields) == 3 and fields[0] == "party":
                party_of[fields[1]] = fields[2]
            elif len(fields) == 3 and fields[0] == "stake" and _AMOUNT.fullmatch(fields[2]):
                stake_of[fields[1]] = int(fields[2])
            else:
                raise _bad(f"{where}: malformed #sez extension line", line=number)
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        keyword = fields[0]
        if keyword == "log" and len(fields) in (2, 3):
            log_keys.append(_key(fields[1], ALG_ED25519, where))
        elif keyword == "witness" and len(fields) in (3, 4):
            if fields[1] in names:
                raise _bad(f"{where}: duplicate name {fields[1]!r}", line=number)
            names.add(fields[1])
            witnesses[fields[1]] = _key(fields[2], ALG_COSIGNATURE_V1, where)
        elif keyword == "group" and len(fields) >= 4:
            members = fields[3:]
            if (
                fields[1] in names
                or any(m not in names for m in members)
                or len(set(members)) != len(members)
            ):
                raise _bad(
                    f"{where}: group {fields[1]!r} reuses a name or names an undefined member", line=number
                )
            k = fields[2]
            if k not in ("any", "all") and not (k.isdigit() and 1 <= int(k) <= len(members)):
                raise _bad(
                    f"{where}: group threshold {k!r} is not any, all or 1..{len(members)}", line=number
                )
            names.add(fields[1])
        elif keyword == "quorum" and len(fields) == 2:
            if fields[1] != "none" and fields[1] not in names:
                raise _bad(f"{where}: quorum names undefined {fields[1]!r}", line=number)
            quorums += 1
        else:
            raise _bad(f"{where}: not a tlog-policy line: {line[:80]!r}", line=number)
    if header is None:
        raise PeerProtocolError("not-a-sez-policy", "no '#sez policy v1' line: the file has no stake rule")
    if quorums != 1:
        raise _bad(f"a tlog-policy has exactly one quorum line, this one has {quorums}")
    opts = dict(zip(header[2::2], header[3::2], strict=True))
    if set(opts) != {"corridor", "currency", "threshold", "min_watchers", "counterparty"}:
        raise _bad("the #sez policy line needs corridor, currency, threshold, min_watchers, counterparty")
    if not opts["min_watchers"].isdigit() or opts["counterparty"] not in ("required", "optional"):
        raise _bad("#sez policy: min_watchers is an integer; counterparty is required or optional")
    if set(party_of) | set(stake_of) != set(witnesses) or set(party_of) & set(stake_of):
        raise _bad("every witness needs exactly one '#sez party' or '#sez stake' line, and no other name may")
    by_origin = {key.name: key for key in log_keys}
    if len(log_keys) != 2 or len(by_origin) != 2 or sorted(party_of.values()) != sorted(by_origin):
        raise _bad("the policy needs two log lines and one '#sez party' line naming each log's origin")
    logs = tuple(
        LogEntry(key=by_origin[origin], cosigner=witnesses[label]) for label, origin in party_of.items()
    )
    ordered = tuple(sorted(logs, key=lambda e: [k.name for k in log_keys].index(e.origin)))
    return _build(
        corridor_id=opts["corridor"],
        logs=(ordered[0], ordered[1]),
        watchers=tuple(WatcherEntry(key=witnesses[label], stake=s) for label, s in stake_of.items()),
        stake_currency=opts["currency"],
        threshold=_threshold(opts["threshold"], "#sez policy"),
        min_watchers=int(opts["min_watchers"]),
        require_counterparty=opts["counterparty"] == "required",
    )


def parse_policy(data: bytes) -> TrustPolicy:
    """Parse a policy file in either encoding: JSON if it starts with ``{``, else tlog-policy text.

    Raises:
        PeerProtocolError: as :meth:`TrustPolicy.from_json` or :func:`parse_tlog_policy`; ``too-large``.
    """
    if len(data) > MAX_POLICY_BYTES:
        raise PeerProtocolError("too-large", f"policy file over {MAX_POLICY_BYTES} bytes")
    if data.lstrip()[:1] == b"{":
        return TrustPolicy.from_json(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("policy file is neither JSON nor UTF-8 text") from exc
    return parse_tlog_policy(text)
