"""The simulated retrofit IoT sensors: publish the config's MQTT tags to their brokers.

Each MQTT driver of the config gets its own connection (aiomqtt) to the broker of its
`connection`, and each of its tags is published to the tag's `topic` as the JSON object the
gateway parses, `{"value": v, "ts": <plant epoch seconds>}`, with the driver's QoS, never
retained. `publish()` only queues a batch (never blocks the simulation); a task per driver
drains the queue. When the broker is away the task logs it, retries with a doubling backoff,
and the queue keeps the newest `queue_max` batches (older ones are dropped and counted): the
simulator never crashes because of the broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import aiomqtt

from drivers.mqtt_common import MqttConnector, raise_if_cancel_swallowed
from gateway.config import LineConfig, MqttInputDriver, Tag

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DriverStats:
    """Counters of one driver's publisher, for logs and tests."""

    batches_published: int = 0
    messages_published: int = 0
    batches_dropped: int = 0
    connects: int = 0
    failures: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class _DriverPublisher:
    def __init__(
        self,
        name: str,
        driver: MqttInputDriver,
        tags: list[Tag],
        *,
        client_id: str,
        queue_max: int,
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self.name = name
        self.driver = driver
        self.topics = {t.name: t.topic for t in tags if t.topic is not None}
        self.client_id = client_id
        self.pending: deque[list[tuple[str, bytes]]] = deque()
        self.queue_max = queue_max
        self.wakeup = asyncio.Event()
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stats = DriverStats()

    def enqueue(self, values: Mapping[str, tuple[float, float]]) -> None:
        batch = [
            (topic, json.dumps({"value": float(values[name][0]), "ts": values[name][1]}).encode())
            for name, topic in self.topics.items()
            if name in values
        ]
        if not batch:
            return
        if len(self.pending) >= self.queue_max:
            self.pending.popleft()
            self.stats.batches_dropped += 1
        self.pending.append(batch)
        self.wakeup.set()

    async def run(self) -> None:
        conn = self.driver.connection
        # The gateway's own connector: same TLS, login and protocol fallback as a real sensor
        # gateway would need, and the guard against the Python 3.11 lost cancel.
        connector = MqttConnector(conn, self.client_id)
        backoff = self.backoff_initial_s
        while True:
            try:
                async with connector.session(f"simulated MQTT {self.name}") as client:
                    self.stats.connects += 1
                    self.stats.connected.set()
                    if self.stats.failures:
                        log.info("mqtt %s: connected to %s:%s again", self.name, conn.host, conn.port)
                    backoff = self.backoff_initial_s
                    await self._drain(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the broker take the simulator down
                self.stats.connected.clear()
                self.stats.failures += 1
                log.warning(
                    "mqtt %s: broker %s:%s unavailable (%s); retrying in %.1f s",
                    self.name,
                    conn.host,
                    conn.port,
                    exc,
                    backoff,
                )
                # A retry delay, not synchronisation: there is nothing to wait on but time.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2.0, self.backoff_max_s)

    async def _drain(self, client: aiomqtt.Client) -> None:
        qos = self.driver.qos
        while True:
            while not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch = self.pending[0]
            for topic, payload in batch:
                await client.publish(topic, payload, qos=qos, retain=False)
                # A cancel lost while waiting for the PUBACK would keep this loop (and the
                # simulator's shutdown) going for ever.
                raise_if_cancel_swallowed()
            # Only a fully published batch leaves the queue; a failure mid-batch resends it.
            if self.pending and self.pending[0] is batch:
                self.pending.popleft()
            self.stats.batches_published += 1
            self.stats.messages_published += len(batch)


class SimMqttPublisher:
    """Publishes every MQTT tag of a config; run `run()` as a task, feed it with `publish()`."""

    def __init__(
        self,
        config: LineConfig,
        *,
        known_signals: Collection[str],
        client_id_prefix: str = "linegate-sim",
        queue_max: int = 600,  # batches; 60 s at the default 10 Hz publish rate
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._drivers: list[_DriverPublisher] = []
        for name, driver in config.drivers.items():
            if not isinstance(driver, MqttInputDriver):
                continue
            tags = [t for t in config.tags if t.driver == name]
            unknown = [t.name for t in tags if t.name not in known_signals]
            if unknown:
                raise ValueError(
                    f"MQTT driver {name!r}: the simulator has no signal for tag(s) {unknown}; "
                    f"it knows {sorted(known_signals)}"
                )
            if not tags:
                continue
            self._drivers.append(
                _DriverPublisher(
                    name,
                    driver,
                    tags,
                    # The pid keeps two simulators on one broker from kicking each other off.
                    client_id=f"{client_id_prefix}-{config.line.name}-{name}-{os.getpid()}",
                    queue_max=queue_max,
                    backoff_initial_s=backoff_initial_s,
                    backoff_max_s=backoff_max_s,
                )
            )

    @property
    def drivers(self) -> list[str]:
        return [d.name for d in self._drivers]

    def stats(self, driver: str) -> DriverStats:
        return next(d.stats for d in self._drivers if d.name == driver)

    def endpoints(self) -> list[str]:
        return [f"{d.driver.connection.host}:{d.driver.connection.port}" for d in self._drivers]

    def publish(self, values: Mapping[str, float], ts: float) -> None:
        """Queue the MQTT tags found in `values` (config units) with plant time `ts` (epoch s)."""
        self.publish_timed({name: (v, ts) for name, v in values.items()})

    def publish_timed(self, values: Mapping[str, tuple[float, float]]) -> None:
        """Queue the MQTT tags found in `values`, each (value, source time in epoch s)."""
        for d in self._drivers:
            d.enqueue(values)

    async def run(self) -> None:
        """Publish until cancelled."""
        if not self._drivers:
            return
        async with asyncio.TaskGroup() as tg:
            for d in self._drivers:
                tg.create_task(d.run(), name=f"mqtt-sim-{d.name}")


__all__ = ["DriverStats", "SimMqttPublisher"]
