"""gateway.events: the events and records are defined once, the summary's fields by the protocol."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from gateway import events, ingest, policy
from gateway.events import SUMMARY_FIELDS, SummaryRecord
from protocol import payloads, schema


def test_a_stored_summary_has_the_fields_of_the_wire_summary() -> None:
    wire = [f[schema.NAME] for f in schema.SUMMARY]
    assert list(SUMMARY_FIELDS) == [name for name in wire if name != "flags"]
    assert [f.name for f in dataclasses.fields(SummaryRecord)] == ["sensor", *SUMMARY_FIELDS]


def test_a_summary_record_is_made_from_the_decoded_message() -> None:
    message = {
        "seq": 7,
        "t0": 1_795_213_800_000,
        "laeq": 60.5,
        "lafmax": 80.25,
        "lamin": 40.75,
        "l10": 65.5,
        "l50": 55.25,
        "l90": 45.0,
        "lceq": 66.5,
        "peaks": 3,
    }
    message["t1"] = message["t0"] + 60_000
    decoded = payloads.decode("summary", payloads.encode("summary", message))
    record = SummaryRecord.from_wire("a", decoded)
    assert record.sensor == "a"
    for name in SUMMARY_FIELDS:
        # times in seconds like every other time of the gateway, the rest as decoded
        wanted = decoded[name] / 1000.0 if name in ("t0", "t1") else decoded[name]
        assert getattr(record, name) == wanted, name


def test_the_policy_steps_on_the_events_defined_here() -> None:
    for name in ("Event", "LevelEvent", "LightStateEvent", "StatusEvent", "Tick"):
        assert getattr(policy, name) is getattr(events, name), name


def _imported(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_ingest_takes_its_types_from_events_not_from_storage() -> None:
    imported = _imported(Path(ingest.__file__))
    assert "gateway.events" in imported
    assert not {m for m in imported if m == "gateway.storage" or m.startswith("gateway.storage.")}
