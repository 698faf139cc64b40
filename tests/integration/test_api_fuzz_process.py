"""schemathesis against a real ``sez-node run`` process (PAK, with KSA as its counterparty) over HTTP.

The document is the one the process serves at ``/openapi.json``. Every operation gets requests generated
from it, with the node's real token; checks: no 5xx, answers as documented. Afterwards the process must
still be running and serving, its log must hold no unhandled-error line, and it must stop cleanly on
SIGTERM. The in-process run with more examples is ``tests/fuzz/test_fuzz_api.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.fuzz.mutations import FUZZ
from tests.integration.netharness import Network, make_network

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

C = "PAK-KSA"
PROCESS_FUZZ = settings(
    max_examples=8 if FUZZ.max_examples < 100 else 200,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    network = make_network(tmp_path_factory.mktemp("api-fuzz"), ["PAK", "KSA"], corridors=[C])
    try:
        network.start()
        yield network
    finally:
        network.close()


def test_the_running_node_answers_every_operation_as_documented(pair: Network) -> None:
    pak = pair["PAK"]
    base = pair.specs["PAK"].base_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    auth = {"Authorization": f"Bearer {pair.specs['PAK'].token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:

        @PROCESS_FUZZ
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base, headers=auth)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
        assert pak.running, f"the node stopped while fuzzing {operation.label}\n{pair.tails()}"
    assert not failures, "\n\n".join(failures) + "\n" + pair.tails()

    assert pak.healthy(), pair.tails()
    assert pak.status(C)["corridor"] == C
    log_lines = (pak.spec.directory / "stderr.log").read_text(encoding="utf-8").splitlines()
    unhandled = [line for line in log_lines if "unhandled error" in line]
    assert not unhandled, "\n".join(unhandled[:5])
    assert pak.stop() == 0, pair.tails()
