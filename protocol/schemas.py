"""JSON Schema validation of sez objects against the files in ``schemas/``.

The schemas are JSON Schema 2020-12 documents and the interface other
implementations use. At run time they are compiled once by ``fastjsonschema``
(about 3 µs per payload, against about 50 µs for ``jsonschema``'s interpreter,
which alone would exceed the whole ingest budget of design §3). The schemas
use only keywords both validators implement identically; ``tests`` check each
schema against the 2020-12 meta-schema with ``jsonschema`` and check that both
validators agree on generated instances.

Loading the bundled schema files is package-data access at import time, not
I/O on behalf of a caller, so this module stays within ``protocol``'s rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

from .errors import LocalProtocolError, PeerProtocolError

__all__ = ["load_schema", "schema_names", "validate"]


def schema_names() -> list[str]:
    """Names (file stems) of every bundled JSON Schema, e.g. ``receipt``, ``payload.transfer``.

    ``openapi.json`` (the HTTP API's OpenAPI document) lives beside them and is not a schema.
    """
    return sorted(
        entry.name.removesuffix(".json")
        for entry in resources.files("schemas").iterdir()
        if entry.name.endswith(".json") and entry.name != "openapi.json"
    )


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema document ``schemas/<name>.json``.

    Raises:
        LocalProtocolError(unknown-schema): no such schema.
    """
    path = resources.files("schemas").joinpath(f"{name}.json")
    if not path.is_file():
        raise LocalProtocolError("unknown-schema", f"no schema named {name!r}")
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@cache
def _compiled(name: str) -> Callable[[Any], Any]:
    validator: Callable[[Any], Any] = fastjsonschema.compile(load_schema(name))
    return validator


def validate(name: str, value: Any) -> None:
    """Validate ``value`` against schema ``name``.

    Raises:
        PeerProtocolError(schema-violation): with the failing path and rule.
        LocalProtocolError(unknown-schema): no such schema.
    """
    try:
        _compiled(name)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise PeerProtocolError(
            "schema-violation", f"{name}: {exc.message}", schema=name, path=exc.name, rule=exc.rule
        ) from exc
