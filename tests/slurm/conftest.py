"""The ``slurm_cluster`` fixture: one real one-node SLURM cluster per test session.

Opt-in (root plus CYCLEDECON_SLURM_TEST=1 or CI=true) because it writes /etc/slurm and starts
daemons; otherwise every test using it is skipped with the reason shown by ``pytest -ra``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from cluster import SlurmCluster, skip_reason


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt so pytest unwinds and the fixture's teardown runs."""
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running cluster (partition ``debug``, one node with one fake GPU); always torn down."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        began = time.monotonic()
        cluster.start()
        print(f"\nSLURM test cluster up in {time.monotonic() - began:.1f} s, PIDs {cluster.pids}")
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)
