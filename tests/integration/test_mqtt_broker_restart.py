"""A whole gateway (`Runtime` from `build_runtime`) through a restart of its only broker.

One private mosquitto carries everything: sensor input, operator topics, command channel. It
runs without persistence, so its restart loses every retained message and session, as a real
broker without a persistence file would. After it is back, within 5 s (the runtime's backoff is
capped at 2 s), the gateway must be connected again everywhere, restore the whole retained tree
(status, signals, KPIs, active alarms) without any new sensor data, take new sensor data
again, and answer a repeated command from its ledger instead of executing it a second time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from drivers.mqtt_commands import MqttCommandChannel
from drivers.mqtt_output import MqttOperatorOutput
from drivers.operator_topics import alarm_topic, signal_topic
from gateway.composition import build_runtime
from gateway.runtime import Runtime
from simulators.local_services import Mosquitto
from tests.mqtt_helpers import (
    BLACK_MASS,
    FEED,
    H2,
    T0,
    Subscriber,
    base_of,
    command,
    eventually,
    mqtt_line_config,
    payload,
    publish,
    running_runtime,
    sample,
)

pytestmark = pytest.mark.integration

RECONNECT_WITHIN_S = 5.0


def parts(runtime: Runtime) -> tuple[MqttOperatorOutput, MqttCommandChannel]:
    (binding,) = runtime.outputs
    (channel,) = runtime.services
    assert isinstance(binding.driver, MqttOperatorOutput)
    assert isinstance(channel, MqttCommandChannel)
    return binding.driver, channel


def all_connected(runtime: Runtime) -> bool:
    return bool(runtime.health) and all(h.connected for h in runtime.health.values())


async def test_gateway_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        prefix = "restart"
        base = base_of(prefix)
        config = mqtt_line_config(broker, prefix, input_client_id=f"{prefix}-iot")
        runtime = build_runtime(config)
        output, channel = parts(runtime)
        h2 = config.tag_index(H2)
        async with running_runtime(runtime):
            # Two minutes of plant time for the balance totals and the gas signal.
            messages = []
            for i in range(13):
                t = T0 + 10 * i
                messages += [
                    (f"{prefix}/in/{FEED}", sample(100 + 0.005 * i, t)),
                    (f"{prefix}/in/{BLACK_MASS}", sample(40 + 0.002 * i, t)),
                    (f"{prefix}/in/{H2}", sample(5 + i, t)),
                ]
            await publish(broker, messages)
            kpis = {f"{base}/kpi/yield_rolling", f"{base}/kpi/feed_rate", f"{base}/kpi/black_mass_rate"}
            signals = {signal_topic(base, n) for n in (FEED, BLACK_MASS, H2)}
            await eventually(
                lambda: (kpis | signals) <= set(output.latest) and runtime.pipeline.last_value[h2] == 17,
                "signals and KPIs",
            )

            async with Subscriber(broker, f"{base}/commands/+/result") as results:
                await publish(broker, [(f"{base}/commands/shr.feed_rate_sp/set", command("r1"))])
                topic = f"{base}/commands/shr.feed_rate_sp/result"
                await eventually(lambda: len(results.on(topic)) == 1, "the result of r1")
                first = results.json_on(topic)[0]
                assert (first["request_id"], first["status"], first["duplicate"]) == ("r1", "rejected", False)
                assert channel.executed == 1

            broker.stop(keep_workdir=True)
            # Stay down until every reconnect backoff has grown to its cap (0.5, 1, then 2 s).
            await eventually(
                lambda: all(not h.connected and h.failures >= 4 for h in runtime.health.values()),
                "every link to drop and its backoff to reach the cap",
            )
            broker.start()  # same port, empty: no retained messages, no sessions
            back = time.monotonic()
            await eventually(lambda: all_connected(runtime), "reconnection", within=RECONNECT_WITHIN_S)
            reconnected_in = time.monotonic() - back
            assert reconnected_in < RECONNECT_WITHIN_S

            # Without any new sensor data, a dashboard opened now sees the whole state again.
            await eventually(
                lambda: (
                    not [a for a in runtime.alarms.active if a.startswith("driver_down:")]
                    and len(runtime.queues[0]) == 0
                    and output.pending == 0
                ),
                "the driver alarms to clear and the output to settle",
            )
            async with Subscriber(broker, f"{base}/#") as late:

                def restored() -> bool:
                    state = late.retained_state(base + "/")
                    expected = {t: p for t, p in output.latest.items() if p}
                    alarms = {t for t in state if t.startswith(f"{base}/alarms/active/")}
                    return (
                        all(state.get(t) == p for t, p in expected.items())
                        and alarms == {alarm_topic(base, a) for a in runtime.alarms.active}
                        and f"{base}/status" in state
                    )

                await eventually(restored, "the retained tree after the restart")
                live = [t for t in late.retained_state(base + "/") if not late.latest[t].retain]
                assert not live, [(t, payload(late.latest[t])) for t in live]
                assert (kpis | signals) <= set(late.latest)
                status = late.json(f"{base}/status")
                assert status["state"] == "online"
                # The input went away with the broker: its tags are stale, and say so.
                assert late.json(signal_topic(base, H2))["quality"] == "stale"
                assert {f"tag_stale:{n}" for n in (FEED, BLACK_MASS, H2)} <= set(runtime.alarms.active)
                stale_h2 = json.loads(payload(late.latest[alarm_topic(base, f"tag_stale:{H2}")]))
                assert stale_h2["kind"] == "tag_stale"
                assert not {a for a in runtime.alarms.active if a.startswith("driver_down:")}

                # The input subscription is back: a new sample reaches the pipeline and the topic.
                await publish(broker, [(f"{prefix}/in/{H2}", sample(42.0, T0 + 200))])
                await late.wait_json(signal_topic(base, H2), lambda p: p["value"] == 42.0, "the new sample")
                assert runtime.pipeline.last_value[h2] == 42.0
                await eventually(
                    lambda: not payload(late.latest[alarm_topic(base, f"tag_stale:{H2}")]),
                    "the stale alarm to clear",
                )

            # No command runs twice: r1 again is answered from the ledger; r2 is new.
            async with Subscriber(broker, f"{base}/commands/+/result") as results:
                await publish(broker, [(f"{base}/commands/shr.feed_rate_sp/set", command("r1"))])
                await publish(broker, [(f"{base}/commands/shr.feed_rate_sp/set", command("r2"))])
                await eventually(lambda: len(results.on(topic)) == 2, "the results of r1 and r2")
                again, new = results.json_on(topic)
            assert (again["request_id"], again["duplicate"], again["status"]) == ("r1", True, "rejected")
            assert again["decided_at"] == first["decided_at"]  # the stored result, not a new decision
            assert (new["request_id"], new["duplicate"]) == ("r2", False)
            assert channel.executed == 2
            assert channel.duplicates == 1
    finally:
        broker.stop()
