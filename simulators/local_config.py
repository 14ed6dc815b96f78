"""Point a line config at the local services of a demo or test run.

The example config names fixed endpoints (OPC-UA 4840, MQTT 1883, InfluxDB proxy 8087); a demo
or test starts its own services on free ports and needs the same file with those endpoints.
Rewriting the text keeps every comment and key of the example, and each substitution must hit,
so a changed example fails loudly here rather than silently pointing at the wrong port.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def localize_config_text(
    text: str,
    *,
    opcua_port: int,
    mqtt_port: int,
    influx_url: str | None,
    state_dir: Path | None = None,
    speed: float = 1.0,
) -> str:
    """Return `text` with the OPC-UA, MQTT and InfluxDB endpoints replaced, and the control
    audit log and the historian's buffer and dead-letter files in `state_dir` when given (a
    test's state stays in its own directory).

    At a simulator `speed` other than 1 the clock-skew check is switched off: it compares source
    timestamps (plant time) with arrival (wall time), which only agree when plant time runs at
    wall speed."""
    rules = [
        (r'(url = "opc\.tcp://127\.0\.0\.1:)\d+(/)', rf"\g<1>{opcua_port}\g<2>"),
        (r"(?m)^(port = )1883\b", rf"\g<1>{mqtt_port}"),
    ]
    if influx_url is not None:
        rules.append((r'(?m)^(url = ")http://127\.0\.0\.1:\d+(")', rf"\g<1>{influx_url}\g<2>"))
    for pattern, repl in rules:
        text, n = re.subn(pattern, repl, text)
        if n == 0:
            raise ValueError(f"config text has no endpoint matching {pattern!r}")
    if state_dir is not None:
        audit = json.dumps(str(state_dir / "audit.jsonl"))
        text, n = re.subn(r"(?m)^\[control\]\n", f"[control]\naudit_log = {audit}\n", text)
        if n == 0:
            text = text.rstrip("\n") + f"\n\n[control]\naudit_log = {audit}\n"
    if state_dir is not None and influx_url is not None:
        # Each run its own historian buffer: a backlog from another run must not replay here.
        buffer = json.dumps(str(state_dir / "influxdb-buffer.sqlite"))
        dead = json.dumps(str(state_dir / "influxdb-dead-letter.jsonl"))
        text, n = re.subn(
            r"(?m)^\[outputs\.influxdb\]\n",
            f"[outputs.influxdb]\nbuffer_path = {buffer}\ndead_letter_path = {dead}\n",
            text,
        )
        if n == 0:
            raise ValueError("config text has no [outputs.influxdb] table")
    if speed != 1.0:
        text, n = re.subn(r"(?m)^clock_skew_s = .*$", "clock_skew_s = 0  # accelerated plant time", text)
        if n == 0:
            text = re.sub(r"(?m)^\[detectors\]\n", "[detectors]\nclock_skew_s = 0\n", text)
    if influx_url is None:
        # No InfluxDB in this run: drop the whole [outputs.influxdb] table.
        text = re.sub(r"(?ms)^\[outputs\.influxdb\].*?(?=^\[)", "", text)
    return text
