"""The faster checks that the light client's budget asked for (issue 8) are exactly the old ones.

Each regex replaced a per-character loop; each is compared with that loop on every Unicode code point.
``SignedNote._encoded_size`` replaced ``len(to_bytes())``; it is compared on generated notes.
"""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.checkpoints import _BAD_LINE_CHAR
from protocol.keys import _SPACE_OR_PLUS, key_id
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
