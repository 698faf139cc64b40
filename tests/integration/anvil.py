"""A real local EVM node for the anchoring tests: anvil from the npm package ``@foundry-rs/anvil``.

``./run anvil-setup`` (and ``.ci/run``) install the pinned package into ``.tools/``; the npm package
ships the binary in a per-platform package (``@foundry-rs/anvil-<os>-<arch>/bin/anvil``), with a
``node_modules/.bin/anvil`` Node wrapper that runs it. :func:`anvil_binary` finds it (or
``$SEZ_ANVIL``, or ``anvil`` on PATH). Tests skip, saying why, only when there is none; CI installs it.

:class:`Anvil` starts one on a free loopback port, waits until ``eth_chainId`` answers (bounded),
and always stops it. Its first dev account's key is public (anvil's well-known mnemonic); it is
only ever used against this throwaway chain.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.devnet_chain import DEV_KEYS, anvil_binary

from .netharness import free_ports

ROOT = Path(__file__).resolve().parents[2]
CHAIN_ID = 31337
DEV_KEY = DEV_KEYS[0]
"""anvil's first dev account (funded with 10,000 ETH on every anvil chain)."""
DEV_KEY_2 = DEV_KEYS[1]
"""anvil's second dev account: a second node must not share the first one's nonces."""
START_TIMEOUT = 30.0


def require_anvil() -> str:
    """The anvil binary, or skip the test with the reason."""
    binary = anvil_binary()
    if binary is None and os.environ.get("CI"):
        pytest.fail("anvil is missing in CI: .ci/run must run `./run anvil-setup`")
    if binary is None:
        pytest.skip("anvil is not installed: run `./run anvil-setup` (CI installs it with .ci/run)")
    return binary


def rpc(url: str, method: str, *params: Any, timeout: float = 5.0) -> Any:
    """One synchronous JSON-RPC call (test driver side); raises on a JSON-RPC error."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


class Anvil:
    """One anvil process on a loopback port; a context manager that always stops it.

    Args:
        directory: where its log (and state file, with ``state=True``) go.
        state: keep the chain across restarts (``--state FILE``: dumped on exit, loaded on start).
        block_time: mine a block every so many seconds as well (anvil mines one per transaction anyway).
    """

    def __init__(
        self, directory: Path, *, state: bool = False, port: int | None = None, block_time: int | None = None
    ) -> None:
        self.binary = require_anvil()
        self.directory = directory
        self.port = port or free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_file = directory / "anvil-state.json" if state else None
        self.block_time = block_time
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Anvil:
        """Start anvil and wait (bounded) until ``eth_chainId`` answers."""
        argv = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(CHAIN_ID),
                "--accounts", "2"]  # fmt: skip
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.state_file is not None:
            argv += ["--state", str(self.state_file), "--preserve-historical-states"]
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "anvil.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if int(rpc(self.url, "eth_chainId", timeout=1.0), 16) == CHAIN_ID:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"anvil did not answer within {START_TIMEOUT}s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop anvil (SIGTERM, so ``--state`` is dumped; then SIGKILL after 10 s). Idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "anvil.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def call(self, method: str, *params: Any) -> Any:
        return rpc(self.url, method, *params)

    def mine(self, blocks: int = 1) -> None:
        self.call("anvil_mine", hex(blocks))

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
