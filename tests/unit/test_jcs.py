"""Canonical JSON: the fast path must be byte-identical to the rfc8785 reference (design §3)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import MAX_SAFE_INTEGER, canonical, loads_strict, parse_canonical

# Any text without lone surrogates (which are not Unicode scalar values and cannot be UTF-8 encoded).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
ASCII_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
# Keys that stress the ordering rule: JCS sorts by UTF-16 code units, Python by code points.
KEYS = st.one_of(
    TEXT,
    ASCII_TEXT,
    st.sampled_from(["a", "b", "\u00e9", "\ue000", "\uffff", "\U0001f600", "\U00010000", "", "A", "aa"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(KEYS, children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=1500)
@given(VALUES)
def test_canonical_is_byte_identical_to_rfc8785(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=500)
@given(VALUES)
def test_parse_canonical_round_trips(value: Any) -> None:
    data = canonical(value)
    assert parse_canonical(data, max_bytes=1 << 20) == value


def test_astral_keys_sort_by_utf16_code_units() -> None:
    # U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16 but after it by code point.
    value = {"\ue000": 1, "\U0001f600": 2}
    assert canonical(value) == rfc8785.dumps(value)
    assert canonical(value).index("\U0001f600".encode()) < canonical(value).index("\ue000".encode())


def test_control_characters_are_escaped_like_rfc8785() -> None:
    value = {"s": "".join(chr(c) for c in range(0x20)) + '"\\\u007f\u2028'}
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "float-refused"),
        ({"amount": 1.0}, "float-refused"),
        ([0, [1, [2.5]]], "float-refused"),
        (MAX_SAFE_INTEGER + 1, "integer-out-of-range"),
        (-MAX_SAFE_INTEGER - 1, "integer-out-of-range"),
        ({1: "x"}, "non-canonical-json"),
        ((1, 2), "non-canonical-json"),
        (b"bytes", "non-canonical-json"),
        ({"s": "\ud800"}, "non-canonical-json"),
    ],
)
def test_canonical_refuses_values_outside_the_domain(value: Any, reason: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        canonical(value)
    assert info.value.reason == reason


def test_canonical_refuses_deep_nesting() -> None:
    value: Any = "leaf"
    for _ in range(40):
        value = [value]
    with pytest.raises(LocalProtocolError) as info:
        canonical(value)
    assert info.value.reason == "non-canonical-json"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a": 1}', "non-canonical-json"),  # whitespace
        (b'{"b":1,"a":2}', "non-canonical-json"),  # unsorted keys
        (b'{"a":1,"a":1}', "non-canonical-json"),  # duplicate key
        (b'{"a":"\\u0041"}', "non-canonical-json"),  # needless escape
        (b'{"a":1.0}', "float-refused"),
        (b'{"a":1e3}', "float-refused"),
        (b'{"a":NaN}', "bad-json"),
        (b'{"a":Infinity}', "bad-json"),
        (b'{"a":9007199254740992}', "integer-out-of-range"),
        (b'{"a":' + b"9" * 5000 + b"}", "integer-out-of-range"),
        (b'{"a":', "bad-json"),
        (b'{"a":1} x', "bad-json"),
        (b"\xff\xfe", "bad-json"),
        (b'{"a":"' + b"x" * 100 + b'"}', "too-large"),
        (b"[" * 5000 + b"]" * 5000, "bad-json"),
    ],
)
def test_parse_canonical_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        parse_canonical(data, max_bytes=64 if reason == "too-large" else 1 << 20)
    assert info.value.reason == reason


def test_parse_canonical_accepts_non_ascii_canonical_input() -> None:
    value = {"name": "شركة", "城市": "上海", "\U0001f600": 1}
    data = rfc8785.dumps(value)
    assert parse_canonical(data, max_bytes=1024) == value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a":1,"a":2}', "bad-json"),
        (b'{"a":0.5}', "float-refused"),
        (b'{"a":-Infinity}', "bad-json"),
        (b'{"a":99999999999999999}', "integer-out-of-range"),
    ],
)
def test_loads_strict_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        loads_strict(data, max_bytes=1024)
    assert info.value.reason == reason


def test_loads_strict_accepts_non_canonical_json() -> None:
    assert loads_strict(b'{ "b": 1, "a": [true, null] }', max_bytes=1024) == {"a": [True, None], "b": 1}


@pytest.mark.parametrize("data", [b'{"a":"\\ud800"}', b'["\\udfff"]', b'{"\\ud800":1}'])
def test_lone_surrogate_escapes_are_refused_not_a_crash(data: bytes) -> None:
    """Regression: parse_canonical (and so Receipt.from_bytes on gossip) used to raise UnicodeEncodeError."""
    with pytest.raises(PeerProtocolError) as info:
        parse_canonical(data, max_bytes=1024)
    assert info.value.reason == "non-canonical-json"


@pytest.mark.parametrize("parse", [parse_canonical, loads_strict])
def test_deep_nesting_is_refused_whatever_the_recursion_limit(parse: Any) -> None:
    """A library may raise the recursion limit (py_ecc under eth-account sets 100,000): the depth
    bound must not depend on it, or "[[[[..." would recurse in C until the stack overflows."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(PeerProtocolError) as info:
            parse(b"[" * 300_000 + b"]" * 300_000, max_bytes=1 << 20)
        assert info.value.reason == "bad-json" and "deeper" in info.value.message
    finally:
        sys.setrecursionlimit(old)
    # Brackets inside strings do not count, and 32 levels are allowed.
    assert parse(b'{"a":"' + b"[" * 100 + b'"}', max_bytes=1 << 20) == {"a": "[" * 100}
    assert parse(b"[" * 32 + b"]" * 32, max_bytes=1 << 20) is not None
