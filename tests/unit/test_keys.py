"""Keys: did:key and C2SP verifier-key spellings, key files, near misses."""

from __future__ import annotations

import base64
import hashlib

import base58
import pytest

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    SigningKey,
    VerifierKey,
    did_key_from_public,
    key_id,
    public_from_did_key,
)

KEY = SigningKey("sez.gov.pk/corridor/PAK-KSA", bytes(range(32)))

# From golang.org/x/mod/sumdb/note's documentation: a verifier key and its private key.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"


def test_go_note_keys_parse_and_match() -> None:
    verifier = VerifierKey.from_vkey(GO_VKEY)
    signer = SigningKey.from_private_line(GO_SKEY)
    assert verifier.name == "PeterNeumann"
    assert signer.public == verifier.public
    assert verifier.to_vkey() == GO_VKEY
    assert signer.to_private_line() == GO_SKEY


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    public = KEY.public
    expected = hashlib.sha256(KEY.name.encode() + b"\n\x01" + public).digest()[:4]
    assert key_id(KEY.name, ALG_ED25519, public) == expected
    assert KEY.verifier().key_id == expected
    cosigner = KEY.verifier(ALG_COSIGNATURE_V1)
    assert cosigner.key_id == hashlib.sha256(KEY.name.encode() + b"\n\x04" + public).digest()[:4]
    assert cosigner.to_vkey().split("+")[2].startswith(base64.b64encode(b"\x04" + public).decode()[:4])


def test_vkey_round_trip_for_both_types() -> None:
    for alg in (ALG_ED25519, ALG_COSIGNATURE_V1):
        verifier = KEY.verifier(alg)
        assert VerifierKey.from_vkey(verifier.to_vkey()) == verifier


def test_did_key_round_trip_and_prefix() -> None:
    did = did_key_from_public(KEY.public)
    assert did.startswith("did:key:z6Mk")
    raw = base58.b58decode(did[len("did:key:z") :])
    assert raw == b"\xed\x01" + KEY.public
    assert public_from_did_key(did) == KEY.public
    assert public_from_did_key(KEY.verifier().verification_method) == KEY.public


@pytest.mark.parametrize(
    "did",
    [
        "did:web:sez.gov.pk",
        "did:key:" + base58.b58encode(b"\xed\x01" + bytes(32)).decode(),  # no multibase z
        "did:key:z" + base58.b58encode(b"\xe7\x01" + bytes(33)).decode(),  # secp256k1 multicodec
        "did:key:z" + base58.b58encode(b"\xed\x01" + bytes(31)).decode(),  # short key
        "did:key:z0OIl",  # not base58btc
        did_key_from_public(bytes(32)) + "#z6MkOther",  # fragment names another key
    ],
)
def test_bad_did_keys_are_refused(did: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        public_from_did_key(did)
    assert info.value.reason == "bad-did"


def _vkey_with(name: str = KEY.name, kid: str | None = None, body: bytes | None = None) -> str:
    body = body if body is not None else b"\x01" + KEY.public
    kid = kid if kid is not None else key_id(name, body[0], body[1:]).hex()
    return f"{name}+{kid}+{base64.b64encode(body).decode()}"


@pytest.mark.parametrize(
    "vkey",
    [
        _vkey_with(kid="00000000"),  # key ID does not match
        _vkey_with(kid="c74f20"),  # short key ID
        _vkey_with(body=b"\x01" + KEY.public[:31]),  # short key
        _vkey_with(body=b"\x02" + KEY.public),  # unknown signature type
        "name+c74f20a3",  # missing key
        _vkey_with() + "=",  # non-canonical base64
        _vkey_with(name="with space"),
        "+" + _vkey_with(),  # empty name
    ],
)
def test_bad_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        VerifierKey.from_vkey(vkey)
    assert info.value.reason == "bad-vkey"


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\tname", "new\nline"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        SigningKey(name, bytes(32))
    assert info.value.reason == "bad-key-name"


@pytest.mark.parametrize(
    "line",
    [
        "not a key",
        "PRIVATE+KEY+name+c74f20a3",
        GO_SKEY.replace("c74f20a3", "00000000"),
        GO_SKEY[:-4] + "!!!!",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+" + base64.b64encode(b"\x04" + bytes(32)).decode(),
    ],
)
def test_bad_private_lines_are_refused(line: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        SigningKey.from_private_line(line)
    assert info.value.reason == "bad-key-file"


def test_signing_key_repr_hides_the_seed() -> None:
    assert KEY.seed.hex() not in repr(KEY)
    assert KEY.public.hex() in repr(KEY)


def test_verify_rejects_wrong_signatures() -> None:
    verifier = KEY.verifier()
    sig = KEY.sign(b"message")
    assert verifier.verify(b"message", sig)
    assert not verifier.verify(b"messagE", sig)
    assert not verifier.verify(b"message", sig[:-1])
    assert not verifier.verify(b"message", bytes(64))
