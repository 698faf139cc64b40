"""The faster checks that the light client's budget asked for (issue 8) are exactly the old ones.

Each regex replaced a per-character loop; each is compared with that loop on every Unicode code point.
``SignedNote._encoded_size`` replaced ``len(to_bytes())``; it is compared on generated notes. The control
character check on bytes and the base64 decoders on ``binascii`` are compared with what they replaced.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import checkpoints, notes, tlog_proof
from protocol.checkpoints import _BAD_LINE_CHAR
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import _SPACE_OR_PLUS, ALG_COSIGNATURE_V1, ALG_ED25519, SigningKey, key_id
from protocol.notes import _BAD_NAME_CHAR, NoteSignature, SignedNote

CODE_POINTS = [chr(cp) for cp in range(sys.maxunicode + 1)]


def test_key_name_regex_is_isspace_or_plus() -> None:
    wrong = [
        ch for ch in CODE_POINTS if (_SPACE_OR_PLUS.search(ch) is not None) != (ch.isspace() or ch == "+")
    ]
    assert wrong == []


def test_checkpoint_line_regex_is_controls_and_surrogates() -> None:
    def old(ch: str) -> bool:
        return ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF

    assert [ch for ch in CODE_POINTS if (_BAD_LINE_CHAR.search(ch) is not None) != old(ch)] == []


def test_note_name_regex_is_both_old_checks() -> None:
    def old(ch: str) -> bool:
        return ch.isspace() or ch == "+" or ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF

    assert [ch for ch in CODE_POINTS if (_BAD_NAME_CHAR.search(ch) is not None) != old(ch)] == []


NAMES = st.text(st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters="+"),
                min_size=1, max_size=30).filter(lambda n: not any(c.isspace() for c in n))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=0, max_size=200),
    lines=st.lists(st.tuples(NAMES, st.binary(min_size=1, max_size=120)), min_size=1, max_size=12),
)
def test_encoded_size_is_the_length_of_the_encoding(text: str, lines: list[tuple[str, bytes]]) -> None:
    note = SignedNote(
        text=text + "\n",
        signatures=tuple(NoteSignature(name=n, key_id=b"\x01\x02\x03\x04", signature=s) for n, s in lines),
    )
    assert note._encoded_size() == len(note.to_bytes())


def test_key_id_memo_is_per_argument() -> None:
    public = bytes(range(32))
    assert key_id("a", 1, public) != key_id("b", 1, public) != key_id("a", 4, public)
    assert key_id("a", 1, public) == key_id("a", 1, bytes(range(32)))


# ------------------------------------------------------------------ issue 8b: the light-client budget

OLD_NOTE_BAD_CHAR = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")
"""The regex ``notes._has_bad_char`` searched before it encoded and deleted bytes instead."""


def _old_notes_b64(text: str) -> bytes | None:
    """``notes._b64decode_canonical`` as it was, through the ``base64`` module."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _old_tlog_b64(text: bytes) -> bytes | None:
    """``tlog_proof._b64decode_canonical`` as it was, through the ``base64`` module."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw) == text else None


def test_note_bad_char_is_the_old_regex_on_every_code_point() -> None:
    wrong = [
        ch for ch in CODE_POINTS if notes._has_bad_char(ch) != (OLD_NOTE_BAD_CHAR.search(ch) is not None)
    ]
    assert wrong == []
    assert [
        ch for ch in CODE_POINTS if notes._has_bad_char(f"a{ch}\u2014b\n") != notes._has_bad_char(ch)
    ] == []


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_note_bad_char_is_the_old_regex_on_text(text: str) -> None:
    assert notes._has_bad_char(text) == (OLD_NOTE_BAD_CHAR.search(text) is not None)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=60) | st.text(max_size=40).map(str.encode))
def test_control_byte_check_is_the_text_check_on_utf8(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # parse_note refuses it before the check
    assert notes._has_control_byte(data) == (OLD_NOTE_BAD_CHAR.search(text) is not None)


B64_TEXT = st.one_of(
    st.binary(max_size=80).map(lambda raw: base64.b64encode(raw).decode("ascii")),
    st.binary(min_size=1, max_size=80).map(lambda raw: base64.b64encode(raw).decode("ascii")).flatmap(
        lambda good: st.sampled_from(
            [good[:-1], good + "=", good.rstrip("="), good[:-2] + "B" + good[-1:], " " + good, good + "\n",
             good.replace("+", "-"), good[:4] + "\u00e9" + good[4:], good[:3] + "=" + good[4:]]
        )
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "+/= \n-_\u00e9", max_size=12),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(text=B64_TEXT)
def test_canonical_base64_is_the_old_decoder(text: str) -> None:
    assert notes._b64decode_canonical(text) == _old_notes_b64(text)
    data = text.encode("utf-8")
    assert tlog_proof._b64decode_canonical(data) == _old_tlog_b64(data)


def test_a_signature_line_with_a_control_character_in_its_name_is_a_peer_fault() -> None:
    """``from_line`` checks the name as the constructor does; this used to leak LocalProtocolError."""
    line = "\u2014 bad\x01name " + base64.b64encode(bytes(5)).decode("ascii")
    with pytest.raises(PeerProtocolError) as exc:
        NoteSignature.from_line(line)
    assert exc.value.reason == "bad-signature-line"


def test_the_cosigner_index_memo_refuses_bad_keys_every_time() -> None:
    signer = SigningKey(name="w1.example", seed=bytes(32))
    good = signer.verifier(ALG_COSIGNATURE_V1)
    wrong_type = signer.verifier(ALG_ED25519)
    other = SigningKey(name="w1.example", seed=bytes([1]) * 32).verifier(ALG_COSIGNATURE_V1)
    assert dict(checkpoints._cosigner_index((good,))) == {(good.name, good.key_id): good}
    for _ in range(2):  # an exception is not memoized: the second call refuses again
        with pytest.raises(LocalProtocolError) as exc:
            checkpoints._cosigner_index((good, wrong_type))
        assert exc.value.reason == "unsupported-key-type"
    assert set(checkpoints._cosigner_index((good, other, good))) == {
        (good.name, good.key_id),
        (other.name, other.key_id),
    }
