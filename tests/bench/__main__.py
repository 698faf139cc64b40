"""``python -m tests.bench NAME [options]``: run the benchmark ``tests/bench/NAME.py`` (README.md there).

A benchmark is a module of this package with a ``main(argv) -> int`` function.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def benchmarks() -> list[str]:
    """Names of the modules of this package (each a benchmark)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not info.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = benchmarks()
    if not args or args[0] not in names:
        print(f"usage: python -m tests.bench {{{','.join(names)}}} [options]  (see tests/bench/README.md)")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(f"tests.bench.{args[0]}")
    result: int = module.main(args[1:])
    return result


# Worker processes (multiprocessing forkserver) import this module as __mp_main__: run only as a program.
if __name__ == "__main__":
    sys.exit(main())
