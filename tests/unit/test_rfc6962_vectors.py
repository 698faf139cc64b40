"""The shared RFC 6962 / RFC 9162 proof vectors (transparency-dev/merkle testdata): all must pass.

One parametrised loader covers every JSON file under ``../shared/vectors/rfc6962/``; the test id is the
file's path relative to that folder, so a failure names its vector. ``wantErr: false`` cases must verify,
``wantErr: true`` cases must raise :class:`PeerProtocolError` (a tampered proof is always the peer's fault).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import PeerProtocolError
from protocol.proofs import verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "rfc6962"


def _vector_files() -> list[Any]:
    if not VECTORS.is_dir():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"shared RFC 6962 vectors not found at {VECTORS}"),
                id="vectors-missing",
            )
        ]
    files = sorted(VECTORS.rglob("*.json"))
    return [pytest.param(f, id=f.relative_to(VECTORS).as_posix()) for f in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(value: list[str] | None) -> list[bytes]:
    return [] if value is None else [_b64(h) for h in value]


def _check(vector: dict[str, Any]) -> None:
    """Run one vector through the verifier it is meant for; raises whatever the verifier raises."""
    if "leafIdx" in vector:
        verify_inclusion(
            vector["leafIdx"],
            vector["treeSize"],
            _b64(vector["leafHash"]),
            _proof(vector["proof"]),
            _b64(vector["root"]),
        )
    else:
        verify_consistency(
            vector["size1"],
            vector["size2"],
            _b64(vector["root1"]),
            _b64(vector["root2"]),
            _proof(vector["proof"]),
        )


def test_vectors_are_present() -> None:
    if not VECTORS.is_dir():
        pytest.skip(f"shared RFC 6962 vectors not found at {VECTORS}")
    kinds = {p.relative_to(VECTORS).parts[0] for p in VECTORS.rglob("*.json")}
    assert kinds == {"inclusion", "consistency"}


@pytest.mark.parametrize("path", _vector_files())
def test_rfc6962_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    if vector["wantErr"]:
        with pytest.raises(PeerProtocolError) as info:
            _check(vector)
        assert info.value.reason in {
            "bad-index",
            "bad-size",
            "bad-proof-length",
            "bad-hash-length",
            "root-mismatch",
        }, vector["desc"]
    else:
        _check(vector)
