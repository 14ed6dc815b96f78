"""Session-wide fixtures: the real local services, started once and stopped at session end.

A service that cannot start (binary missing, crash at startup) raises from its fixture, so every
test that needs it errors with the reason; nothing is skipped. Tests that must stop or kill a
service start a private one instead of touching these.
"""

from __future__ import annotations

from collections.abc import Iterator

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
