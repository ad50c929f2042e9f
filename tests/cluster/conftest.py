"""The broker cluster of the tests: three RabbitMQ nodes, started once per session.

`rabbit`: the cluster, with every node running at the start of each test (a
test may kill nodes; the fixture starts them again afterwards).  Accounts:
`gateway` (every right), loaded at boot from a definitions file, and the
sensors a test provisions itself with `hushlight provision --rabbit-defs`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.firmware.conftest import make_ca
from tools import rabbit_accounts
from tools.rabbit_cluster import RabbitCluster

SITE = "testsite"


@dataclass(frozen=True)
class Cluster:
    nodes: RabbitCluster
    gateway_password: str
    ca: Path
    folder: Path


@pytest.fixture(scope="session")
def _session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("rabbit")
    test_ca = make_ca(folder / "tls", "hushlight cluster test CA")
    password = secrets.token_urlsafe(16)
    defs = folder / "definitions.json"
    account = rabbit_accounts.service_definitions(
        "gateway", rabbit_accounts.hash_password(password)
    )
    rabbit_accounts.upsert(defs, account)
    nodes = RabbitCluster(
        tls=(test_ca.ca, test_ca.cert, test_ca.key),
        definitions=defs,
        folder=folder / "cluster",
    )
    try:
        nodes.start()
        yield Cluster(nodes, password, test_ca.ca, folder)
    finally:
        nodes.close()


@pytest.fixture
def rabbit(_session_cluster: Cluster) -> Iterator[Cluster]:
    yield _session_cluster
    for i, node in enumerate(_session_cluster.nodes.nodes):
        if not node.running:
            _session_cluster.nodes.start_node(i)
