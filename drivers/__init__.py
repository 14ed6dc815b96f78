"""Network adapters: OPC-UA input, MQTT input and operator output, InfluxDB output.

Each adapter implements a protocol from `gateway.ports` and wraps library exceptions into
`gateway.errors` types so the runtime, not the adapter, decides about retries.
"""
