"""Crash safety of LogStore.append (design §14): SIGKILL at random moments never loses or half-writes a batch.

``crash_writer.py`` appends signed batches with a checkpoint signer and prints ``ACK <size> <root>`` after
each commit returns. This test starts it again and again on the same store, reads its stdout, and kills it
with SIGKILL after a random delay (fixed-seed RNG, so a failure replays), sometimes while it is still
starting up. After every kill:

* fsck passes (chain, signatures, digest index, every MMR node, roots, signed checkpoints);
* the head is at least the last acknowledged size, and the root at every acknowledged size is the
  acknowledged root, with the checkpoint signed with that batch;
* the next writer reports (``READY``) exactly the head found after the kill, and its acknowledgements
  continue from there.

Waits read the child's stdout through ``select`` with deadlines; there are no fixed sleeps. The child is
always killed and reaped, also when an assertion fails.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.checkpoints import open_checkpoint
from protocol.keys import SigningKey
from store import LogStore
from store.fsck import fsck

WRITER = Path(__file__).with_name("crash_writer.py")
ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
SEED = bytes(range(32))
KEY = SigningKey(ORIGIN, SEED)
KILLS = 36
RNG_SEED = 0x5E2_C4A5
READY_TIMEOUT = 20.0
"""Seconds a writer may take to open the store and print READY (interpreter start-up included)."""
MAX_KILL_DELAY = 0.04
"""Longest run after READY before the kill: enough for about ten batches, while keeping the store (and
so every fsck) small enough for the whole test to stay well under a minute."""
MAX_STARTUP_KILL_DELAY = 0.3
"""Some kills land at a random moment after spawning: during imports, opening or registering."""


class LineReader:
    """Complete lines from a pipe, with deadlines (select), never blocking past them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def read(self, deadline: float, *, until_first: str | None = None) -> list[str]:
        """Lines read before ``deadline`` (monotonic) or EOF; stop after a line starting ``until_first``."""
        lines: list[str] = []
        while not self.eof:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            readable, _, _ = select.select([self.fd], [], [], timeout)
            if not readable:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                break
            self.buffer += chunk
            *complete, self.buffer = self.buffer.split(b"\n")
            decoded = [line.decode() for line in complete]
            lines.extend(decoded)
            if until_first is not None and any(line.startswith(until_first) for line in decoded):
                break
        return lines


def parse(lines: list[str]) -> tuple[tuple[int, str] | None, list[tuple[int, str]]]:
    """(READY size and root, if seen; ACK sizes and roots, in order)."""
    ready = None
    acks = []
    for line in lines:
        word, size, root = line.split(" ")
        if word == "READY":
            assert ready is None and not acks, lines
            ready = (int(size), root)
        else:
            assert word == "ACK", line
            acks.append((int(size), root))
    return ready, acks


@pytest.mark.timeout(180)
def test_sigkill_at_random_moments_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    rng = random.Random(RNG_SEED)
    data = tmp_path / "store"
    acknowledged: dict[int, str] = {}
    last_acked = 0
    head_after_kill: tuple[int, str] | None = None
    runs_with_acks = 0
    commits_not_acknowledged = 0
    started = time.monotonic()

    for run in range(KILLS):
        max_batch = rng.choice([1, 3, 8, 24, 64])
        early = run > 0 and rng.random() < 0.2
        delay = rng.uniform(0, MAX_STARTUP_KILL_DELAY if early else MAX_KILL_DELAY)
        errors = tmp_path / f"writer-{run}.stderr"
        with errors.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(WRITER),
                    str(data),
                    SEED.hex(),
                    str(rng.getrandbits(32)),
                    str(max_batch),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
            )
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            reader = LineReader(proc.stdout.fileno())
            spawned = time.monotonic()
            if early:
                lines += reader.read(spawned + delay)
            else:
                lines += reader.read(spawned + READY_TIMEOUT, until_first="READY")
                assert any(line.startswith("READY") for line in lines), (
                    f"run {run}: no READY within {READY_TIMEOUT}s: {errors.read_text()}"
                )
                # The first commit after READY, then the random delay: the kills land among the
                # commits that follow however slow the machine is (no fixed timing to outrun).
                lines += reader.read(time.monotonic() + READY_TIMEOUT, until_first="ACK")
                lines += reader.read(time.monotonic() + delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            lines += reader.read(time.monotonic() + 10)  # whatever was written before the kill: EOF comes
            assert reader.eof
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"run {run}: writer died by itself: {errors.read_text()}"

        ready, acks = parse(lines)
        if ready is not None and head_after_kill is not None:
            assert ready == head_after_kill, (
                f"run {run}: writer resumed from {ready}, store was {head_after_kill}"
            )
        previous = ready[0] if ready is not None else last_acked
        for size, root in acks:
            assert size > previous, f"run {run}: ACK {size} does not continue from {previous}"
            previous = size
            acknowledged[size] = root
        if acks:
            runs_with_acks += 1
            last_acked = acks[-1][0]

        with LogStore(data, readonly=True) as store:
            report = fsck(store)
            assert report.ok, f"run {run}: fsck: {[log.problems for log in report.logs]}"
            origins = [info.origin for info in store.origins()]
            if not origins:
                assert run == 0 and not acknowledged
                head_after_kill = None
                continue
            assert origins == [ORIGIN]
            head = store.head(ORIGIN)
            assert head.size >= last_acked, f"run {run}: head {head.size} lost acknowledged size {last_acked}"
            for size, root in acknowledged.items():
                assert store.root_at(ORIGIN, size).hex() == root, f"run {run}: root at {size} changed"
            for size, root in acks:
                cp, _ = open_checkpoint(store.checkpoint(ORIGIN, size), KEY.verifier())
                assert cp.root.hex() == root
            before_run = head_after_kill[0] if head_after_kill is not None else 0
            if head.size > (acks[-1][0] if acks else before_run):
                commits_not_acknowledged += 1
                # a batch committed but its ACK was lost with the process: it is whole, with its checkpoint
                cp, _ = open_checkpoint(store.checkpoint(ORIGIN), KEY.verifier())
                assert (cp.size, cp.root) == (head.size, head.root)
            head_after_kill = (head.size, head.root.hex())

    assert runs_with_acks >= KILLS // 2, f"only {runs_with_acks} of {KILLS} runs committed anything"
    assert len(acknowledged) > KILLS
    print(
        f"{KILLS} kills in {time.monotonic() - started:.1f}s, {len(acknowledged)} acknowledged batches, "
        f"final size {last_acked}, {commits_not_acknowledged} kills between a commit and its ACK"
    )
