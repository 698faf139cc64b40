"""Shared pieces of the fuzz tests: the hypothesis profile, mutation strategies, the property.

Layout: every fuzz test lives in ``tests/fuzz/test_fuzz_*.py`` and runs in the ordinary suite with the
``fuzz`` settings below (a few dozen examples per test, the whole folder in well under a minute). Set
``SEZ_FUZZ=deep`` (or run ``./run fuzz``) for the ``fuzz-deep`` settings: many more examples per test,
for a run before a release or after touching a decoder.

Inputs are mostly *mutations of valid seeds* (a byte flipped, a range cut out, bytes inserted, a
truncation, a slice repeated, an "interesting" token spliced in), because random bytes rarely get past
the first check of a decoder; a seed that parses proves the mutation is exploring the later checks.

The property every decoder must keep (:func:`rejects_cleanly`): on any input it returns a value or
raises its documented error type with a kebab-case ``reason``; never any other exception.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from protocol.errors import SezError

__all__ = ["FUZZ", "INTERESTING", "json_edited", "json_junk", "mutated", "rejects_cleanly"]

T = TypeVar("T")

settings.register_profile(
    "fuzz",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("fuzz-deep", parent=settings.get_profile("fuzz"), max_examples=4000)

FUZZ = settings.get_profile("fuzz-deep" if os.environ.get("SEZ_FUZZ") == "deep" else "fuzz")
"""Decorate each fuzz test with ``@FUZZ``: the fast profile by default, the deep one with SEZ_FUZZ=deep."""

INTERESTING: tuple[bytes, ...] = (
    b"\n", b"\n\n", b"\r", b"\x00", b"\xff", b"\x80", b" ", b"\t", b"-", b"+", b"/", b"=",
    b"\xe2\x80\x94 ",  # the em dash that starts a signature line
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\u0000", b"\\ud800", b"1.5", b"1e400", b"-0",
    b"99999999999999999999999", b"18446744073709551616", b"null", b"true", b"[]", b"{}",
    b"\xc0\x80", b"\xed\xa0\x80", b"\x91", b"\xc1", b"\xdc\xff\xff", b"\xdf\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff", b"\xc3", b"\xd9\x20", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"old ", b"index ", b"extra ", b"c2sp.org/tlog-proof@v1\n", b"AAAA", b"====",
)  # fmt: skip
"""Tokens that sit on a decoder's boundaries: separators, control bytes, bad UTF-8, JSON oddities,
msgpack type bytes (map16/array32/str8/bin32/uint64/ext), and the keywords of the text formats."""

_REASON = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, *, max_ops: int = 4, max_len: int = 1 << 20) -> bytes:
    """``seed`` after 1..``max_ops`` random edits (see the module docstring); never over ``max_len``."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "set", "delete", "insert", "truncate", "repeat", "splice")))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            piece = data[at : at + draw(st.integers(1, 64))]
            data[at:at] = piece * draw(st.integers(1, 4))
        else:
            data[at:at] = draw(st.sampled_from(INTERESTING))
        del data[max_len:]
    return bytes(data)


def json_junk() -> st.SearchStrategy[Any]:
    """Any JSON value, small: what a hostile peer can put where an object field was."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.text(max_size=40),
        st.sampled_from(["", "PAK-KSA", "ACTIVE", "0" * 64, "2026-11-27T10:00:00Z", "sez.gov.pk"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )


def rejects_cleanly(call: Callable[[], T], *allowed: type[SezError]) -> T | None:
    """Run ``call``; return its value, or None if it raised one of ``allowed`` with a proper reason.

    Any other exception propagates, so hypothesis reports it (and shrinks the input) as a failure.
    """
    try:
        return call()
    except allowed as exc:
        assert _REASON.fullmatch(exc.reason), f"reason {exc.reason!r} is not a kebab-case code"
        assert exc.message, "an error must say what is wrong"
        return None


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


@st.composite
def json_edited(draw: st.DrawFn, seed: Any, *, max_edits: int = 2) -> Any:
    """A deep copy of the JSON value ``seed`` with 1..``max_edits`` fields replaced by junk, removed,
    or added: the near misses that get past a parser and test the checks behind it."""
    value = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, max_edits))):
        path = draw(st.sampled_from(_paths(value)))
        if not path:
            value = draw(json_junk()) if draw(st.integers(0, 9)) == 0 else value
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(("replace", "remove", "add")))
        if op == "replace":
            parent[path[-1]] = draw(json_junk())
        elif op == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_junk())
        else:
            parent.insert(path[-1], draw(json_junk()))
    return value
