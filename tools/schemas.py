"""Generate the JSON Schema files of the MQTT payloads from protocol/schema.py.

One file per message kind, ``protocol/schemas/<kind>.schema.json`` (JSON
Schema draft 2020-12), for the city's data platform.  The field tables in
`protocol.schema` are the source: this module only translates them, so the
files never disagree with what the sensors and the gateway accept.  Rules
between fields that JSON Schema cannot state (``t1 > t0``, percentile order)
are written into the ``$comment`` of the schema.

    hushlight schemas            # rewrite protocol/schemas/ (or python -m tools.schemas)
    hushlight schemas --check    # exit 1 if the files are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol import MAX_PAYLOAD, SCHEMA_VERSION, docs, schema, topics
from tools.errors import UsageError

HELP = "write the JSON Schema files of the MQTT payloads (protocol/schemas/) from protocol/"

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "protocol" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# kind -> topic pattern, for readers of the schema files
_IDENT = {"sensors": "{sensor}", "lights": "{group}", "zones": "{zone}"}
_TOPICS = {
    kind: f"{topics.PREFIX}{{site}}/{tkind}/{_IDENT[tkind]}/{leaf}"
    for (tkind, leaf), kind in topics.MESSAGE_KINDS.items()
}


def field_schema(kind: str, f: tuple[Any, ...]) -> dict[str, Any]:
    """JSON Schema of one field of `protocol.schema`."""
    t = f[schema.TYPE]
    lo, hi, extra = f[schema.LO], f[schema.HI], f[schema.EXTRA]
    out: dict[str, Any]
    if t in (schema.T_UINT, schema.T_INT, schema.T_TIME_MS, schema.T_TIME_S):
        out = {"type": "integer", "minimum": lo, "maximum": hi}
        if extra is not None:
            out["enum"] = list(extra)
    elif t in (schema.T_LEVEL, schema.T_NUM):
        out = {"type": "number", "minimum": lo, "maximum": hi}
        step = schema.STEPS.get((kind, f[schema.NAME]))
        if step is not None:
            out["multipleOf"] = step
    elif t == schema.T_ID:
        out = {"type": "string", "pattern": "^[a-z0-9-]{1,32}$"}
    elif t == schema.T_TOKEN:
        out = {"type": "string", "pattern": f"^[A-Za-z0-9._:-]{{1,{hi}}}$"}
    elif t == schema.T_TEXT:
        out = {"type": "string", "minLength": lo, "maxLength": hi}
    elif t == schema.T_ENUM:
        out = {"type": "string", "enum": list(extra)}
    elif t == schema.T_FLAGS:
        out = {"type": "array", "items": {"enum": list(extra)}, "uniqueItems": True}
    elif t == schema.T_BOOL:
        out = {"type": "boolean"}
    elif t == schema.T_LANGMAP:
        out = {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[a-z0-9-]{1,8}$"},
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": hi},
        }
    else:
        raise ValueError(f"field {f[schema.NAME]!r} of {kind} has the unknown type code {t}")
    if f[schema.NULLABLE]:
        out = {"anyOf": [out, {"type": "null"}]}
    doc = docs.FIELD_DOCS.get(str(f[schema.NAME]))
    if doc is not None:
        out["description"] = doc
    return out


def message_schema(kind: str) -> dict[str, Any]:
    """JSON Schema of the payload of message ``kind``."""
    fields, open_ = schema.MESSAGES[kind]
    doc: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": f"urn:hushlight:schema:v{SCHEMA_VERSION}:{kind}",
        "title": f"hushlight v{SCHEMA_VERSION} {kind}",
        "description": f"{docs.DESCRIPTIONS[kind]} MQTT topic {_TOPICS[kind]}; "
        f"at most {MAX_PAYLOAD} bytes of UTF-8 JSON.",
        "type": "object",
        "properties": {str(f[schema.NAME]): field_schema(kind, f) for f in fields},
        "required": [f[schema.NAME] for f in fields if f[schema.REQUIRED]],
        "additionalProperties": open_,
    }
    if kind == "status":
        doc["if"] = {"properties": {"state": {"const": "online"}}, "required": ["state"]}
        doc["then"] = {"required": list(schema.STATUS_ONLINE_REQUIRED)}
    # JSON Schema compares values, so 1.0 passes as an integer; protocol/ does not
    rules = [
        "integers are written without a fraction or exponent (1, not 1.0)",
        "text lengths are limits in UTF-8 bytes, not characters",
    ]
    rules += docs.CROSS_RULES.get(kind, ())
    doc["$comment"] = "Also required (checked by protocol/, not expressible here): " + "; ".join(
        rules
    )
    return doc


def render(kind: str) -> str:
    return json.dumps(message_schema(kind), indent=2) + "\n"


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in schema.KINDS:
        path = out / f"{kind}.schema.json"
        path.write_text(render(kind), encoding="utf-8")
        written.append(path)
    return written


def stale(out: Path) -> list[str]:
    """Names of the schema files in ``out`` that are missing or differ from protocol/."""
    bad = []
    for kind in schema.KINDS:
        path = out / f"{kind}.schema.json"
        if not path.exists() or path.read_text(encoding="utf-8") != render(kind):
            bad.append(path.name)
    return bad


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for the files (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are out of date"
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the schema files")
    if args.check:
        bad = stale(out)
        if bad:
            print(
                f"out of date in {out}: {', '.join(bad)}; run `hushlight schemas`",
                file=sys.stderr,
            )
            return 1
        print(f"{len(schema.KINDS)} schema files in {out} match protocol/")
        return 0
    for path in write(out):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.schemas", description=HELP)
    configure(parser)
    try:
        return run(parser.parse_args(argv))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
