"""Generate the evidence test vectors: ``tests/vectors/evidence/<case>/<mutation>.json``.

Each happy path of ``tests/unit/test_evidence.BUILDERS`` is written as ``<case>/valid.json``, and each
row of the near-miss table ``NEAR_MISSES`` as ``<case>/<mutation>.json``: one change to a valid
evidence, with ``desc`` and the ``want_err`` reason (transparency-dev/merkle ``cmd/proofgen`` style,
style rule 18). A file holds everything a verifier in any language needs: the evidence object and
the context (log keys as C2SP vkeys, ``now``, window, skew, and the optional corridor, watcher set
and accepted kinds). Keys have fixed seeds and Ed25519 is deterministic, so the output is stable;
``test_evidence.test_committed_vectors_match_the_generator`` fails if the files drift.

Run: ``python -m tests.vectors.generate_evidence`` (rewrites the folder).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tests.unit import test_evidence as cases

ROOT = Path(__file__).resolve().parent / "evidence"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _context(overrides: dict[str, Any]) -> dict[str, Any]:
    log_keys = overrides.get("log_keys", cases.LOG_KEYS)
    context: dict[str, Any] = {
        "log_keys": None if log_keys is None else {o: k.to_vkey() for o, k in sorted(log_keys.items())},
        "now": overrides.get("now", cases.NOW),
        "window": overrides.get("window", cases.WINDOW),
        "max_skew": overrides.get("max_skew", cases.SKEW),
    }
    if "corridor_id" in overrides:
        context["corridor_id"] = overrides["corridor_id"]
    if "watcher_keys" in overrides:
        context["watcher_keys"] = sorted(overrides["watcher_keys"])
    if "kinds" in overrides:
        context["kinds"] = sorted(overrides["kinds"])
    return context


def vectors() -> dict[str, dict[str, Any]]:
    """Relative path -> vector document."""
    builder_of = {
        "same-size": "watcher-equivocation/same-size",
        "divergence": "watcher-equivocation/divergence",
    }
    result: dict[str, dict[str, Any]] = {}
    for name, build in sorted(cases.BUILDERS.items()):
        result[f"{_slug(name)}/valid.json"] = {
            "desc": f"{name}: built from two conflicting signed statements",
            "want_err": None,
            "context": _context({}),
            "evidence": build(),
        }
    for desc, builder, mutate, overrides, reason in cases.NEAR_MISSES:
        name = builder_of.get(builder, builder)
        body = cases.BUILDERS[name]()
        mutate(body)
        result[f"{_slug(name)}/{_slug(desc)}.json"] = {
            "desc": f"{name}: {desc}",
            "want_err": reason,
            "context": _context(overrides),
            "evidence": body,
        }
    return result


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    for relative, document in vectors().items():
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(document), encoding="utf-8")
    print(f"wrote {len(vectors())} vectors under {ROOT}")


if __name__ == "__main__":
    main()
