"""The hushlight wire protocol, schema version 1: topics and JSON payloads.

One source of truth imported by the firmware (MicroPython) and by the gateway
and tools (CPython), so every module here is written in the common subset of
both: no dataclasses, no typing at runtime, no CPython-only stdlib.

- `protocol.topics`: topic builders, wildcards and the topic parser.
- `protocol.payloads`: `encode_<kind>` / `decode_<kind>` for every message.
- `protocol.schema`: the field tables both of them (and the JSON Schema
  generator, `tools/schemas.py`) are driven by, including the remote config
  keys and their ranges.
- `protocol.errors`: `ProtocolError`, with a stable `reason` code.
- `protocol.docs`: what each message and field means (for the JSON Schema
  files; the firmware never imports it).
- `protocol.schemas/`: the generated JSON Schema files (`hushlight schemas`).
"""

SCHEMA_VERSION = 1

# MQTT contract: a payload larger than this is refused before it is parsed, so
# a hostile or broken publisher cannot make a sensor or the gateway parse
# (and allocate for) megabytes of JSON.
MAX_PAYLOAD = 2048
