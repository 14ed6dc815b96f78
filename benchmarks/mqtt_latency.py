"""Benchmark: MQTT sensor updates -> gateway -> operator topics, rate and end-to-end latency.

Run: `NUMBA_CACHE_DIR=/tmp/numba-cache .venv/bin/python benchmarks/mqtt_latency.py`
     (options: --tags 1000 --hz 10 --seconds 6 --tick-ms 250 --qos 1 --protocol auto|5|3.1.1;
     about 25 s in all)

A local mosquitto (simulators.local_services) carries everything. Two phases, each with its own
publisher and subscriber processes so the load generator does not share the gateway's loop:

1. Reference: the publisher sends `--tags` x `--hz` JSON updates/s ({"value", "ts": wall time},
   the same payload as phase 2) straight to a subscriber: the raw broker round trip.
2. Gateway: the same load goes to the sensor topics of a real `Runtime` (built by
   `gateway.composition.build_runtime`; MQTT input, MQTT output, min_interval_s 0, deadband 0,
   in this process). The subscriber takes every `<base>/signals/<tag>` message and records
   arrival wall time minus the payload's `timestamp` (the source ts, ms resolution).

Printed: offered and achieved input rate, operator publishes/s, latency p50/p95/p99/max for
both phases, every gateway-side drop counter (input queue and rejections, sample bus, output
queue, output failures), and the updates that never reached the gateway at all: mosquitto keeps
at most `max_queued_messages` (1,000) QoS 1 messages per slow subscriber and silently drops the
rest, so only the publisher's count minus the gateway's shows that loss. The first second of
each phase is warm-up and not measured. Latest value wins per tag and tick, so operator
publishes/s is at most tags x ticks/s.

The publisher and subscriber write and parse MQTT 3.1.1 packets on a bare socket: paho or
aiomqtt would need most of a core of their own at 10,000 messages/s (see the comment below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from drivers.mqtt_input import MqttInputDriver  # noqa: E402
from drivers.mqtt_output import MqttOperatorOutput  # noqa: E402
from gateway.composition import build_runtime  # noqa: E402
from gateway.config import LineConfig, parse_config  # noqa: E402
from gateway.ports import PipelineUpdate  # noqa: E402
from simulators.local_services import Mosquitto  # noqa: E402

WARMUP_S = 1.0
DRAIN_S = 1.5  # after the publisher stops, time for the last updates to arrive
BATCH_PERIOD_S = 0.01  # publisher: one paced batch per 10 ms


# -- load generator and receiver (child processes speaking MQTT 3.1.1 on a bare socket) ------------
# Measured on the 2-core box: one Python process with paho (or aiomqtt) spends a whole core to
# publish well under 10,000 messages/s, and so would measure itself, not the gateway. Writing
# pre-built PUBLISH packets in batches costs a few microseconds per message; reading them back
# is as cheap. Only what the benchmark needs is implemented: CONNECT, SUBSCRIBE, PUBLISH QoS 0/1.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _connect(host: str, port: int, name: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Protocol "MQTT" level 4 (3.1.1), clean session, keepalive 0 (none: runs are short).
    client_id = f"bench-{name}-{os.getpid()}"
    sock.sendall(_packet(0x10, _utf8("MQTT") + bytes([4, 0x02, 0, 0]) + _utf8(client_id)))
    connack = sock.recv(4)
    if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
        raise RuntimeError(f"broker refused the benchmark client: {connack!r}")
    return sock


def publisher(
    host: str, port: int, topics: list[str], rate: float, seconds: float, qos: int
) -> dict[str, Any]:
    """Send `rate` updates/s round-robin over `topics` for `seconds`, paced in 10 ms batches."""
    sock = _connect(host, port, "pub")
    acked = 0

    def read_pubacks() -> None:  # QoS 1: count PUBACKs (4 bytes each) so the socket never clogs
        nonlocal acked
        pending = 0
        while data := sock.recv(65536):
            time.sleep(0.002)  # let PUBACKs collect: one read for many instead of one each
            pending += len(data)
            acked += pending // 4
            pending %= 4

    reader = threading.Thread(target=read_pubacks, daemon=True)
    reader.start()
    heads = [_utf8(t) for t in topics]
    per_batch = max(1, round(rate * BATCH_PERIOD_S))
    sent = 0
    value = 0.0
    start = time.monotonic()
    batch = 0
    while time.monotonic() - start < seconds:
        delay = start + batch * BATCH_PERIOD_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load
        packets = []
        for _ in range(per_batch):
            value += 1.0  # always a change: deadband 0 publishes every update
            payload = b'{"value":%r,"ts":%r}' % (value, time.time())
            head = heads[sent % len(heads)]
            if qos:
                packet_id = (sent % 65535 + 1).to_bytes(2, "big")
                packets.append(_packet(0x32, head + packet_id + payload))
            else:
                packets.append(_packet(0x30, head + payload))
            sent += 1
        sock.sendall(b"".join(packets))
        batch += 1
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 10
    while qos and acked < sent and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the last PUBACKs of a finished run
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return {"sent": sent, "elapsed": elapsed, "acked": acked if qos else None}


def subscriber(
    host: str, port: int, topic_filter: str, seconds: float, field: str, ready: Path
) -> dict[str, Any]:
    """Record arrival - source time of every message, from 1 s after the first one for `seconds`.

    Subscribes at QoS 0 (the broker delivers at the lower of both QoS), so nothing is acknowledged.
    """
    sock = _connect(host, port, "sub")
    sock.sendall(_packet(0x82, b"\x00\x01" + _utf8(topic_filter) + b"\x00"))
    arrivals: list[tuple[float, bytes]] = []
    buf = bytearray()
    end: float | None = None
    sock.settimeout(0.2)
    subscribed = False
    while end is None or time.time() < end:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        now = time.time()  # every message of one read arrived together
        buf += data
        i = 0
        while len(buf) - i >= 2:
            length, shift, j = 0, 0, i + 1
            while j < len(buf) and j < i + 5:
                length |= (buf[j] & 0x7F) << shift
                shift += 7
                j += 1
                if not buf[j - 1] & 0x80:
                    break
            else:
                break  # the length itself is incomplete
            if len(buf) - j < length:
                break  # the body is incomplete
            kind = buf[i] >> 4
            if kind == 9 and not subscribed:  # SUBACK
                subscribed = True
                ready.touch()  # tells the parent that the subscription is in place
            elif kind == 3 and not buf[i] & 0x01:  # PUBLISH, not a retained replay
                topic_len = int.from_bytes(buf[j : j + 2], "big")
                skip = 2 + topic_len + (2 if (buf[i] >> 1) & 3 else 0)
                arrivals.append((now, bytes(buf[j + skip : j + length])))
                if end is None:
                    end = now + WARMUP_S + seconds + DRAIN_S
            i = j + length
        del buf[:i]
    sock.close()
    latencies: list[float] = []
    if arrivals:
        started = arrivals[0][0]
        for now, payload in arrivals:
            if now - started >= WARMUP_S:
                ts = json.loads(payload)[field]
                latencies.append(
                    now - (datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else ts)
                )
    return {"received": len(arrivals), "latencies": latencies}


def child_main(argv: list[str]) -> None:
    role, host, port = argv[0], argv[1], int(argv[2])
    if role == "pub":
        rate, seconds, qos = float(argv[3]), float(argv[4]), int(argv[5])
        result = publisher(host, port, argv[6].split(","), rate, seconds, qos)
    else:
        result = subscriber(host, port, argv[3], float(argv[4]), argv[5], Path(argv[6]))
    print(json.dumps(result))


# -- orchestration ----------------------------------------------------------------------------------


def bench_config(broker: Mosquitto, tags: int, tick_ms: int, qos: int, protocol: str = "auto") -> LineConfig:
    connection = {"host": broker.host, "port": broker.port, "protocol": protocol}
    tag_list: list[dict[str, object]] = [
        {"name": "feed.total", "driver": "iot", "topic": "bench/in/feed", "unit": "t", "range": [0, 1e12], "role": "feed", "kind": "total"},
        {"name": "bm.total", "driver": "iot", "topic": "bench/in/bm", "unit": "t", "range": [0, 1e12], "role": "black_mass", "kind": "total"},
    ]  # fmt: skip
    tag_list += [
        {
            "name": f"bench.t{i}",
            "driver": "iot",
            "topic": f"bench/in/t{i}",
            "unit": "-",
            "range": [-1e12, 1e12],
        }
        for i in range(tags)
    ]
    return parse_config(
        {
            "line": {"name": "bench", "site": "lab", "area": "a", "nameplate": {"capacity": 13500}},
            "drivers": {"iot": {"type": "mqtt", "qos": qos, "connection": connection}},
            "tags": tag_list,
            "yield": {"transport_delay_min": 1, "window_h": 1},
            "outputs": {
                "mqtt": {
                    "prefix": "bench",
                    "qos": qos,
                    "min_interval_s": 0,
                    "commands": False,
                    "connection": connection,
                }
            },
            "runtime": {"tick_ms": tick_ms},
        }
    )


async def run_phase(
    broker: Mosquitto, pub_topics: list[str], sub_filter: str, field: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    ready = broker.workdir / f"sub-ready-{time.monotonic_ns()}"
    me = [sys.executable, str(SELF)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sub = await asyncio.create_subprocess_exec(
        *me, "--child", "sub", broker.host, str(broker.port), sub_filter, str(args.seconds), field, str(ready),
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists():
        if time.monotonic() > deadline or sub.returncode is not None:
            raise RuntimeError("benchmark subscriber did not start")
        await asyncio.sleep(0.05)
    rate = args.tags * args.hz
    pub = await asyncio.create_subprocess_exec(
        *me, "--child", "pub", broker.host, str(broker.port), str(rate), str(args.seconds + WARMUP_S),
        str(args.qos), ",".join(pub_topics),
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    pub_out, _ = await pub.communicate()
    try:
        sub_out, _ = await asyncio.wait_for(sub.communicate(), args.seconds + 30)
    except TimeoutError:
        sub.kill()
        raise RuntimeError("benchmark subscriber did not finish (no messages?)") from None
    return json.loads(pub_out), json.loads(sub_out)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_line(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    if not ms:
        return "no messages"
    return (
        f"p50 {statistics.median(ms):7.2f} ms  p95 {pct(ms, 0.95):7.2f} ms  "
        f"p99 {pct(ms, 0.99):7.2f} ms  max {max(ms):7.2f} ms  (n={len(ms)})"
    )


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    offered = args.tags * args.hz
    print(
        f"offered load: {args.tags} tags x {args.hz:g} Hz = {offered:,.0f} updates/s, QoS {args.qos}, {args.seconds:g} s measured"
    )
    with Mosquitto() as broker:
        # 1. Reference: the broker alone.
        raw_topics = [f"bench/raw/t{i}" for i in range(args.tags)]
        pub, sub = await run_phase(broker, raw_topics, "bench/raw/#", "ts", args)
        print("\nreference, publisher -> mosquitto -> subscriber (same payloads):")
        print(f"  achieved publish rate {pub['sent'] / pub['elapsed']:10,.0f} msg/s")
        print(f"  latency               {latency_line(sub['latencies'])}")

        # 2. Through the gateway.
        config = bench_config(broker, args.tags, args.tick_ms, args.qos, args.protocol)
        runtime = build_runtime(config)
        (binding,) = runtime.outputs
        output = binding.driver
        (driver,) = runtime.inputs
        assert isinstance(output, MqttOperatorOutput)
        assert isinstance(driver, MqttInputDriver)
        task = asyncio.create_task(runtime.run())
        await asyncio.wait_for(runtime.ready.wait(), 60)
        base = output.base
        # Steady-state rates: counters sampled while the publisher runs, warm-up second excluded.
        samples: list[tuple[float, int, int]] = []
        # Source time -> the tick that hands the value to the outputs: the input half of the latency.
        to_tick: list[tuple[float, float]] = []  # (wall time of the tick, its latency)

        def on_tick(update: PipelineUpdate) -> None:
            now = time.time()
            to_tick.extend(
                (now, now - t) for name, _, t, _, _ in update.signal_rows() if name.startswith("bench.")
            )

        async def sample() -> None:
            while True:
                samples.append((time.monotonic(), driver.received, output.published))
                await asyncio.sleep(0.25)  # the sampling period

        runtime.add_listener(on_tick)
        sampler = asyncio.create_task(sample())
        pub, sub = await run_phase(
            broker, [f"bench/in/t{i}" for i in range(args.tags)], f"{base}/signals/#", "timestamp", args
        )
        sampler.cancel()
        runtime.stop()
        await task
        queue = runtime.queues[0]
        started = next((i for i, x in enumerate(samples) if x[1] > 0), 0)
        window = [x for x in samples[started:] if x[0] - samples[started][0] >= WARMUP_S][
            : int(args.seconds * 4)
        ]
        (t_a, rx_a, pb_a), (t_b, rx_b, pb_b) = window[0], window[-1]
        print(
            f"\ngateway, publisher -> mosquitto -> Runtime (tick {args.tick_ms} ms, MQTT {driver.protocol}) "
            "-> mosquitto -> subscriber:"
        )
        print(f"  achieved publish rate {pub['sent'] / pub['elapsed']:10,.0f} msg/s (offered {offered:,.0f})")
        print(
            f"  gateway input rate    {(rx_b - rx_a) / (t_b - t_a):10,.0f} msg/s ({driver.received:,} received in all)"
        )
        print(
            f"  operator publishes    {(pb_b - pb_a) / (t_b - t_a):10,.0f} msg/s "
            f"(at most {args.tags * 1000 / args.tick_ms:,.0f}/s: latest value per tag and tick)"
        )
        measured = [lat for t, lat in to_tick if t - to_tick[0][0] >= WARMUP_S] if to_tick else []
        print(f"  source -> tick        {latency_line(measured)}")
        print(f"  source -> operator    {latency_line(sub['latencies'])}")
        print(f"  pipeline tick         {runtime.tick_seconds * 1000:7.2f} ms (the last one)")
        drops = {
            "input rejected": {k: v for k, v in driver.rejected.items() if v},
            # What the input's queue dropped is counted there; the rest the broker dropped.
            "dropped by the broker (queue limit)": pub["sent"]
            - driver.received
            - driver.rejected.get("queue_overflow", 0),
            "bus dropped_oldest": runtime.bus.dropped_oldest,
            "output queue dropped": queue.dropped_items,
            "output bad_updates": output.bad_updates,
            "output events_dropped": output.events_dropped,
        }
        print(f"  gateway-side drops    {drops}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tags", type=int, default=1000)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per phase")
    p.add_argument("--tick-ms", type=int, default=250, help="pipeline tick (the config default is 250)")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="sensor input and operator output QoS")
    p.add_argument(
        "--protocol", choices=("auto", "5", "3.1.1"), default="auto", help="the gateway's MQTT connections"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main(parse_args(sys.argv[1:])))
