"""Tests of protocol.checkpoints: C2SP tlog-checkpoint and tlog-cosignature/v1.

Known answers: a real checkpoint of the transparency.dev "arche2025h1" staging log,
signed by the log (Ed25519, type 0x01) and cosigned by the public witness
remora.n621.de (tlog-cosignature/v1, type 0x04), next to lines of other types and
unknown witnesses that must be ignored; the spec examples of tlog-checkpoint and
tlog-cosignature (shape, key ID, timestamp, signed message); and transparency-dev/
formats' CosignatureTimestamp vectors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.checkpoints import (
    MAX_TIMESTAMP,
    MAX_TREE_SIZE,
    Checkpoint,
    Cosignature,
    add_signatures,
    cosign,
    cosignature_message,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
    verify_cosignatures,
    verify_log_signature,
)
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, ALG_ED25519, SigningKey, VerifierKey
from protocol.notes import (
    MAX_NOTE_BYTES,
    NoteSignature,
    SignedNote,
    format_note,
    parse_note,
    parse_signature_lines,
    sign_note,
)

# --------------------------------------------------------------------------- known answers

ARCHE_ORIGIN = "arche2025h1.staging.ct.transparency.dev"
ARCHE_VKEY = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
ARCHE_BODY = f"{ARCHE_ORIGIN}\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
ARCHE_LINES = [
    # type 0x05 (RFC 6962 TreeHeadSignature): an unknown key to us, ignored
    f"— {ARCHE_ORIGIN} zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllza"
    "lApkptQIgIpwtEroeW2BXaHAI4k"
    "JXFbon5Ch9MNL5zRNZ55lvGt0=\n",
    # type 0x01, the log key ba2f06c0
    f"— {ARCHE_ORIGIN} ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1b"
    "fTW9g8Ei59RA23oHP7Ry1k3ZFWwQ"
    "=\n",
    "— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP"
    "8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4"
    "AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n",
    "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl"
    "8eO0WH+/iEcxZ75W3u5hNI7TOQtmJ"
    "bqmNWVuE0tgh0XwzdZsDsUAQ==\n",
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZ"
    "I+aVCIobWX9sXTynk5XeU/zZ0WBxtq"
    "B0DrAWfBw==\n",
    "— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8F"
    "tEyOUvVr+AJmIY/2TUFucgKi7lI7cU"
    "iOvKFYe/TmN9DAg==\n",
]
ARCHE_NOTE = (ARCHE_BODY + "\n" + "".join(ARCHE_LINES)).encode()
ARCHE_LOG = VerifierKey.from_vkey(ARCHE_VKEY)
REMORA = VerifierKey.from_vkey(REMORA_VKEY)
REMORA_TIMESTAMP = 0x6A122120  # the u64 after the key ID on remora's line

# c2sp.org/tlog-checkpoint and tlog-cosignature examples.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_LOG_LINE = (
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4U"
    "RYN7u5/Zhcyv2q1gGzGku9nTo+zyWE"
    "+xeMcTOAYQ8=\n"
)
SPEC_COSIG_LINE = (
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZ"
    "CB9dlrDJsX3b2oyin1nPZqhf5nNo0x"
    "Ue+mbIUBkBIfZ+qnA==\n"
)
SPEC_COSIGNED_MESSAGE = (
    b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def reason_of(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    value = exc_info.value
    assert isinstance(value, PeerProtocolError | LocalProtocolError)
    return value.reason


class TestKnownAnswers:
    def test_real_cosigned_checkpoint_opens_with_the_log_key(self) -> None:
        cp, note = open_checkpoint(ARCHE_NOTE, ARCHE_LOG)
        assert cp.origin == ARCHE_ORIGIN
        assert cp.size == 1432088532
        assert cp.root == base64.b64decode("U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=")
        assert cp.extensions == ()
        assert cp.body() == ARCHE_BODY == note.text
        assert format_note(note) == ARCHE_NOTE

    def test_real_witness_cosignature_verifies_and_others_are_ignored(self) -> None:
        cp, note = open_checkpoint(ARCHE_NOTE, ARCHE_LOG)
        assert REMORA.alg == ALG_COSIGNATURE_V1
        assert verify_cosignatures(note, cp, [REMORA]) == {"remora.n621.de": REMORA_TIMESTAMP}
        assert verify_cosignatures(note, cp, []) == {}

    def test_real_witness_cosignature_fails_on_another_size(self) -> None:
        cp, note = open_checkpoint(ARCHE_NOTE, ARCHE_LOG)
        other = Checkpoint(origin=cp.origin, size=cp.size + 1, root=cp.root)
        forged = SignedNote(text=other.body(), signatures=note.signatures)
        with pytest.raises(PeerProtocolError) as exc:
            verify_cosignatures(forged, other, [REMORA])
        assert reason_of(exc) == "bad-cosignature"
        with pytest.raises(PeerProtocolError) as exc:
            open_checkpoint(format_note(forged), ARCHE_LOG)
        assert reason_of(exc) == "bad-log-signature"

    def test_spec_checkpoint_example_shape(self) -> None:
        cp, note = parse_checkpoint((SPEC_BODY + "\n" + SPEC_LOG_LINE).encode())
        assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
        assert cp.body() == SPEC_BODY
        assert note.signatures[0].key_id == bytes.fromhex("033de0ae")
        assert len(note.signatures[0].signature) == 64

    def test_spec_cosignature_example_decodes_to_the_spec_timestamp(self) -> None:
        line = parse_signature_lines(SPEC_COSIG_LINE.encode())[0]
        cosig = Cosignature.from_note_signature(line)
        assert cosig.timestamp == 1679315147  # the "time" line of the spec's signed-message example
        assert cosig.key_id == bytes.fromhex("8d66cf3f")
        assert cosig.to_note_signature() == line

    def test_spec_cosigned_message_byte_for_byte(self) -> None:
        cp = Checkpoint.from_body(SPEC_BODY)
        assert cosignature_message(cp, 1679315147) == SPEC_COSIGNED_MESSAGE

    @pytest.mark.parametrize(
        ("encoded", "timestamp", "reason"),
        [
            # transparency-dev/formats note_cosigv1_test.go TestCosignatureTimestamp
            (
                "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWW"
                "OworDcFiEBYJXORmnF"
                "BOBA==",
                1727964367,
                None,
            ),
            (
                "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1h"
                "Pb/W/4xkNQY=",
                None,
                "bad-cosignature",
            ),
        ],
    )
    def test_transparency_dev_timestamp_vectors(
        self, encoded: str, timestamp: int | None, reason: str | None
    ) -> None:
        line = parse_signature_lines(f"— w {encoded}\n".encode())[0]
        if reason is None:
            assert Cosignature.from_note_signature(line).timestamp == timestamp
        else:
            with pytest.raises(PeerProtocolError) as exc:
                Cosignature.from_note_signature(line)
            assert reason_of(exc) == reason

    def test_witness_key_ids_follow_the_spec(self) -> None:
        # SHA-256(name || "\n" || 0x04 || public)[:4], checked against the published vkey.
        digest = hashlib.sha256(b"remora.n621.de\n\x04" + REMORA.public).digest()
        assert digest[:4] == bytes.fromhex("da77ade7") == REMORA.key_id


# --------------------------------------------------------------------------- checkpoint bodies


ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()

BODY_ROUND_TRIP = [
    Checkpoint(origin="sez.gov.pk/corridor/PAK-KSA", size=0, root=hashlib.sha256(b"").digest()),
    Checkpoint(origin="sez.gov.pk/corridor/PAK-KSA", size=1, root=ROOT),
    Checkpoint(origin="sez.gov.pk/corridor/PAK-KSA", size=MAX_TREE_SIZE, root=ROOT),
    Checkpoint(origin="o", size=20852163, root=ROOT, extensions=("ext one", "— ext two")),
    Checkpoint(
        origin="origin with spaces and + plus", size=5, root=ROOT
    ),  # spec: clients MUST NOT assume format
    Checkpoint(origin="ünïcödé/log", size=5, root=ROOT),
]


@pytest.mark.parametrize("cp", BODY_ROUND_TRIP, ids=lambda cp: f"{cp.origin[:20]}-{cp.size}")
def test_body_round_trip(cp: Checkpoint) -> None:
    assert Checkpoint.from_body(cp.body()) == cp
    assert cp.body().endswith("\n")
    assert cp.body().count("\n") == 3 + len(cp.extensions)


GOOD_BODY = f"sez.gov.pk/corridor/PAK-KSA\n42\n{ROOT_B64}\n"

BODY_NEAR_MISSES = [
    ("leading zero in size", GOOD_BODY.replace("\n42\n", "\n042\n"), "bad-checkpoint-size"),
    ("zero with leading zero", GOOD_BODY.replace("\n42\n", "\n00\n"), "bad-checkpoint-size"),
    ("plus sign", GOOD_BODY.replace("\n42\n", "\n+42\n"), "bad-checkpoint-size"),
    ("minus sign", GOOD_BODY.replace("\n42\n", "\n-42\n"), "bad-checkpoint-size"),
    ("space before size", GOOD_BODY.replace("\n42\n", "\n 42\n"), "bad-checkpoint-size"),
    ("space after size", GOOD_BODY.replace("\n42\n", "\n42 \n"), "bad-checkpoint-size"),
    ("underscore in size", GOOD_BODY.replace("\n42\n", "\n4_2\n"), "bad-checkpoint-size"),
    ("Arabic-Indic digits", GOOD_BODY.replace("\n42\n", "\n٤٢\n"), "bad-checkpoint-size"),
    ("hex size", GOOD_BODY.replace("\n42\n", "\n0x2a\n"), "bad-checkpoint-size"),
    ("size 2**64", GOOD_BODY.replace("\n42\n", f"\n{2**64}\n"), "bad-checkpoint-size"),
    ("size of 5000 digits", GOOD_BODY.replace("\n42\n", "\n" + "9" * 5000 + "\n"), "bad-checkpoint-size"),
    ("root without padding", GOOD_BODY.replace(ROOT_B64, ROOT_B64.rstrip("=")), "bad-checkpoint-root"),
    (
        "root with non-zero trailing bits",
        GOOD_BODY.replace(ROOT_B64, ROOT_B64[:42] + chr(ord(ROOT_B64[42]) ^ 1) + "="),
        "bad-checkpoint-root",
    ),
    (
        "root of 31 bytes",
        GOOD_BODY.replace(ROOT_B64, base64.b64encode(ROOT[:31]).decode()),
        "bad-checkpoint-root",
    ),
    (
        "root of 33 bytes",
        GOOD_BODY.replace(ROOT_B64, base64.b64encode(ROOT + b"x").decode()),
        "bad-checkpoint-root",
    ),
    ("root in hex", GOOD_BODY.replace(ROOT_B64, ROOT.hex()), "bad-checkpoint-root"),
    (
        "root in URL-safe base64",
        GOOD_BODY.replace(ROOT_B64, base64.urlsafe_b64encode(ROOT).decode()),
        "bad-checkpoint-root",
    ),
    ("empty origin", GOOD_BODY.replace("sez.gov.pk/corridor/PAK-KSA", ""), "bad-checkpoint"),
    ("two lines only", "sez.gov.pk/corridor/PAK-KSA\n42\n", "bad-checkpoint"),
    ("missing final newline", GOOD_BODY[:-1], "bad-checkpoint"),
    ("empty extension line", GOOD_BODY + "\n", "bad-checkpoint"),
    ("empty line then extension", GOOD_BODY + "\next\n", "bad-checkpoint"),
    ("carriage return", GOOD_BODY.replace("\n42\n", "\n42\r\n"), "bad-checkpoint"),
]


@pytest.mark.parametrize(("desc", "text", "reason"), BODY_NEAR_MISSES, ids=[r[0] for r in BODY_NEAR_MISSES])
def test_body_near_misses(desc: str, text: str, reason: str) -> None:
    Checkpoint.from_body(GOOD_BODY)
    with pytest.raises(PeerProtocolError) as exc:
        Checkpoint.from_body(text)
    assert reason_of(exc) == reason, desc


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 1, "root": ROOT},
        {"origin": "a\nb", "size": 1, "root": ROOT},
        {"origin": "o", "size": -1, "root": ROOT},
        {"origin": "o", "size": 2**64, "root": ROOT},
        {"origin": "o", "size": True, "root": ROOT},
        {"origin": "o", "size": 1, "root": ROOT[:31]},
        {"origin": "o", "size": 1, "root": ROOT, "extensions": ("",)},
        {"origin": "o", "size": 1, "root": ROOT, "extensions": ("a\nb",)},
    ],
)
def test_checkpoint_refuses_bad_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError) as exc:
        Checkpoint(**kwargs)  # type: ignore[arg-type]
    assert reason_of(exc) == "bad-checkpoint"


# --------------------------------------------------------------------------- signing and opening

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
LOG = SigningKey(ORIGIN, bytes([1]) * 32)
LOG_V = LOG.verifier()
COUNTERPARTY = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes([2]) * 32)
W1 = SigningKey("watcher.example/w1", bytes([3]) * 32)
W2 = SigningKey("watcher.example/w2", bytes([4]) * 32)
W1_V = W1.verifier(ALG_COSIGNATURE_V1)
W2_V = W2.verifier(ALG_COSIGNATURE_V1)
CP = Checkpoint(origin=ORIGIN, size=42, root=ROOT)
T1 = 1_795_000_000


def _signed(cp: Checkpoint = CP) -> bytes:
    return format_note(sign_checkpoint(cp, LOG))


def _cosigned() -> bytes:
    note = add_signatures(sign_checkpoint(CP, LOG), [cosign(CP, W1, T1), cosign(CP, W2, T1 + 5)])
    return format_note(note)


def _flip_line(data: bytes, line: int, byte: int) -> bytes:
    note = parse_note(data)
    sig = note.signatures[line]
    raw = bytearray(sig.key_id + sig.signature)
    raw[byte] ^= 0x01
    sigs = list(note.signatures)
    sigs[line] = NoteSignature(name=sig.name, key_id=bytes(raw[:4]), signature=bytes(raw[4:]))
    return format_note(SignedNote(text=note.text, signatures=tuple(sigs)))


def test_sign_then_open() -> None:
    data = _signed()
    assert data == (CP.body() + "\n" + sign_note(CP.body(), LOG).to_line()).encode()
    cp, note = open_checkpoint(data, LOG_V)
    assert cp == CP
    assert note.signatures[0].key_id == LOG_V.key_id


def test_sign_with_a_key_not_named_after_the_origin_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        sign_checkpoint(CP, COUNTERPARTY)
    assert reason_of(exc) == "wrong-origin"


def test_open_with_a_cosigner_key_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        open_checkpoint(_signed(), LOG.verifier(ALG_COSIGNATURE_V1))
    assert reason_of(exc) == "unsupported-key-type"


def test_verify_log_signature_refuses_a_mismatched_body() -> None:
    _, note = open_checkpoint(_signed(), LOG_V)
    with pytest.raises(LocalProtocolError) as exc:
        verify_log_signature(note, Checkpoint(origin=ORIGIN, size=43, root=ROOT), LOG_V)
    assert reason_of(exc) == "checkpoint-mismatch"


def _other_origin() -> bytes:
    other = Checkpoint(origin=COUNTERPARTY.name, size=42, root=ROOT)
    return format_note(sign_checkpoint(other, COUNTERPARTY))


def _only_cosignatures() -> bytes:
    return format_note(SignedNote(text=CP.body(), signatures=(cosign(CP, W1, T1),)))


GOOD = _signed()

OPEN_NEAR_MISSES = [
    ("flipped bit in log signature", _flip_line(GOOD, 0, 20), "bad-log-signature"),
    ("flipped bit in key ID", _flip_line(GOOD, 0, 3), "missing-log-signature"),
    (
        "wrong key name on the line",
        GOOD.replace(f"— {ORIGIN} ".encode(), "— sez.gov.pk/other ".encode()),
        "missing-log-signature",
    ),
    ("checkpoint of another origin", _other_origin(), "wrong-origin"),
    ("cosignatures but no log signature", _only_cosignatures(), "missing-log-signature"),
    ("size changed after signing", GOOD.replace(b"\n42\n", b"\n43\n"), "bad-log-signature"),
    (
        "root changed after signing",
        GOOD.replace(ROOT_B64.encode(), base64.b64encode(bytes(32))),
        "bad-log-signature",
    ),
    (
        "extension line added after signing",
        GOOD.replace(f"{ROOT_B64}\n".encode(), f"{ROOT_B64}\next\n".encode()),
        "bad-log-signature",
    ),
    ("leading zero in size", GOOD.replace(b"\n42\n", b"\n042\n"), "bad-checkpoint-size"),
    (
        "non-canonical root base64",
        GOOD.replace(ROOT_B64.encode(), ROOT_B64.rstrip("=").encode()),
        "bad-checkpoint-root",
    ),
    ("extra blank line before signatures", GOOD.replace(b"\n\n", b"\n\n\n"), "bad-checkpoint"),
    ("missing final newline", GOOD[:-1], "bad-note"),
    ("extra blank line at the end", GOOD + b"\n", "bad-note"),
    ("CRLF", GOOD.replace(b"\n", b"\r\n"), "bad-note-encoding"),
    ("bad em dash", GOOD.replace("—".encode(), "–".encode()), "bad-signature-line"),
    ("trailing garbage", GOOD + b"garbage", "bad-note"),
    ("trailing garbage line", GOOD + b"garbage\n", "bad-signature-line"),
    ("oversize", GOOD.replace(b"\n42\n", b"\n42\n" + b"x" * MAX_NOTE_BYTES + b"\n"), "note-too-large"),
    ("empty", b"", "bad-note"),
]


@pytest.mark.parametrize(("desc", "data", "reason"), OPEN_NEAR_MISSES, ids=[r[0] for r in OPEN_NEAR_MISSES])
def test_open_near_misses(desc: str, data: bytes, reason: str) -> None:
    open_checkpoint(GOOD, LOG_V)
    assert data != GOOD
    with pytest.raises(PeerProtocolError) as exc:
        open_checkpoint(data, LOG_V)
    assert reason_of(exc) == reason, desc


def test_unknown_lines_sharing_the_log_name_or_key_id_are_ignored() -> None:
    note = parse_note(GOOD)
    impostor_name = NoteSignature(name=ORIGIN, key_id=b"\x00\x00\x00\x00", signature=bytes(64))
    impostor_id = NoteSignature(name="someone.else", key_id=LOG_V.key_id, signature=bytes(64))
    data = format_note(SignedNote(text=note.text, signatures=(impostor_name, impostor_id, *note.signatures)))
    cp, _ = open_checkpoint(data, LOG_V)
    assert cp == CP


# --------------------------------------------------------------------------- cosignatures


def test_cosign_and_verify() -> None:
    cp, note = open_checkpoint(_cosigned(), LOG_V)
    assert verify_cosignatures(note, cp, [W1_V, W2_V]) == {W1.name: T1, W2.name: T1 + 5}
    assert verify_cosignatures(note, cp, [W2_V]) == {W2.name: T1 + 5}


def test_cosignature_line_layout() -> None:
    line = cosign(CP, W1, T1)
    assert line.name == W1.name
    assert line.key_id == hashlib.sha256(W1.name.encode() + b"\n\x04" + W1.public).digest()[:4]
    assert line.signature[:8] == T1.to_bytes(8, "big")
    assert W1_V.verify(b"cosignature/v1\ntime %d\n" % T1 + CP.body().encode(), line.signature[8:])


@pytest.mark.parametrize("timestamp", [0, 1, MAX_TIMESTAMP])
def test_cosign_timestamp_bounds(timestamp: int) -> None:
    note = add_signatures(sign_checkpoint(CP, LOG), [cosign(CP, W1, timestamp)])
    assert verify_cosignatures(note, CP, [W1_V]) == {W1.name: timestamp}


@pytest.mark.parametrize("timestamp", [-1, MAX_TIMESTAMP + 1])
def test_cosign_refuses_out_of_range_timestamps(timestamp: int) -> None:
    with pytest.raises(LocalProtocolError) as exc:
        cosign(CP, W1, timestamp)
    assert reason_of(exc) == "bad-cosignature"


def test_cosignature_covers_extension_lines() -> None:
    cp = Checkpoint(origin=ORIGIN, size=42, root=ROOT, extensions=("ext",))
    note = add_signatures(sign_checkpoint(cp, LOG), [cosign(cp, W1, T1)])
    assert verify_cosignatures(note, cp, [W1_V]) == {W1.name: T1}
    other = Checkpoint(origin=ORIGIN, size=42, root=ROOT, extensions=("exu",))
    with pytest.raises(PeerProtocolError) as exc:
        verify_cosignatures(SignedNote(text=other.body(), signatures=note.signatures), other, [W1_V])
    assert reason_of(exc) == "bad-cosignature"


def _replace_cosig(payload: bytes) -> SignedNote:
    line = cosign(CP, W1, T1)
    return add_signatures(
        sign_checkpoint(CP, LOG), [NoteSignature(name=line.name, key_id=line.key_id, signature=payload)]
    )


_GOOD_COSIG = cosign(CP, W1, T1).signature

COSIG_NEAR_MISSES = [
    ("flipped bit in signature", _GOOD_COSIG[:20] + bytes([_GOOD_COSIG[20] ^ 1]) + _GOOD_COSIG[21:]),
    ("timestamp changed", (T1 + 1).to_bytes(8, "big") + _GOOD_COSIG[8:]),
    ("timestamp over 2**63-1", (2**63).to_bytes(8, "big") + _GOOD_COSIG[8:]),
    ("missing timestamp (a plain 0x01 signature)", W1.sign(CP.body().encode())),
    ("one byte short", _GOOD_COSIG[:-1]),
    ("one byte long", _GOOD_COSIG + b"\x00"),
]


@pytest.mark.parametrize(("desc", "payload"), COSIG_NEAR_MISSES, ids=[r[0] for r in COSIG_NEAR_MISSES])
def test_cosignature_near_misses(desc: str, payload: bytes) -> None:
    note = _replace_cosig(payload)
    with pytest.raises(PeerProtocolError) as exc:
        verify_cosignatures(note, CP, [W1_V])
    assert reason_of(exc) == "bad-cosignature", desc
    assert verify_cosignatures(note, CP, [W2_V]) == {}  # unknown to this verifier: ignored


def test_cosignature_is_not_a_log_signature() -> None:
    """Domain separation: the Ed25519 signature inside a cosignature does not verify over the body."""
    line = cosign(CP, LOG, T1)  # even the log's own key, as a cosigner
    relabeled = NoteSignature(name=ORIGIN, key_id=LOG_V.key_id, signature=line.signature[8:])
    data = format_note(SignedNote(text=CP.body(), signatures=(relabeled,)))
    with pytest.raises(PeerProtocolError) as exc:
        open_checkpoint(data, LOG_V)
    assert reason_of(exc) == "bad-log-signature"
    # and the cosigned message is not a checkpoint body a log signature could cover
    with pytest.raises(PeerProtocolError) as exc:
        Checkpoint.from_body(cosignature_message(CP, T1).decode())
    assert reason_of(exc) == "bad-checkpoint-size"


def test_cosignature_under_the_wrong_key_type_is_ignored() -> None:
    # A 0x01 key ID for the watcher's name is another key: its line is not a cosignature of W1_V.
    plain = sign_note(CP.body(), W1)
    note = add_signatures(sign_checkpoint(CP, LOG), [plain])
    assert verify_cosignatures(note, CP, [W1_V]) == {}


def test_repeated_cosignatures_report_the_latest_timestamp() -> None:
    base = sign_checkpoint(CP, LOG)
    older, newer = cosign(CP, W1, T1), cosign(CP, W1, T1 + 60)
    note = SignedNote(text=base.text, signatures=(*base.signatures, newer, older))
    assert verify_cosignatures(note, CP, [W1_V]) == {W1.name: T1 + 60}


def test_verify_cosignatures_argument_checks() -> None:
    note = parse_note(_cosigned())
    with pytest.raises(LocalProtocolError) as exc:
        verify_cosignatures(note, CP, [W1.verifier(ALG_ED25519)])
    assert reason_of(exc) == "unsupported-key-type"
    with pytest.raises(LocalProtocolError) as exc:
        verify_cosignatures(note, Checkpoint(origin=ORIGIN, size=41, root=ROOT), [W1_V])
    assert reason_of(exc) == "checkpoint-mismatch"


def test_cosignature_value_checks() -> None:
    with pytest.raises(LocalProtocolError) as exc:
        Cosignature(name="w", key_id=bytes(4), timestamp=MAX_TIMESTAMP + 1, signature=bytes(64))
    assert reason_of(exc) == "bad-cosignature"
    with pytest.raises(LocalProtocolError) as exc:
        Cosignature(name="w", key_id=bytes(4), timestamp=1, signature=bytes(63))
    assert reason_of(exc) == "bad-cosignature"
    with pytest.raises(LocalProtocolError) as exc:
        Cosignature(name="w w", key_id=bytes(4), timestamp=1, signature=bytes(64))
    assert reason_of(exc) == "bad-cosignature"


# --------------------------------------------------------------------------- merging


def test_add_signatures_puts_the_log_first_and_dedupes() -> None:
    log_line = sign_note(CP.body(), LOG)
    c1, c2 = cosign(CP, W1, T1), cosign(CP, W2, T1)
    note = SignedNote(text=CP.body(), signatures=(c1, log_line))
    merged = add_signatures(note, [c2, c1, cosign(CP, W1, T1 + 1)])
    assert merged.signatures == (log_line, c1, c2)
    assert add_signatures(merged, [c1, c2, log_line]) is merged
    assert verify_cosignatures(merged, CP, [W1_V, W2_V]) == {W1.name: T1, W2.name: T1}


def test_add_signatures_from_a_witness_response() -> None:
    body = (cosign(CP, W1, T1).to_line() + cosign(CP, W2, T1).to_line()).encode()
    merged = add_signatures(sign_checkpoint(CP, LOG), parse_signature_lines(body))
    data = format_note(merged)
    cp, note = open_checkpoint(data, LOG_V)
    assert verify_cosignatures(note, cp, [W1_V, W2_V]) == {W1.name: T1, W2.name: T1}


def test_add_signatures_refuses_a_note_that_is_not_a_checkpoint() -> None:
    note = SignedNote(text="hello\n", signatures=(sign_note("hello\n", LOG),))
    with pytest.raises(PeerProtocolError) as exc:
        add_signatures(note, [])
    assert reason_of(exc) == "bad-checkpoint"


# --------------------------------------------------------------------------- properties

_LINE = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)
_CHECKPOINTS = st.builds(
    Checkpoint,
    origin=_LINE,
    size=st.integers(min_value=0, max_value=MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_LINE, max_size=3).map(tuple),
)


@given(_CHECKPOINTS)
def test_property_body_round_trip(cp: Checkpoint) -> None:
    assert Checkpoint.from_body(cp.body()) == cp


@given(st.text(max_size=200))
def test_property_arbitrary_body_parses_canonically_or_raises_peer_error(text: str) -> None:
    try:
        cp = Checkpoint.from_body(text)
    except PeerProtocolError:
        return
    assert cp.body() == text


_FRAGMENTS = st.sampled_from(
    ["\n", "o", " ", "0", "1", "42", "-", ROOT_B64, ROOT_B64[:-1], "=", "\r", "٣", "\u2014 "]
)


@given(st.lists(_FRAGMENTS, max_size=12).map("".join))
def test_property_body_like_text_parses_canonically_or_raises_peer_error(text: str) -> None:
    try:
        cp = Checkpoint.from_body(text)
    except PeerProtocolError:
        return
    assert cp.body() == text


@given(st.binary(max_size=300))
def test_property_open_checkpoint_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(PeerProtocolError):
        open_checkpoint(data, LOG_V)
