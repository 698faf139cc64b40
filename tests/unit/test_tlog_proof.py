"""Tests of protocol.tlog_proof: the c2sp.org/tlog-proof@v1 bundle.

Inclusion proofs come from the slow RFC 6962 reference in tests/reference_rfc6962.py.
The spec's example bundle is used for its header part (its signature lines are elided
with "[...]", so as printed it must be refused); a real cosigned checkpoint from
test_checkpoints stands in for its checkpoint. Near misses change one thing per row
and assert the reason.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import MAX_NOTE_BYTES, NoteSignature, SignedNote, format_note, parse_note
from protocol.tlog_proof import (
    HEADER,
    MAX_EXTRA_BYTES,
    MAX_PROOF_BUNDLE_BYTES,
    MAX_PROOF_HASHES,
    TlogProof,
    verify_tlog_proof,
)
from tests.reference_rfc6962 import ReferenceTree
from tests.unit.test_checkpoints import ARCHE_LOG, ARCHE_NOTE, REMORA

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
LOG = SigningKey(ORIGIN, bytes([1]) * 32)
OTHER_LOG = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes([2]) * 32)
W1 = SigningKey("watcher.example/w1", bytes([3]) * 32)
W1_V = W1.verifier(ALG_COSIGNATURE_V1)
T1 = 1_795_000_000

LEAVES = [f"receipt {i}".encode() for i in range(13)]
TREE = ReferenceTree(LEAVES)


def reason_of(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    value = exc_info.value
    assert isinstance(value, PeerProtocolError | LocalProtocolError)
    return value.reason


def checkpoint_note(size: int, key: SigningKey = LOG, cosigned: bool = True) -> bytes:
    cp = Checkpoint(origin=key.name, size=size, root=TREE.root(size))
    note = sign_checkpoint(cp, key)
    if cosigned:
        note = add_signatures(note, [cosign(cp, W1, T1)])
    return format_note(note)


def bundle(index: int, size: int, extra: bytes | None = None, **kw: object) -> TlogProof:
    return TlogProof(
        index=index,
        proof=tuple(TREE.inclusion(index, size)),
        checkpoint=kw.get("checkpoint", checkpoint_note(size)),  # type: ignore[arg-type]
        extra=extra,
    )


# --------------------------------------------------------------------------- known answers

SPEC_HEAD = (
    b"c2sp.org/tlog-proof@v1\n"
    b"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
    b"index 73894\n"
    b"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    b"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    b"EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
    b"RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
    b"AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
    b"\n"
)
SPEC_CHECKPOINT_AS_PRINTED = (
    "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n"
    "— example.com/fancylog hI2DJw[...]1roloI=\n"
    "— witness1.example mJirIklj[...]qY9v2B/5bg==\n"
    "— witness2.example TnKKVHLX[...]xwYwrSjgow==\n"
    "— witness3.example S4X82uH5[...]3oEcROGLFQ==\n"
).encode()


def test_spec_example_header_with_a_real_checkpoint() -> None:
    data = SPEC_HEAD + ARCHE_NOTE
    proof = TlogProof.decode(data)
    assert proof.index == 73894
    assert proof.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert len(proof.proof) == 5
    assert proof.proof[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert proof.checkpoint == ARCHE_NOTE
    assert proof.encode() == data


def test_spec_example_as_printed_is_refused_for_its_elided_signatures() -> None:
    with pytest.raises(PeerProtocolError) as exc:
        TlogProof.decode(SPEC_HEAD + SPEC_CHECKPOINT_AS_PRINTED)
    assert reason_of(exc) == "bad-signature-line"


def test_encoding_layout() -> None:
    h1, h2 = TREE.inclusion(5, 8)[:2]
    note = checkpoint_note(8)
    proof = TlogProof(index=5, proof=(h1, h2), checkpoint=note, extra=b"extra information")
    assert proof.encode() == (
        b"c2sp.org/tlog-proof@v1\nextra "
        + base64.b64encode(b"extra information")
        + b"\nindex 5\n"
        + base64.b64encode(h1)
        + b"\n"
        + base64.b64encode(h2)
        + b"\n\n"
        + note
    )
    assert TlogProof(index=0, proof=(), checkpoint=note).encode() == HEADER + b"index 0\n\n" + note


# --------------------------------------------------------------------------- round trips and verification

CASES = [(0, 1), (0, 2), (1, 2), (3, 8), (6, 7), (5, 7), (0, 13), (12, 13), (7, 13)]


@pytest.mark.parametrize(("index", "size"), CASES)
@pytest.mark.parametrize("extra", [None, b"\x00", b"receipt bytes"], ids=["no-extra", "one-byte", "receipt"])
def test_round_trip_and_verify(index: int, size: int, extra: bytes | None) -> None:
    proof = bundle(index, size, extra)
    data = proof.encode()
    decoded = TlogProof.decode(data)
    assert decoded == proof
    assert decoded.encode() == data
    cp = verify_tlog_proof(decoded, TREE.leaf_hash(index), LOG.verifier(), [W1_V])
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, size, TREE.root(size))


@pytest.mark.parametrize(("index", "size"), [(3, 8), (12, 13)])
def test_every_prefix_decodes_canonically_or_raises_peer_error(index: int, size: int) -> None:
    """Fed byte by byte: only line boundaries of the signature block can end a valid bundle."""
    data = bundle(index, size).encode()
    valid = 0
    for end in range(len(data)):
        try:
            proof = TlogProof.decode(data[:end])
        except PeerProtocolError:
            continue
        assert proof.encode() == data[:end]
        valid += 1
    assert valid == 1  # the log line alone, without the cosignature line


@pytest.mark.parametrize(
    ("tail", "reason"), [(b"x", "bad-note"), (b"\n", "bad-note"), (b"x\n", "bad-signature-line")]
)
def test_trailing_bytes_are_refused(tail: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError) as exc:
        TlogProof.decode(bundle(3, 8).encode() + tail)
    assert reason_of(exc) == reason


# --------------------------------------------------------------------------- decode near misses

GOOD = bundle(3, 8, b"receipt").encode()
_H0 = base64.b64encode(TREE.inclusion(3, 8)[0])

DECODE_NEAR_MISSES = [
    ("header v2", GOOD.replace(b"tlog-proof@v1", b"tlog-proof@v2"), "bad-proof-bundle"),
    ("header without newline", GOOD.replace(b"@v1\n", b"@v1 "), "bad-proof-bundle"),
    ("leading space", b" " + GOOD, "bad-proof-bundle"),
    ("leading blank line", b"\n" + GOOD, "bad-proof-bundle"),
    ("CRLF", GOOD.replace(b"\n", b"\r\n"), "bad-proof-bundle"),
    ("empty extra", GOOD.replace(b"extra " + base64.b64encode(b"receipt"), b"extra "), "bad-proof-bundle"),
    (
        "extra without padding",
        GOOD.replace(base64.b64encode(b"receipt"), base64.b64encode(b"receipt").rstrip(b"=")),
        "bad-proof-bundle",
    ),
    ("extra with trailing bits", GOOD.replace(b"cmVjZWlwdA==", b"cmVjZWlwdB=="), "bad-proof-bundle"),
    (
        "extra after index",
        GOOD.replace(b"extra cmVjZWlwdA==\nindex 3\n", b"index 3\nextra cmVjZWlwdA==\n"),
        "bad-proof-bundle",
    ),
    ("missing index", GOOD.replace(b"index 3\n", b""), "bad-proof-bundle"),
    ("leading zero in index", GOOD.replace(b"index 3\n", b"index 03\n"), "bad-proof-bundle"),
    ("negative index", GOOD.replace(b"index 3\n", b"index -3\n"), "bad-proof-bundle"),
    ("two spaces before index", GOOD.replace(b"index 3\n", b"index  3\n"), "bad-proof-bundle"),
    ("index 2**64", GOOD.replace(b"index 3\n", b"index %d\n" % 2**64), "bad-proof-bundle"),
    ("Index capitalised", GOOD.replace(b"index 3\n", b"Index 3\n"), "bad-proof-bundle"),
    (
        "proof hash of 31 bytes",
        GOOD.replace(_H0, base64.b64encode(base64.b64decode(_H0)[:31])),
        "bad-proof-bundle",
    ),
    ("proof hash without padding", GOOD.replace(_H0, _H0.rstrip(b"=")), "bad-proof-bundle"),
    ("proof hash in hex", GOOD.replace(_H0, base64.b64decode(_H0).hex().encode()), "bad-proof-bundle"),
    ("65 proof hashes", GOOD.replace(_H0 + b"\n", (_H0 + b"\n") * 63), "bad-proof-bundle"),
    (
        "no blank line before checkpoint",
        GOOD.replace(b"\n\n" + ORIGIN.encode(), b"\n" + ORIGIN.encode()),
        "bad-proof-bundle",
    ),
    (
        "two blank lines before checkpoint",
        GOOD.replace(b"\n\n" + ORIGIN.encode(), b"\n\n\n" + ORIGIN.encode()),
        "bad-checkpoint",
    ),
    ("ends inside the index line", GOOD[: GOOD.index(b"index 3") + 7], "bad-proof-bundle"),
    ("empty", b"", "bad-proof-bundle"),
    ("header only", HEADER, "bad-proof-bundle"),
    ("missing checkpoint", GOOD[: GOOD.index(b"\n\n") + 2], "bad-note"),
    ("checkpoint without signature", GOOD[: GOOD.rindex(b"\n\n") + 2], "bad-note"),
    ("leading zero in checkpoint size", GOOD.replace(b"\n8\n", b"\n08\n"), "bad-checkpoint-size"),
    ("bad em dash in checkpoint", GOOD.replace("—".encode(), "–".encode()), "bad-signature-line"),
    ("oversize", GOOD + b"x" * MAX_PROOF_BUNDLE_BYTES, "proof-bundle-too-large"),
]


@pytest.mark.parametrize(
    ("desc", "data", "reason"), DECODE_NEAR_MISSES, ids=[r[0] for r in DECODE_NEAR_MISSES]
)
def test_decode_near_misses(desc: str, data: bytes, reason: str) -> None:
    TlogProof.decode(GOOD)
    assert data != GOOD
    with pytest.raises(PeerProtocolError) as exc:
        TlogProof.decode(data)
    assert reason_of(exc) == reason, desc


def test_limits_are_exact() -> None:
    # MAX_PROOF_HASHES hashes and a MAX_EXTRA_BYTES extra are accepted ...
    note = checkpoint_note(8)
    big = TlogProof(
        index=0, proof=(bytes(32),) * MAX_PROOF_HASHES, checkpoint=note, extra=b"e" * MAX_EXTRA_BYTES
    )
    assert TlogProof.decode(big.encode()) == big
    # ... one more of either is not.
    with pytest.raises(LocalProtocolError) as exc:
        TlogProof(index=0, proof=(bytes(32),) * (MAX_PROOF_HASHES + 1), checkpoint=note)
    assert reason_of(exc) == "bad-proof-bundle"
    with pytest.raises(LocalProtocolError) as exc:
        TlogProof(index=0, proof=(), checkpoint=note, extra=b"e" * (MAX_EXTRA_BYTES + 1))
    assert reason_of(exc) == "bad-proof-bundle"
    too_much = big.encode().replace(b"extra ", b"extra " + base64.b64encode(b"eee"), 1)
    with pytest.raises(PeerProtocolError) as pexc:
        TlogProof.decode(too_much)
    assert reason_of(pexc) == "bad-proof-bundle"


def test_largest_bundle_fits_the_size_limit() -> None:
    name = "n" * 200
    text = Checkpoint(origin=ORIGIN, size=8, root=TREE.root(8)).body()
    sig = NoteSignature(name=name, key_id=bytes(4), signature=bytes(72))
    filler = "x" * (MAX_NOTE_BYTES - len(SignedNote(text=text, signatures=(sig,)).to_bytes()) - 1)
    # a checkpoint note at exactly MAX_NOTE_BYTES, with a body extension line
    cp = Checkpoint(origin=ORIGIN, size=8, root=TREE.root(8), extensions=(filler,))
    note = SignedNote(text=cp.body(), signatures=(sig,))
    assert len(note.to_bytes()) == MAX_NOTE_BYTES
    proof = TlogProof(
        index=2**64 - 1,
        proof=(bytes(32),) * MAX_PROOF_HASHES,
        checkpoint=note.to_bytes(),
        extra=b"e" * MAX_EXTRA_BYTES,
    )
    assert len(proof.encode()) <= MAX_PROOF_BUNDLE_BYTES
    assert TlogProof.decode(proof.encode()) == proof


@pytest.mark.parametrize(
    "kwargs",
    [
        {"index": -1, "proof": ()},
        {"index": 2**64, "proof": ()},
        {"index": True, "proof": ()},
        {"index": 0, "proof": [bytes(32)]},
        {"index": 0, "proof": (bytes(31),)},
        {"index": 0, "proof": (), "extra": b""},
        {"index": 0, "proof": (), "checkpoint": b"not a note"},
    ],
)
def test_constructor_refuses_bad_fields(kwargs: dict[str, object]) -> None:
    kwargs.setdefault("checkpoint", checkpoint_note(8))
    with pytest.raises(LocalProtocolError) as exc:
        TlogProof(**kwargs)  # type: ignore[arg-type]
    assert reason_of(exc) == "bad-proof-bundle"


# --------------------------------------------------------------------------- verification near misses


def _replace(base: TlogProof, **changes: object) -> TlogProof:
    fields: dict[str, object] = {
        "index": base.index,
        "proof": base.proof,
        "checkpoint": base.checkpoint,
        "extra": base.extra,
    }
    fields.update(changes)
    return TlogProof(**fields)  # type: ignore[arg-type]


def _flip(h: bytes, i: int = 0) -> bytes:
    return h[:i] + bytes([h[i] ^ 1]) + h[i + 1 :]


def _flip_log_signature(note_bytes: bytes) -> bytes:
    note = parse_note(note_bytes)
    first = note.signatures[0]
    bad = NoteSignature(name=first.name, key_id=first.key_id, signature=_flip(first.signature, 5))
    return format_note(SignedNote(text=note.text, signatures=(bad, *note.signatures[1:])))


def _flip_cosignature(note_bytes: bytes) -> bytes:
    note = parse_note(note_bytes)
    last = note.signatures[-1]
    bad = NoteSignature(name=last.name, key_id=last.key_id, signature=_flip(last.signature, 30))
    return format_note(SignedNote(text=note.text, signatures=(*note.signatures[:-1], bad)))


P8 = bundle(3, 8)
P7 = bundle(6, 7)
LEAF3 = TREE.leaf_hash(3)
LEAF6 = TREE.leaf_hash(6)

VERIFY_NEAR_MISSES = [
    ("index - 1, same path length", P8, {"index": 2}, LEAF3, "root-mismatch"),
    ("index + 1, same path length", P8, {"index": 4}, LEAF3, "root-mismatch"),
    ("index XOR 2", P8, {"index": 1}, LEAF3, "root-mismatch"),
    ("index - 1, longer path", P7, {"index": 5}, LEAF6, "bad-proof-length"),
    ("index = size", P8, {"index": 8}, LEAF3, "bad-index"),
    ("index far past size", P8, {"index": 2**63}, LEAF3, "bad-index"),
    ("wrong leaf", P8, {}, TREE.leaf_hash(4), "root-mismatch"),
    ("flipped bit in first hash", P8, {"proof": (_flip(P8.proof[0]), *P8.proof[1:])}, LEAF3, "root-mismatch"),
    (
        "flipped bit in last hash",
        P8,
        {"proof": (*P8.proof[:-1], _flip(P8.proof[-1], 31))},
        LEAF3,
        "root-mismatch",
    ),
    ("hash removed", P8, {"proof": P8.proof[:-1]}, LEAF3, "bad-proof-length"),
    ("hash added", P8, {"proof": (*P8.proof, bytes(32))}, LEAF3, "bad-proof-length"),
    ("hashes swapped", P8, {"proof": (P8.proof[1], P8.proof[0], *P8.proof[2:])}, LEAF3, "root-mismatch"),
    ("checkpoint of a larger tree", P8, {"checkpoint": checkpoint_note(9)}, LEAF3, "bad-proof-length"),
    ("checkpoint of twice the size", P8, {"checkpoint": checkpoint_note(13)}, LEAF3, "bad-proof-length"),
    ("checkpoint of another log", P8, {"checkpoint": checkpoint_note(8, OTHER_LOG)}, LEAF3, "wrong-origin"),
    (
        "log signature flipped",
        P8,
        {"checkpoint": _flip_log_signature(P8.checkpoint)},
        LEAF3,
        "bad-log-signature",
    ),
    ("cosignature flipped", P8, {"checkpoint": _flip_cosignature(P8.checkpoint)}, LEAF3, "bad-cosignature"),
]


@pytest.mark.parametrize(
    ("desc", "base", "changes", "leaf", "reason"), VERIFY_NEAR_MISSES, ids=[r[0] for r in VERIFY_NEAR_MISSES]
)
def test_verify_near_misses(
    desc: str, base: TlogProof, changes: dict[str, object], leaf: bytes, reason: str
) -> None:
    verify_tlog_proof(base, TREE.leaf_hash(base.index), LOG.verifier(), [W1_V])
    proof = TlogProof.decode(_replace(base, **changes).encode())  # each row is well-formed on the wire
    with pytest.raises(PeerProtocolError) as exc:
        verify_tlog_proof(proof, leaf, LOG.verifier(), [W1_V])
    assert reason_of(exc) == reason, desc


def test_cosignatures_are_optional_unless_configured() -> None:
    plain = bundle(3, 8, checkpoint=checkpoint_note(8, cosigned=False))
    verify_tlog_proof(plain, LEAF3, LOG.verifier())
    verify_tlog_proof(plain, LEAF3, LOG.verifier(), [W1_V])  # absent cosigner: nothing to check here
    flipped = _replace(P8, checkpoint=_flip_cosignature(P8.checkpoint))
    verify_tlog_proof(flipped, LEAF3, LOG.verifier())  # not configured: ignored


def test_leaf_hash_must_be_32_bytes() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        verify_tlog_proof(P8, LEAF3[:31], LOG.verifier())
    assert reason_of(exc) == "bad-leaf-hash"


def test_real_checkpoint_with_a_fabricated_path_fails_on_the_root() -> None:
    proof = TlogProof.decode(SPEC_HEAD.replace(b"index 73894", b"index 1432088531") + ARCHE_NOTE)
    with pytest.raises(PeerProtocolError) as exc:
        verify_tlog_proof(proof, bytes(32), ARCHE_LOG, [REMORA])
    assert reason_of(exc) == "bad-proof-length"


# --------------------------------------------------------------------------- properties

_NOTES = [checkpoint_note(size) for size in (1, 8, 13)]


@given(
    index=st.integers(min_value=0, max_value=2**64 - 1),
    hashes=st.lists(st.binary(min_size=32, max_size=32), max_size=8).map(tuple),
    note=st.sampled_from(_NOTES),
    extra=st.none() | st.binary(min_size=1, max_size=64),
)
def test_property_decode_encode_is_identity(
    index: int, hashes: tuple[bytes, ...], note: bytes, extra: bytes | None
) -> None:
    proof = TlogProof(index=index, proof=hashes, checkpoint=note, extra=extra)
    assert TlogProof.decode(proof.encode()) == proof


def _check_arbitrary(data: bytes) -> None:
    try:
        proof = TlogProof.decode(data)
    except PeerProtocolError:
        return
    assert proof.encode() == data


@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_decode_or_raise_peer_error(data: bytes) -> None:
    _check_arbitrary(data)


_FRAGMENTS = st.sampled_from(
    [
        HEADER,
        b"\n",
        b"extra ",
        b"index ",
        b"0",
        b"7",
        b"01",
        b"AAAA",
        _H0,
        b"=",
        b"\r",
        _NOTES[0],
        b"\xe2\x80\x94 ",
    ]
)


@settings(max_examples=300)
@given(st.lists(_FRAGMENTS, max_size=12).map(b"".join))
def test_property_bundle_like_bytes_decode_or_raise_peer_error(data: bytes) -> None:
    _check_arbitrary(data)


def test_every_flipped_bit_is_refused_or_touches_nothing_authenticated() -> None:
    """Exhaustive: each of the bundle's bits flipped in turn."""
    original = TlogProof.decode(GOOD)
    good_note = parse_note(original.checkpoint)
    passed = 0
    for pos in range(len(GOOD)):
        for bit in range(8):
            data = bytearray(GOOD)
            data[pos] ^= 1 << bit
            try:
                proof = TlogProof.decode(bytes(data))
                verify_tlog_proof(proof, LEAF3, LOG.verifier(), [W1_V])
            except PeerProtocolError:
                continue
            passed += 1
            # What passes may differ only where nothing is authenticated: the extra field, or a
            # line that no longer names a configured key (changed key name or key ID): ignored.
            assert (proof.index, proof.proof) == (original.index, original.proof)
            note = parse_note(proof.checkpoint)
            assert note.text == good_note.text
            assert note.signatures[0] == good_note.signatures[0]
            assert proof.extra != original.extra or note.signatures[1].key != good_note.signatures[1].key
    assert passed > 0  # some flips land in the extra field or the cosigner's name
