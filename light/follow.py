"""``sez-light follow``: watch a node's checkpoints and alarm on any inconsistency (design §6, §11).

Theory of operation
-------------------
For each log of the policy (or the ``--origin`` named), every poll:

1. fetch the node's latest checkpoint (``GET /v1/logs/{origin}/checkpoint``) and verify it under the
   policy (:func:`protocol.light_follow.open_followed_checkpoint`); a bad answer is an *error*
   (the node may be broken or lying about a checkpoint the log never signed), never an alarm;
2. load the last checkpoint accepted for the origin from the state folder (none: trust on first use,
   keep it);
3. if the new one is larger, demand the consistency proof from the node
   (``GET /v1/logs/{origin}/consistency?old=M&new=N``) and check it
   (:func:`protocol.light_follow.check_extends`); if it is smaller, ask the node for its checkpoint at
   the size we hold: a different root there is a fork;
4. on success, replace the state file atomically (temporary file, fsync, rename, fsync the folder),
   so a crash leaves the old or the new checkpoint, never half of one;
5. on an inconsistency, write the evidence file (both signed checkpoints and the proof) and stop with
   :data:`EXIT_ALARM`.

Polling is bounded: ``--once`` polls once; otherwise every ``--interval`` seconds, at most ``--polls``
times if given. HTTP uses the standard library only (``sez-light`` depends on ``protocol`` alone),
never an environment proxy, with a timeout on every request and a size limit on every answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlencode, urlsplit

from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.light_follow import (
    FollowedCheckpoint,
    Inconsistency,
    check_extends,
    inconsistency_evidence,
    open_followed_checkpoint,
)
from protocol.policy import TrustPolicy

__all__ = ["EXIT_ALARM", "EXIT_ERROR", "NodeClient", "follow", "follow_once", "state_path"]

EXIT_ERROR: Final = 1
EXIT_ALARM: Final = 3
"""Exit status when the log showed two inconsistent checkpoints (distinct from errors, 1)."""
TIMEOUT: Final = 10.0
"""Seconds per HTTP request."""
MAX_ANSWER: Final = 1024 * 1024
"""A checkpoint note or a consistency proof is a few kilobytes; anything larger is refused."""


class NodeClient:
    """A minimal HTTP client of a node's read API (standard library, no proxy, bounded answers)."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT) -> None:
        """Raises LocalProtocolError(bad-url): ``base_url`` is not ``http(s)://HOST[:PORT]``."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LocalProtocolError("bad-url", f"{base_url!r} is not an http(s)://HOST:PORT URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, **params: int) -> bytes:
        """GET ``path`` and return the body of a 200 answer.

        Raises:
            LocalProtocolError: ``unreachable``, ``too-large``, or the problem reason of a non-200 answer.
        """
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                data: bytes = response.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            body = exc.read(64 * 1024)
            reason, detail = f"http-{exc.code}", body.decode("utf-8", "replace")[:200]
            try:
                problem = json.loads(body)
                reason = str(problem["type"]).removeprefix("urn:sez:problem:")
                detail = str(problem.get("detail", ""))
            except (ValueError, KeyError, TypeError):
                pass
            raise LocalProtocolError(reason, f"{url}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LocalProtocolError("unreachable", f"{url}: {exc}") from exc

        if len(data) > MAX_ANSWER:
            raise LocalProtocolError("too-large", f"{url}: answer over {MAX_ANSWER} bytes")
        return data

    def checkpoint(self, origin: str, size: int | None = None) -> bytes:
        path = f"/v1/logs/{quote(origin, safe='/')}/checkpoint"
        return self.get(path) if size is None else self.get(path, size=size)

    def consistency(self, origin: str, old: int, new: int) -> list[bytes]:
        data = self.get(f"/v1/logs/{quote(origin, safe='/')}/consistency", old=old, new=new)
        try:
            answer = json.loads(data)
            if answer["old"] != old or answer["new"] != new:
                raise ValueError("sizes")
            return [base64.b64decode(h, validate=True) for h in answer["hashes"]]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise LocalProtocolError(
                "bad-answer", f"consistency proof {old}->{new} of {origin}: {exc}"
            ) from exc


def state_path(state_dir: Path, origin: str) -> Path:
    """The state file of ``origin``: its last accepted signed checkpoint, verbatim."""
    return state_dir / (quote(origin, safe="") + ".checkpoint")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@dataclass
class _Outcome:
    alarm: bool = False
    errors: int = 0


def _describe(followed: FollowedCheckpoint) -> str:
    cp, decision = followed.checkpoint, followed.decision
    final = "quorum-final" if decision.final else f"not final (missing: {', '.join(decision.missing)})"
    return f"size {cp.size} root {cp.root.hex()[:16]}… {final}"


def follow_origin(
    client: NodeClient,
    policy: TrustPolicy,
    origin: str,
    *,
    state_dir: Path,
    evidence_dir: Path,
    out: Callable[[str], None],
) -> bool:
    """One poll of one origin; True if it raised the alarm (evidence written).

    Raises:
        SezError: a bad answer or an unreachable node (not an alarm).
    """
    new = open_followed_checkpoint(client.checkpoint(origin), policy, origin)
    path = state_path(state_dir, origin)
    if not path.exists():
        _write_atomically(path, new.note)
        out(f"{origin}: trusting first checkpoint: {_describe(new)}")
        return False
    try:
        old = open_followed_checkpoint(path.read_bytes(), policy, origin)
    except PeerProtocolError as exc:
        raise LocalProtocolError(
            "bad-state", f"{path} does not verify under the policy: {exc.message}"
        ) from exc
    proof: list[bytes] | None = None
    try:
        if new.checkpoint.size > old.checkpoint.size:
            proof = client.consistency(origin, old.checkpoint.size, new.checkpoint.size)
        elif new.checkpoint.size < old.checkpoint.size:
            # A lagging node is no proof of anything; its checkpoint at our size with another root is.
            try:
                at_ours = open_followed_checkpoint(
                    client.checkpoint(origin, old.checkpoint.size), policy, origin
                )
            except SezError:
                at_ours = None
            if at_ours is not None and at_ours.checkpoint.size == old.checkpoint.size:
                check_extends(old, at_ours, None)
        relation = check_extends(old, new, proof)
    except Inconsistency as alarm:
        log_key = next((entry.key for entry in policy.logs if entry.origin == origin), None)
        evidence = inconsistency_evidence(alarm, proof, log_key)
        name = (
            f"{quote(origin, safe='')}-{alarm.old.checkpoint.size}-{alarm.new.checkpoint.size}.evidence.json"
        )
        target = evidence_dir / name
        _write_atomically(target, json.dumps(evidence, indent=2, sort_keys=True).encode() + b"\n")
        out(
            f"ALARM: {alarm.reason}: {alarm.message}; "
            f"old {alarm.old.checkpoint.size}/{alarm.old.checkpoint.root.hex()}, "
            f"new {alarm.new.checkpoint.size}/{alarm.new.checkpoint.root.hex()}; evidence: {target}"
        )
        return True
    if relation == "extends":
        _write_atomically(path, new.note)
        out(f"{origin}: consistent {old.checkpoint.size} -> {new.checkpoint.size}: {_describe(new)}")
    elif relation == "same":
        if new.cosigned > old.cosigned:
            _write_atomically(path, new.note)  # the same tree with more cosignatures: keep those
        out(f"{origin}: unchanged: {_describe(new)}")
    else:
        out(f"{origin}: node is behind ({new.checkpoint.size} < {old.checkpoint.size}); keeping ours")
    return False


def follow_once(
    client: NodeClient,
    policy: TrustPolicy,
    origins: list[str],
    *,
    state_dir: Path,
    evidence_dir: Path,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> _Outcome:
    """Poll every origin once; errors are reported and counted, an alarm stops the poll."""
    outcome = _Outcome()
    for origin in origins:
        try:
            if follow_origin(client, policy, origin, state_dir=state_dir, evidence_dir=evidence_dir, out=out):
                outcome.alarm = True
                return outcome
        except SezError as exc:
            outcome.errors += 1
            err(f"error: {origin}: {exc.reason}: {exc.message}")
    return outcome


def follow(
    client: NodeClient,
    policy: TrustPolicy,
    origins: list[str],
    *,
    state_dir: Path,
    evidence_dir: Path,
    interval: float,
    polls: int | None,
    out: Callable[[str], None],
    err: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll ``polls`` times (None: until interrupted); return the exit status.

    Returns:
        :data:`EXIT_ALARM` on an inconsistency; :data:`EXIT_ERROR` if the last poll had errors;
        0 otherwise.
    """
    count = 0
    while True:
        outcome = follow_once(
            client, policy, origins, state_dir=state_dir, evidence_dir=evidence_dir, out=out, err=err
        )
        count += 1
        if outcome.alarm:
            return EXIT_ALARM
        if polls is not None and count >= polls:
            return EXIT_ERROR if outcome.errors else 0
        sleep(interval)
