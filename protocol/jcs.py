"""Canonical JSON (RFC 8785, JCS): the one canonicalizer of sez-node.

Every digest and every signature in sez-node is taken over bytes produced by
:func:`canonical`, so all nodes, watchers and light clients must produce the
same bytes for the same value (design §3).

The reference is the ``rfc8785`` package. It is pure Python and costs about
40 µs for a 900-byte receipt on the project's machine, more than half of the
ingest path's budget. The hot path therefore uses the C-accelerated
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
which is byte-identical to JCS for the value domain admitted here:

* only ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``bool``, ``None``;
  **floats are refused** (amounts are strings of integer minor units) and
  integers must lie in the I-JSON safe range ±(2**53 - 1), as in ``rfc8785``;
* JCS sorts keys by UTF-16 code units, Python by code points; the two orders
  differ only for keys holding characters above U+FFFF, so any value with a
  non-ASCII key is handed to ``rfc8785`` itself;
* string escaping is the same in both (``\\"``, ``\\\\``, ``\\b\\f\\n\\r\\t``,
  other controls as lowercase ``\\u00xx``, everything else literal).

``tests/unit/test_jcs.py`` checks byte identity with ``rfc8785`` on generated
values (a differential fuzz test), as design §3 requires of a faster
canonicalizer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

from .errors import LocalProtocolError, PeerProtocolError

__all__ = [
    "MAX_SAFE_INTEGER",
    "canonical",
    "canonical_parsed_ascii",
    "loads_strict",
    "parse_canonical",
]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer JCS can represent exactly (IEEE 754 double, RFC 8785 §3.2.2.3)."""

_MAX_DEPTH = 32
"""Nesting limit: no sez object is deeper than about six levels; deeper input is an attack."""

_fast_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def _check(value: Any, depth: int) -> bool:
    """Validate the value domain; return True iff every key is ASCII.

    Raises:
        LocalProtocolError: a float, an out-of-range integer, a non-str key, an
            unsupported type, or nesting deeper than ``_MAX_DEPTH``.
    """
    if depth > _MAX_DEPTH:
        raise LocalProtocolError("non-canonical-json", f"nesting deeper than {_MAX_DEPTH}")
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return True
        raise LocalProtocolError("integer-out-of-range", f"integer {value} is outside ±(2**53-1)")
    if kind is dict:
        ascii_keys = True
        for key, item in value.items():
            if type(key) is not str:
                raise LocalProtocolError("non-canonical-json", f"object key {key!r} is not a string")
            if not key.isascii():
                ascii_keys = False
            if not _check(item, depth + 1):
                ascii_keys = False
        return ascii_keys
    if kind is list:
        ascii_keys = True
        for item in value:
            if not _check(item, depth + 1):
                ascii_keys = False
        return ascii_keys
    if kind is float:
        raise LocalProtocolError(
            "float-refused", f"float {value!r} refused: use a string of integer minor units"
        )
    raise LocalProtocolError("non-canonical-json", f"type {kind.__name__} cannot be canonicalized")


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``.

    Raises:
        LocalProtocolError: reasons ``float-refused``, ``integer-out-of-range``,
            ``non-canonical-json`` (bad type, non-string key, lone surrogate, too deep).
    """
    ascii_keys = _check(value, 0)
    try:
        if ascii_keys:
            return _fast_dumps(value).encode("utf-8")
        return bytes(rfc8785.dumps(value))
    except (UnicodeEncodeError, rfc8785.CanonicalizationError) as exc:
        raise LocalProtocolError("non-canonical-json", f"value cannot be canonicalized: {exc}") from exc


def canonical_parsed_ascii(value: Any) -> bytes:
    """:func:`canonical` for a value that :func:`loads_strict` parsed from pure-ASCII input.

    Such a value cannot hold a float, an out-of-range integer, a non-string key
    or a non-ASCII key, so the domain walk of :func:`canonical` is skipped (it
    costs about 4 µs of the ingest path). Callers must check ``data.isascii()``
    on the parsed bytes first; anything else goes through :func:`canonical`.
    """
    return _fast_dumps(value).encode("utf-8")


def _refuse_float(text: str) -> Any:
    raise PeerProtocolError("float-refused", f"number {text} is not an integer: floats are refused")


def _refuse_constant(text: str) -> Any:
    raise PeerProtocolError("bad-json", f"{text} is not JSON")


def _parse_int(text: str) -> int:
    # Length guard first: int() of a huge digit string is quadratic (CVE-2020-10735).
    if len(text) > 17:
        raise PeerProtocolError("integer-out-of-range", f"integer {text[:20]}… is outside ±(2**53-1)")
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise PeerProtocolError("integer-out-of-range", f"integer {text} is outside ±(2**53-1)")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        dup = next(key for key in keys if keys.count(key) > 1)
        raise PeerProtocolError("bad-json", f"duplicate object key {dup!r}")
    return result


_strict_decoder = json.JSONDecoder(
    parse_float=_refuse_float,
    parse_int=_parse_int,
    parse_constant=_refuse_constant,
    object_pairs_hook=_no_duplicates,
)


_canonical_decoder = json.JSONDecoder(
    parse_float=_refuse_float, parse_int=_parse_int, parse_constant=_refuse_constant
)
"""For input that must be canonical: a duplicate key cannot survive the byte comparison, so no hook."""


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def _nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (only for input with many brackets)."""
    depth = deepest = 0
    for char in _BRACKETS.findall(_STRINGS.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _decode(data: bytes | str, decoder: json.JSONDecoder, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise PeerProtocolError("too-large", f"JSON of {len(data)} bytes exceeds the limit of {max_bytes}")
    # Nesting is bounded here, not by the interpreter's recursion limit, which a library may raise
    # (py_ecc, under eth-account, sets it to 100,000): the C decoder would then recurse deep enough
    # on "[[[[..." to overflow the C stack. Counting brackets is cheap; only input with more brackets
    # than the depth limit is scanned exactly.
    brackets = (
        data.count(b"[") + data.count(b"{")
        if isinstance(data, bytes | bytearray)
        else (data.count("[") + data.count("{"))
    )
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        if brackets > _MAX_DEPTH and _nesting_depth(text) > _MAX_DEPTH:
            raise PeerProtocolError("bad-json", f"JSON nested deeper than {_MAX_DEPTH}")
        return decoder.decode(text)
    except UnicodeDecodeError as exc:
        raise PeerProtocolError("bad-json", f"not UTF-8: {exc}") from exc
    except RecursionError as exc:
        raise PeerProtocolError("bad-json", "JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise PeerProtocolError("bad-json", f"malformed JSON: {exc}") from exc


def loads_strict(data: bytes | str, *, max_bytes: int) -> Any:
    """Parse JSON that sez-node accepts from outside: no floats, no NaN, no duplicate keys.

    It need not be canonical (use :func:`parse_canonical` for signed objects).

    Raises:
        PeerProtocolError: reasons ``too-large``, ``bad-json``, ``float-refused``,
            ``integer-out-of-range``.
    """
    return _decode(data, _strict_decoder, max_bytes)


def parse_canonical(data: bytes, *, max_bytes: int) -> Any:
    """Parse bytes that must already be RFC 8785 canonical (a signed object on the wire).

    Raises:
        PeerProtocolError: as :func:`loads_strict` (a duplicate key is reported as
            ``non-canonical-json``), or ``non-canonical-json`` when the bytes are
            valid JSON but not their own canonical form.
    """
    value = _decode(data, _canonical_decoder, max_bytes)
    try:
        again = canonical_parsed_ascii(value) if data.isascii() else canonical(value)
    except LocalProtocolError as exc:
        raise PeerProtocolError(exc.reason, exc.message) from exc
    except UnicodeEncodeError as exc:  # a "\ud800" escape parses to a lone surrogate, which has no UTF-8 form
        raise PeerProtocolError("non-canonical-json", "JSON holds a lone surrogate escape") from exc
    if again != data:
        raise PeerProtocolError("non-canonical-json", "JSON bytes are not in RFC 8785 canonical form")
    return value
