"""The devnet's local EVM chain for ``sez-node devnet --anchor``: an anvil process, its dev keys, JSON-RPC.

``./run anvil-setup`` installs the pinned npm package ``@foundry-rs/anvil`` into ``.tools/``: the binary
is ``.tools/node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil``, and ``.tools/node_modules/.bin/anvil``
is the package's Node wrapper around it. :func:`anvil_binary` finds one (or ``$SEZ_ANVIL``); without it
the devnet refuses ``--anchor`` before anything starts (:class:`ChainMissing`, saying to run
``./run anvil-setup``). ``node/`` does not import ``tests/``, so this is the devnet's own small copy of
what ``tests/integration/anvil.py`` does for the tests.

:class:`DevnetChain` runs anvil on a free loopback port, in its own session (a terminal's Ctrl-C reaches
only the devnet, which stops it), with a block every :data:`BLOCK_TIME` seconds so that confirmations
accrue (anvil otherwise mines one block per transaction, and an anchor would never get deeper), and its
log in ``<devnet folder>/anvil/anvil.log``. :meth:`DevnetChain.start` waits until ``eth_chainId``
answers with :data:`CHAIN_ID` (bounded, polling, never a fixed sleep).

Resource handling: whoever calls :meth:`DevnetChain.start` calls :meth:`DevnetChain.stop` on every path
out; ``stop`` is idempotent, and safe on a chain that never started.

:func:`verify_on_chain` asks the chain the four questions that verify an anchor record
(``eth_getTransactionByHash``, ``eth_getTransactionReceipt``, ``eth_getBlockByNumber``,
``eth_blockNumber``, as ``light/chain.py`` does) and lets :func:`protocol.anchor.verify_anchor` decide.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import httpx

from protocol.anchor import AnchorRecord, AnchorVerdict, verify_anchor
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey

__all__ = [
    "BLOCK_TIME",
    "CHAIN_ID",
    "DEV_KEYS",
    "ChainFailed",
    "ChainMissing",
    "DevnetChain",
    "anvil_binary",
    "rpc_call",
    "verify_on_chain",
]

ROOT: Final = Path(__file__).resolve().parents[1]
CHAIN_ID: Final = 31337
"""anvil's default chain id."""
BLOCK_TIME: Final = 1
"""Seconds between anvil's blocks: confirmations accrue without anyone mining by hand."""
START_TIMEOUT: Final = 30.0
"""Seconds for anvil to answer ``eth_chainId`` after it was started."""
RPC_TIMEOUT: Final = 10.0

DEV_KEYS: Final = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
)
"""anvil's first six dev accounts (from its well-known test mnemonic "test test ... junk"): public
keys, funded with 10,000 ETH on every fresh anvil chain, so a local devnet can send anchors without a
faucet. Never use them on a real chain. The devnet gives each anchored log (six: three corridors, two
parties each) its own account, so that two anchorers never race for one account's nonces."""


class ChainMissing(RuntimeError):
    """No anvil binary: ``--anchor`` is refused before anything starts."""


class ChainFailed(RuntimeError):
    """anvil exited, answered another chain, or did not answer in time; the message names its log."""


def anvil_binary() -> str | None:
    """The anvil executable: ``$SEZ_ANVIL``, the one ``./run anvil-setup`` installed, or ``anvil`` on PATH."""
    env = os.environ.get("SEZ_ANVIL")
    if env:
        return env
    found = sorted(glob.glob(str(ROOT / ".tools/node_modules/@foundry-rs/anvil-*/bin/anvil")))
    if found:
        return found[0]
    wrapper = ROOT / ".tools/node_modules/.bin/anvil"
    if wrapper.exists():
        return str(wrapper)
    return shutil.which("anvil")


def rpc_call(url: str, method: str, *params: Any, timeout: float = RPC_TIMEOUT) -> Any:
    """One JSON-RPC call; returns its ``result``.

    Raises:
        httpx.HTTPError: the node did not answer.
        PeerProtocolError(rpc-bad-answer): the answer is not a JSON-RPC result.
    """
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    response = httpx.post(url, json=body, timeout=timeout, trust_env=False)
    response.raise_for_status()
    answer = response.json()
    if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
        raise PeerProtocolError("rpc-bad-answer", f"{method} failed: {str(answer)[:200]}")
    return answer["result"]


class DevnetChain:
    """One anvil process on a loopback port (see the module docstring).

    Args:
        directory: where its log goes (``anvil.log``); created if missing.
        port: the loopback port to listen on.

    Raises:
        ChainMissing: at construction, when there is no anvil binary.
    """

    def __init__(self, directory: Path, port: int) -> None:
        binary = anvil_binary()
        if binary is None:
            raise ChainMissing(
                "anvil is not installed: run `./run anvil-setup` (it installs the pinned @foundry-rs/anvil "
                "into .tools/), or run the devnet without --anchor"
            )
        self.binary = binary
        self.directory = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = directory / "anvil.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start anvil and wait (bounded) until ``eth_chainId`` answers :data:`CHAIN_ID`.

        Raises:
            ChainFailed: anvil exited, answered another chain, or did not answer within
                :data:`START_TIMEOUT` (it is stopped; its log is named).
        """
        argv = [
            self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(CHAIN_ID),
            "--accounts", str(len(DEV_KEYS)), "--block-time", str(BLOCK_TIME),
        ]  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self.process.poll()
            if code is not None:
                raise ChainFailed(f"anvil exited with status {code} before it answered; see {self.log_path}")
            try:
                chain = int(rpc_call(self.url, "eth_chainId", timeout=1.0), 16)
            except (httpx.HTTPError, PeerProtocolError, ValueError, TypeError):
                chain = None
            if chain == CHAIN_ID:
                return
            if chain is not None:
                raise ChainFailed(f"anvil on {self.url} answers chain {chain}, not {CHAIN_ID}")
            if time.monotonic() > deadline:
                raise ChainFailed(
                    f"anvil did not answer eth_chainId within {START_TIMEOUT:.0f}s; see {self.log_path}"
                )
            time.sleep(0.1)

    def head(self) -> int:
        """The chain's current block number."""
        return int(rpc_call(self.url, "eth_blockNumber"), 16)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop anvil (SIGTERM, then SIGKILL after ``timeout``); return its exit status. Idempotent.

        Returns None if it never started.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait(5)


def verify_on_chain(
    record: AnchorRecord, url: str, *, confirmations: int, log_key: VerifierKey
) -> AnchorVerdict:
    """Verify ``record`` from the chain behind ``url`` (four JSON-RPC calls, then ``verify_anchor``).

    Raises:
        PeerProtocolError: ``anchor-wrong-chain`` (the RPC node serves another chain), ``rpc-bad-answer``
            or any :func:`protocol.anchor.verify_anchor` reason.
        httpx.HTTPError: the RPC node did not answer.
    """
    chain = int(rpc_call(url, "eth_chainId"), 16)
    if chain != record.chain_id:
        raise PeerProtocolError(
            "anchor-wrong-chain", f"{url} serves chain {chain}, the anchor is on chain {record.chain_id}"
        )
    tx = rpc_call(url, "eth_getTransactionByHash", record.tx_hash)
    receipt = rpc_call(url, "eth_getTransactionReceipt", record.tx_hash)
    block = None
    if isinstance(receipt, dict) and isinstance(receipt.get("blockNumber"), str):
        block = rpc_call(url, "eth_getBlockByNumber", receipt["blockNumber"], False)
    head = int(rpc_call(url, "eth_blockNumber"), 16)
    return verify_anchor(
        record, tx=tx, receipt=receipt, block=block, head=head, confirmations=confirmations, log_key=log_key
    )
