"""Session-wide fixtures: the real local services, started once and stopped at session end.

A service that cannot start (binary missing, crash at startup) raises from its fixture, so every
test that needs it errors with the reason; nothing is skipped. Tests that must stop or kill a
service start a private one instead of touching these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto

INFLUX_DATABASE = "linegate"


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxDB]:
    """InfluxDB 1.x with the database `linegate` created."""
    with InfluxDB() as influx:
        influx.create_database(INFLUX_DATABASE)
        yield influx


@pytest.fixture(scope="session")
def influx_proxy(influxdb: InfluxDB) -> Iterator[InfluxV2CompatProxy]:
    """The shipped nginx v2-compat config in front of `influxdb`: the URL for influxdb-client."""
    with InfluxV2CompatProxy(influxdb) as proxy:
        yield proxy


@pytest.fixture(scope="session", autouse=True)
def _state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Gateway state (PKI, control audit log) of in-process and child gateways in a temporary
    directory, never in the user's ~/.local/state."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("STATE_DIRECTORY")
    os.environ["STATE_DIRECTORY"] = str(path)
    yield path
    if before is None:
        os.environ.pop("STATE_DIRECTORY", None)
    else:
        os.environ["STATE_DIRECTORY"] = before
