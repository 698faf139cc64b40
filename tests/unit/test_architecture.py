"""The layering of design §2, enforced: protocol is pure; store sees only protocol; arrows point one way."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "store", "node", "watcher", "anchor", "light", "schemas", "tests"}
ALLOWED = {
    "protocol": {"protocol", "schemas"},
    "store": {"protocol", "store"},
    "anchor": {"protocol", "anchor"},
    "watcher": {"protocol", "store", "node", "watcher"},
    "node": {"protocol", "store", "anchor", "node"},
    "light": {"protocol", "light"},
}
# protocol may use the standard library's pure parts and the crypto/encoding packages, nothing that does I/O.
PROTOCOL_FORBIDDEN = {
    "os",
    "io",
    "socket",
    "subprocess",
    "threading",
    "multiprocessing",
    "asyncio",
    "trio",
    "lmdb",
    "libp2p",
    "httpx",
    "time",
    "random",
    "secrets",
    "tempfile",
    "shutil",
    "pathlib",
    "logging",
    "signal",
    "select",
}
PROTOCOL_THIRD_PARTY = {"nacl", "rfc8785", "base58", "fastjsonschema", "msgpack", "cryptography"}
STORE_THIRD_PARTY = {"lmdb", "msgpack"}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_design_allows(package: str) -> None:
    for path in _modules(package):
        ours = _imports(path) & OURS
        assert ours <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {sorted(ours - ALLOWED[package])}"


def test_protocol_is_pure() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in _modules("protocol"):
        imported = _imports(path) - OURS
        assert not imported & PROTOCOL_FORBIDDEN, (
            f"{path.name} imports {sorted(imported & PROTOCOL_FORBIDDEN)}"
        )
        third_party = {name for name in imported if name not in stdlib and name != "__future__"}
        assert third_party <= PROTOCOL_THIRD_PARTY, f"{path.name} imports {sorted(third_party)}"


def test_protocol_never_reads_the_clock() -> None:
    for path in _modules("protocol"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {
                "now",
                "utcnow",
                "today",
                "time_ns",
                "monotonic",
            }:
                raise AssertionError(f"{path.name}:{node.lineno} reads the clock ({node.attr})")


def test_protocol_opens_no_files() -> None:
    for path in _modules("protocol"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                # sez-light's files and HTTP live in light/ (issue 8), so no exception remains here.
                raise AssertionError(f"{path.name}:{node.lineno} calls open()")


def test_store_imports_only_protocol_and_lmdb() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in _modules("store"):
        third_party = {n for n in _imports(path) - OURS if n not in stdlib and n != "__future__"}
        assert third_party <= STORE_THIRD_PARTY, f"{path.name} imports {sorted(third_party)}"


def test_light_client_depends_on_protocol_and_the_standard_library_only() -> None:
    """Design §11: sez-light depends only on protocol (and what protocol itself may use)."""
    stdlib = set(sys.stdlib_module_names)
    for path in _modules("light"):
        imported = _imports(path) - OURS
        third_party = {name for name in imported if name not in stdlib and name != "__future__"}
        assert not third_party, f"{path.name} imports {sorted(third_party)}"
