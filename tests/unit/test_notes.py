"""Tests of protocol.notes: C2SP signed notes (c2sp.org/signed-note).

Known answers come from golang.org/x/mod/sumdb/note's note_test.go (PeterNeumann and
EnochRoot keys and notes), from real sum.golang.org signed tree heads, and from the
signed-note spec's own example. Near misses change one thing per row and assert the
reason. Properties: every accepted input is canonical (format(parse(b)) == b), and any
byte string either parses or raises PeerProtocolError.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from protocol.notes import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    NoteSignature,
    SignedNote,
    format_note,
    open_note,
    parse_note,
    parse_signature_lines,
    sign_note,
    verify_note,
    with_signatures,
)

# --------------------------------------------------------------------------- known answers

# golang.org/x/mod/sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgK"
    "vqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01"
    "oOTGwnWLox33WWd1RvMc+QQ=\n"
)
GO_NOTE = (GO_TEXT + "\n" + PETER_SIG).encode()
GO_NOTE_2 = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()

PETER = VerifierKey.from_vkey(PETER_VKEY)
ENOCH = VerifierKey.from_vkey(ENOCH_VKEY)

# The Go toolchain's built-in key for sum.golang.org, and signed tree heads it served.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTES = [
    b"go.sum database tree\n63512409\nF7eHRPqN/cqPtqti14NKdGGaI1Giw8coWP3KxihFZbg=\n\n"
    b"\xe2\x80\x94 sum.golang.org Az3gri1OBHKT87Xj8UXU8zjoHGy/X+7Nl94f8TZkELVaasolmGAp"
    b"UsWqwVG9vE6hgqYb/ph/w2vdk"
    b"LIVRH7bMB/FPQ4=\n",
    b"go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
    b"\xe2\x80\x94 sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYsp"
    b"g3dxXABkGZZKdsQ8=\n",
    b"go.sum database tree\n3784599\n7uvxIZ67TZygcq/AehTD8iHYt81Ih+Zl2Y7vXZbfszQ=\n\n"
    b"\xe2\x80\x94 sum.golang.org Az3grn972wXskjQrsZhVGc93fTU2uOsmSTiId1Wn1lxDCup5z4ggl1/4gaUqOkMa6cMbYvjB7hn"
    b"7yemNr7Zqanol/go=\n",
]

# c2sp.org/signed-note's example (no public key is given, so it is checked for shape only).
SPEC_NOTE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW"
    "9oJKONrMouFSQU0xMcXxj99ih"
    "AQwaqP3ZekRwNtIc=\n"
).encode()

# c2sp.org/tlog-witness: an add-checkpoint response body (three signature lines).
WITNESS_RESPONSE = (
    "— witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39"
    "QsZTSvVjyQLrdk3DXDqI5G2HgLat"
    "Vs0pWh6Up69HVOw==\n"
    "— witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVl"
    "bQNt64vWhO+DlkL0+UfzuOBMh9Ch"
    "dMkP1vi/lCAsmlw==\n"
    "— witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aL"
    "ZgrrKbYKA7nC3HNJhm/kWl7oJlqU"
    "3rXXvpysAdyP3wQ==\n"
).encode()


def reason_of(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    value = exc_info.value
    assert isinstance(value, PeerProtocolError | LocalProtocolError)
    return value.reason


class TestGoKnownAnswers:
    def test_sign_reproduces_go_output_byte_for_byte(self) -> None:
        key = SigningKey.from_private_line(PETER_SKEY)
        sig = sign_note(GO_TEXT, key)
        assert sig.to_line() == PETER_SIG
        assert sig.key_id == bytes.fromhex("c74f20a3")
        assert format_note(SignedNote(text=GO_TEXT, signatures=(sig,))) == GO_NOTE

    def test_go_note_verifies_with_peter(self) -> None:
        note = parse_note(GO_NOTE)
        assert note.text == GO_TEXT
        assert verify_note(note, [PETER]) == [PETER]

    def test_one_known_key_verifies_the_other_is_ignored(self) -> None:
        note = parse_note(GO_NOTE_2)
        assert verify_note(note, [PETER]) == [PETER]
        assert verify_note(note, [ENOCH]) == [ENOCH]
        assert verify_note(note, [ENOCH, PETER]) == [PETER, ENOCH]  # order of the note, not of the keys

    def test_no_known_key_returns_empty_and_open_note_rejects(self) -> None:
        assert verify_note(parse_note(GO_NOTE_2), []) == []
        with pytest.raises(PeerProtocolError) as exc:
            open_note(GO_NOTE_2, [])
        assert reason_of(exc) == "unverified-note"

    def test_open_note_returns_note_and_keys(self) -> None:
        note, keys = open_note(GO_NOTE_2, [PETER])
        assert keys == [PETER]
        assert len(note.signatures) == 2

    def test_same_key_twice_in_verifiers_is_not_ambiguous(self) -> None:
        assert verify_note(parse_note(GO_NOTE), [PETER, PETER]) == [PETER]

    def test_go_invalid_signature_with_abcd_inserted(self) -> None:
        # note_test.go: peterSig[:60] + "ABCD" + peterSig[60:] -> "invalid signature for key".
        line = PETER_SIG.encode()  # Go indexes bytes; the em dash is three of them
        bad = GO_TEXT.encode() + b"\n" + line[:60] + b"ABCD" + line[60:]
        note = parse_note(bad)
        with pytest.raises(PeerProtocolError) as exc:
            verify_note(note, [PETER])
        assert reason_of(exc) == "bad-signature"

    def test_go_duplicated_signatures_verify(self) -> None:
        # note_test.go "Duplicated verified and unverified signatures": duplicates are fine.
        data = (GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG).encode()
        note = parse_note(data)
        assert len(note.signatures) == 4
        assert format_note(note) == data
        assert verify_note(note, [PETER]) == [PETER]

    @pytest.mark.parametrize(
        ("desc", "data", "reason"),
        [
            ("text only", GO_TEXT.encode(), "bad-note"),
            ("text and blank line, no signature", (GO_TEXT + "\n").encode(), "bad-note"),
            ("last signature without newline", (GO_TEXT + "\n" + PETER_SIG[:-1]).encode(), "bad-note"),
            (
                "leading control character",
                ("\x01" + GO_TEXT + "\n" + PETER_SIG).encode(),
                "bad-note-encoding",
            ),
            ("leading invalid UTF-8", b"\xff" + GO_NOTE, "bad-note-encoding"),
            (
                "space in key name, no newline",
                (GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1]).encode(),
                "bad-note",
            ),
            (
                "space in key name",
                (GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")).encode(),
                "bad-signature-line",
            ),
            (
                "unexpected line after signatures",
                (GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n").encode(),
                "bad-signature-line",
            ),
            ("101 signatures", (GO_TEXT + "\n" + PETER_SIG * 101).encode(), "too-many-signatures"),
        ],
    )
    def test_go_bad_messages(self, desc: str, data: bytes, reason: str) -> None:
        with pytest.raises(PeerProtocolError) as exc:
            parse_note(data)
        assert reason_of(exc) == reason, desc

    def test_go_misnamed_and_wrong_hash_are_unknown_keys(self) -> None:
        # Same key ID, other name; same name, other key ID: both ignored, never verified.
        misnamed = parse_note((GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego")).encode())
        wrong_hash = parse_note((GO_TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx")).encode())
        assert verify_note(misnamed, [PETER]) == []
        assert verify_note(wrong_hash, [PETER]) == []


class TestOtherKnownAnswers:
    @pytest.mark.parametrize("data", SUMDB_NOTES, ids=["63512409", "65209736", "3784599"])
    def test_real_sum_golang_org_tree_heads_verify(self, data: bytes) -> None:
        key = VerifierKey.from_vkey(SUMDB_VKEY)
        note = parse_note(data)
        assert format_note(note) == data
        assert verify_note(note, [key]) == [key]

    def test_tampered_sum_golang_org_tree_head_fails(self) -> None:
        key = VerifierKey.from_vkey(SUMDB_VKEY)
        tampered = SUMDB_NOTES[0].replace(b"63512409", b"63512410")
        with pytest.raises(PeerProtocolError) as exc:
            verify_note(parse_note(tampered), [key])
        assert reason_of(exc) == "bad-signature"

    def test_spec_example_parses_with_blank_line_in_text(self) -> None:
        note = parse_note(SPEC_NOTE)
        assert note.text.endswith("\n\ned è subito sera.\n")
        assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]
        assert note.signatures[0].key_id == base64.b64decode("NnugSzTj")[:4]
        assert len(note.signatures[0].signature) == 64
        assert format_note(note) == SPEC_NOTE

    def test_witness_response_lines(self) -> None:
        sigs = parse_signature_lines(WITNESS_RESPONSE)
        assert [s.name for s in sigs] == ["witness.example/w1", "witness.example/w1", "witness.example/w2"]
        assert all(len(s.signature) == 8 + 64 for s in sigs)
        assert "".join(s.to_line() for s in sigs).encode() == WITNESS_RESPONSE

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "bad-note"),
            (WITNESS_RESPONSE[:-1], "bad-note"),
            (b"\n", "bad-signature-line"),
            (WITNESS_RESPONSE + b"\n", "bad-signature-line"),
            (WITNESS_RESPONSE.replace(b"\n", b"\r\n"), "bad-note-encoding"),
            (b"\xff", "bad-note-encoding"),
        ],
    )
    def test_witness_response_near_misses(self, data: bytes, reason: str) -> None:
        with pytest.raises(PeerProtocolError) as exc:
            parse_signature_lines(data)
        assert reason_of(exc) == reason


# --------------------------------------------------------------------------- round trips


def _key(name: str, n: int) -> SigningKey:
    return SigningKey(name, bytes([n]) * 32)


LOG = _key("sez.gov.pk/corridor/PAK-KSA", 1)
OTHER = _key("sez.gov.sa/corridor/PAK-KSA", 2)


def _signed(text: str, *keys: SigningKey) -> bytes:
    return format_note(SignedNote(text=text, signatures=tuple(sign_note(text, k) for k in keys)))


ROUND_TRIP = [
    pytest.param(GO_NOTE, id="go-one-signature"),
    pytest.param(GO_NOTE_2, id="go-two-signatures"),
    pytest.param(SPEC_NOTE, id="spec-blank-line-in-text"),
    pytest.param(SUMDB_NOTES[0], id="sumdb"),
    pytest.param(_signed("a\n", LOG), id="one-line-text"),
    pytest.param(_signed("\n", LOG), id="text-is-a-newline"),
    pytest.param(_signed("a\n\n", LOG), id="text-ends-with-blank-line"),
    pytest.param(_signed("x\n\n\ny\n", LOG, OTHER), id="blank-lines-inside"),
    pytest.param(_signed("— not a signature\n", LOG), id="dash-line-in-text"),
    pytest.param(_signed("ünïcödé \u2028 \x7f \x85\n", LOG), id="non-ascii-and-del"),
    pytest.param(
        (
            "t\n\n" + "".join(f"— k{i} " + base64.b64encode(bytes(5)).decode() + "\n" for i in range(100))
        ).encode(),
        id="exactly-MAX_SIGNATURES",
    ),
]


@pytest.mark.parametrize("data", ROUND_TRIP)
def test_round_trip_fed_whole(data: bytes) -> None:
    note = parse_note(data)
    assert format_note(note) == data
    assert note.to_bytes() == data
    assert SignedNote.from_bytes(data) == note


@pytest.mark.parametrize("data", ROUND_TRIP)
def test_every_prefix_parses_canonically_or_raises_peer_error(data: bytes) -> None:
    """Fed byte by byte: a prefix is valid only at a signature-line boundary, and then canonical."""
    valid = []
    for end in range(len(data)):
        try:
            note = parse_note(data[:end])
        except PeerProtocolError:
            continue
        assert format_note(note) == data[:end]
        valid.append(end)
    full = parse_note(data)
    assert len(valid) == len(full.signatures) - 1


@pytest.mark.parametrize("data", ROUND_TRIP)
def test_trailing_bytes_are_refused_or_become_a_signature(data: bytes) -> None:
    full = len(parse_note(data).signatures) == MAX_SIGNATURES
    line_reason = "too-many-signatures" if full else "bad-signature-line"
    for tail, reason in [(b"x", "bad-note"), (b"\n", "bad-note"), (b"x\n", line_reason)]:
        with pytest.raises(PeerProtocolError) as exc:
            parse_note(data + tail)
        assert reason_of(exc) == reason
    extra = PETER_SIG.encode()
    if full:
        with pytest.raises(PeerProtocolError) as exc:
            parse_note(data + extra)
        assert reason_of(exc) == "too-many-signatures"
    else:
        note = parse_note(data + extra)
        assert note.signatures[-1].to_line().encode() == extra
        assert format_note(note) == data + extra


# --------------------------------------------------------------------------- near misses


def _flip(data: bytes, b64_line_index: int, byte_index: int) -> bytes:
    """Flip the low bit of byte ``byte_index`` of the decoded signature on signature "
    "line ``b64_line_index``."""
    note = parse_note(data)
    sig = note.signatures[b64_line_index]
    raw = bytearray(sig.key_id + sig.signature)
    raw[byte_index] ^= 0x01
    changed = NoteSignature(name=sig.name, key_id=bytes(raw[:4]), signature=bytes(raw[4:]))
    sigs = list(note.signatures)
    sigs[b64_line_index] = changed
    return format_note(SignedNote(text=note.text, signatures=tuple(sigs)))


PARSE_NEAR_MISSES = [
    ("missing final newline", GO_NOTE[:-1], "bad-note"),
    ("extra blank line at the end", GO_NOTE + b"\n", "bad-note"),
    (
        "no blank line before signatures",
        GO_NOTE.replace(b".\n\n\xe2\x80\x94", b".\n\xe2\x80\x94"),
        "bad-note",
    ),
    ("CRLF line endings", GO_NOTE.replace(b"\n", b"\r\n"), "bad-note-encoding"),
    ("NUL in text", GO_NOTE.replace(b"If you", b"If\x00you"), "bad-note-encoding"),
    ("tab in key name", GO_NOTE.replace(b"PeterNeumann", b"Peter\tNeumann"), "bad-note-encoding"),
    ("invalid UTF-8 in text", GO_NOTE.replace(b"If you", b"If \xc3you"), "bad-note-encoding"),
    ("UTF-8 encoded surrogate", GO_NOTE.replace(b"If you", b"If \xed\xa0\x80you"), "bad-note-encoding"),
    ("en dash instead of em dash", GO_NOTE.replace("—".encode(), "–".encode()), "bad-signature-line"),
    ("hyphen instead of em dash", GO_NOTE.replace("—".encode(), b"-"), "bad-signature-line"),
    ("two hyphens instead of em dash", GO_NOTE.replace("—".encode(), b"--"), "bad-signature-line"),
    ("no space after em dash", GO_NOTE.replace("— ".encode(), "—".encode()), "bad-signature-line"),
    ("two spaces before signature", GO_NOTE.replace(b"Neumann ", b"Neumann  "), "bad-signature-line"),
    ("no space before signature", GO_NOTE.replace(b"Neumann ", b"Neumann"), "bad-signature-line"),
    ("empty key name", GO_NOTE.replace(b"PeterNeumann", b""), "bad-signature-line"),
    ("plus in key name", GO_NOTE.replace(b"PeterNeumann", b"Peter+Neumann"), "bad-signature-line"),
    (
        "no-break space in key name",
        GO_NOTE.replace(b"PeterNeumann", "Peter\u00a0Neumann".encode()),
        "bad-signature-line",
    ),
    ("base64 without padding", GO_NOTE.replace(b"AM=\n", b"AM\n"), "bad-signature-line"),
    ("base64 with non-zero trailing bits", GO_NOTE.replace(b"AM=\n", b"AN=\n"), "bad-signature-line"),
    ("URL-safe base64", GO_NOTE.replace(b"x08go/", b"x08go_"), "bad-signature-line"),
    (
        "empty signature",
        GO_NOTE.replace(PETER_SIG.encode(), "— PeterNeumann \n".encode()),
        "bad-signature-line",
    ),
    (
        "key ID only",
        GO_NOTE.replace(PETER_SIG.encode(), "— PeterNeumann x08gow==\n".encode()),
        "bad-signature-line",
    ),
    ("trailing space", GO_NOTE[:-1] + b" \n", "bad-signature-line"),
    ("trailing garbage, no newline", GO_NOTE + b"garbage", "bad-note"),
    ("trailing garbage line", GO_NOTE + b"garbage\n", "bad-signature-line"),
    ("oversize", b"a" * (MAX_NOTE_BYTES - len(GO_NOTE) + 1) + GO_NOTE, "note-too-large"),
    (
        "one signature too many",
        (GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode(),
        "too-many-signatures",
    ),
]


@pytest.mark.parametrize(("desc", "data", "reason"), PARSE_NEAR_MISSES, ids=[r[0] for r in PARSE_NEAR_MISSES])
def test_parse_near_misses(desc: str, data: bytes, reason: str) -> None:
    assert data != GO_NOTE
    with pytest.raises(PeerProtocolError) as exc:
        parse_note(data)
    assert reason_of(exc) == reason, desc


def test_largest_note_is_accepted() -> None:
    data = b"a" * (MAX_NOTE_BYTES - len(GO_NOTE)) + GO_NOTE
    assert len(data) == MAX_NOTE_BYTES
    assert format_note(parse_note(data)) == data


VERIFY_NEAR_MISSES = [
    ("flipped bit in signature", _flip(GO_NOTE, 0, 10), "bad-signature"),
    ("flipped bit in last signature byte", _flip(GO_NOTE, 0, 67), "bad-signature"),
    ("flipped bit in text", GO_NOTE.replace(b"answer", b"answes"), "bad-signature"),
    (
        "signature one byte short",
        GO_NOTE.replace(
            PETER_SIG.encode(),
            NoteSignature(name="PeterNeumann", key_id=PETER.key_id, signature=bytes(63)).to_line().encode(),
        ),
        "bad-signature",
    ),
    ("flipped bit in key ID", _flip(GO_NOTE, 0, 0), "unverified-note"),
    ("wrong key name", GO_NOTE.replace(b"PeterNeumann", b"PeterNeumann2"), "unverified-note"),
    ("signature by another key under its own name", _signed(GO_TEXT, LOG), "unverified-note"),
]


@pytest.mark.parametrize(
    ("desc", "data", "reason"), VERIFY_NEAR_MISSES, ids=[r[0] for r in VERIFY_NEAR_MISSES]
)
def test_verify_near_misses(desc: str, data: bytes, reason: str) -> None:
    parse_note(data)  # each row is well-formed: only verification can tell
    with pytest.raises(PeerProtocolError) as exc:
        open_note(data, [PETER])
    assert reason_of(exc) == reason, desc


def test_bad_signature_of_known_key_rejects_even_with_a_good_one() -> None:
    good = sign_note(GO_TEXT, SigningKey.from_private_line(PETER_SKEY))
    bad = NoteSignature(name=good.name, key_id=good.key_id, signature=bytes(64))
    note = SignedNote(text=GO_TEXT, signatures=(good, bad))
    with pytest.raises(PeerProtocolError) as exc:
        verify_note(note, [PETER])
    assert reason_of(exc) == "bad-signature"


def test_cosigner_keys_are_refused_by_verify_note() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        verify_note(parse_note(GO_NOTE), [PETER.with_alg(ALG_COSIGNATURE_V1)])
    assert reason_of(exc) == "unsupported-key-type"


# --------------------------------------------------------------------------- values and helpers


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "bad-note"),
        ("no newline", "bad-note"),
        ("cr\r\n", "bad-note-encoding"),
        ("\ud800\n", "bad-note-encoding"),
    ],
)
def test_signed_note_refuses_bad_text(text: str, reason: str) -> None:
    sig = NoteSignature(name="k", key_id=bytes(4), signature=bytes(64))
    with pytest.raises(LocalProtocolError) as exc:
        SignedNote(text=text, signatures=(sig,))
    assert reason_of(exc) == reason
    with pytest.raises(LocalProtocolError) as exc:
        sign_note(text, LOG)
    assert reason_of(exc) == reason


def test_signed_note_limits_are_enforced_on_construction() -> None:
    sig = NoteSignature(name="k", key_id=bytes(4), signature=bytes(64))
    with pytest.raises(LocalProtocolError) as exc:
        SignedNote(text="t\n", signatures=())
    assert reason_of(exc) == "bad-note"
    with pytest.raises(LocalProtocolError) as exc:
        SignedNote(text="t\n", signatures=(sig,) * (MAX_SIGNATURES + 1))
    assert reason_of(exc) == "too-many-signatures"
    with pytest.raises(LocalProtocolError) as exc:
        SignedNote(text="t" * MAX_NOTE_BYTES + "\n", signatures=(sig,))
    assert reason_of(exc) == "note-too-large"


@pytest.mark.parametrize(
    ("name", "key_id", "signature"),
    [
        ("", bytes(4), b"x"),
        ("a b", bytes(4), b"x"),
        ("a+b", bytes(4), b"x"),
        ("a\x00", bytes(4), b"x"),
        ("a", bytes(3), b"x"),
        ("a", bytes(5), b"x"),
        ("a", bytes(4), b""),
    ],
)
def test_note_signature_refuses_bad_fields(name: str, key_id: bytes, signature: bytes) -> None:
    with pytest.raises(LocalProtocolError) as exc:
        NoteSignature(name=name, key_id=key_id, signature=signature)
    assert reason_of(exc) == "bad-signature-line"


def test_sign_and_verify_round_trip_with_generated_key() -> None:
    key = SigningKey.generate("watcher.example/w1")
    text = "sez.gov.pk/corridor/PAK-KSA\n7\n" + base64.b64encode(bytes(32)).decode() + "\n"
    note = SignedNote(text=text, signatures=(sign_note(text, key),))
    assert verify_note(parse_note(format_note(note)), [key.verifier()]) == [key.verifier()]


def test_with_signatures_dedupes_keeps_first_and_order() -> None:
    text = "hello\n"
    a, b = sign_note(text, LOG), sign_note(text, OTHER)
    a_again = NoteSignature(name=a.name, key_id=a.key_id, signature=bytes(64))
    note = SignedNote(text=text, signatures=(a,))
    merged = with_signatures(note, [a_again, b, b])
    assert merged.signatures == (a, b)
    assert with_signatures(merged, [a, b]) is merged  # idempotent
    assert with_signatures(note, []) is note
    assert merged.signatures_for(b.name, b.key_id) == (b,)


def test_with_signatures_refuses_to_exceed_the_limit() -> None:
    text = "t\n"
    full = SignedNote(
        text=text,
        signatures=tuple(NoteSignature(name=f"k{i}", key_id=bytes(4), signature=b"s") for i in range(100)),
    )
    with pytest.raises(LocalProtocolError) as exc:
        with_signatures(full, [sign_note(text, LOG)])
    assert reason_of(exc) == "too-many-signatures"


# --------------------------------------------------------------------------- properties

_NAME = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="+\x85"),
    min_size=1,
    max_size=20,
).filter(lambda s: not any(ch.isspace() for ch in s))
_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\t\x00\x0b\x0c\x1c\x1d\x1e\x1f"),
    max_size=200,
).map(lambda s: "".join(ch for ch in s if ch == "\n" or ord(ch) >= 0x20) + "\n")
_SIG = st.builds(
    NoteSignature,
    name=_NAME,
    key_id=st.binary(min_size=4, max_size=4),
    signature=st.binary(min_size=1, max_size=80),
)
_NOTES = st.builds(SignedNote, text=_TEXT, signatures=st.lists(_SIG, min_size=1, max_size=8).map(tuple))


@given(_NOTES)
def test_property_parse_format_is_identity(note: SignedNote) -> None:
    data = format_note(note)
    assert parse_note(data) == note
    assert format_note(parse_note(data)) == data


def _check_arbitrary(data: bytes) -> None:
    try:
        note = parse_note(data)
    except PeerProtocolError:
        return
    assert format_note(note) == data  # anything accepted is canonical


@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_parse_or_raise_peer_error(data: bytes) -> None:
    _check_arbitrary(data)


_FRAGMENTS = st.sampled_from(
    [
        "\n",
        "\n\n",
        "— ",
        "—",
        "–",
        " ",
        "a",
        "k",
        "+",
        "=",
        "==",
        "AAAA",
        "AAAAAAA=",
        "AAAAAA==",
        "\r",
        "\x00",
        "é",
        "\u00a0",
        "x08go/ZJ",
    ]
)


@settings(max_examples=300)
@given(st.lists(_FRAGMENTS, max_size=40).map(lambda parts: "".join(parts).encode()))
def test_property_note_like_bytes_parse_or_raise_peer_error(data: bytes) -> None:
    _check_arbitrary(data)


@given(st.binary(max_size=300))
def test_property_signature_lines_parse_or_raise_peer_error(data: bytes) -> None:
    try:
        sigs = parse_signature_lines(data)
    except PeerProtocolError:
        return
    assert "".join(s.to_line() for s in sigs).encode() == data
