"""Shared JSON vectors of the protocol, and their results under MicroPython.

Each vector file in vectors/ is a JSON list.  Decode vectors:
``{"name", "kind", "payload" | "payload_hex", "ok", "reason"?, "field"?,
"fields"?}`` where ``fields`` is a hand-written subset of the decoded dict;
``deep: N`` replaces ``@`` in the payload by N nested arrays, ``pad_to: N``
grows the ``@`` to make the payload exactly N bytes.  Encode vectors
(encode.json): ``{"name", "kind", "fields", "payload" | "reason"}``.
Topic vectors (topics.json): ``{"topic", "ok", "parts" | "reason"}``.

The `upy_results` fixture runs every vector once in the MicroPython unix
port (one process for all of them) so the tests can check that the firmware
side accepts and refuses exactly what CPython does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tools import upy

VECTORS = Path(__file__).parent / "vectors"
RUNNER = Path(__file__).parent / "upy" / "run_vectors.py"
DECODE_FILES = ("levels", "summary", "status", "config", "lights", "nudge", "json")


def load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def decode_vectors() -> list[dict[str, Any]]:
    return [v for name in DECODE_FILES for v in load(name)]


def vector_id(v: dict[str, Any]) -> str:
    return f"{v['kind']}: {v['name']}" if "name" in v else str(v.get("topic") or "(empty)")


def payload_bytes(v: dict[str, Any]) -> bytes:
    if "payload_hex" in v:
        return bytes.fromhex(v["payload_hex"])
    text: str = v["payload"]
    if "deep" in v:
        text = text.replace("@", "[" * v["deep"] + "]" * v["deep"])
    raw = text.encode()
    if "pad_to" in v:
        raw = raw.replace(b"@", b"x" * (v["pad_to"] - len(raw) + 1))
        assert len(raw) == v["pad_to"]
    return raw


SPECIAL_NUMBERS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def number(v: Any) -> Any:
    """Vectors spell NaN and infinities as strings (JSON cannot hold them)."""
    if isinstance(v, str) and v in SPECIAL_NUMBERS:
        return SPECIAL_NUMBERS[v]
    return v


def reading(x: float) -> float:
    """How far the wire's reading of ``x`` at 6 significant digits (what a
    float32 holds) may move it before it is rounded to its resolution."""
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(x))) - 5) if x else 0.0


def same(expected: Any, actual: Any, rel_tol: float = 1e-12) -> bool:
    """Equal, with floats within `rel_tol` relative (MicroPython parses decimals a
    unit in the last place off) and ints and floats never mixed."""
    if isinstance(expected, float) or isinstance(actual, float):
        return type(expected) is type(actual) and math.isclose(
            expected, actual, rel_tol=rel_tol, abs_tol=1e-12
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(same(expected[k], actual[k], rel_tol) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(same(a, b, rel_tol) for a, b in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def operations() -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for v in decode_vectors():
        ops.append(
            {
                "id": "decode " + vector_id(v),
                "op": "decode",
                "kind": v["kind"],
                "hex": payload_bytes(v).hex(),
            }
        )
    for v in load("encode"):
        ops.append(
            {
                "id": "encode " + vector_id(v),
                "op": "encode",
                "kind": v["kind"],
                "fields": v["fields"],
            }
        )
        if v["kind"] == "levels":
            ops.append({"id": "fast " + vector_id(v), "op": "encode_levels", "fields": v["fields"]})
    for v in load("topics"):
        ops.append({"id": "topic " + vector_id(v), "op": "topic", "topic": v["topic"]})
    return ops


def run_in_micropython(ops: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """What protocol/ does with each operation under the MicroPython unix port (one process)."""
    path = folder / "ops.jsonl"
    path.write_text("".join(json.dumps(op) + "\n" for op in ops))
    proc = upy.run(RUNNER, str(path), timeout=120)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(ops), proc.stdout.decode()[-2000:] + proc.stderr.decode(
        errors="replace"
    )
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def upy_results(
    upy_interpreter: str,  # noqa: F811  (the fixture imported above: one run per interpreter)
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    ops = operations()
    results = run_in_micropython(ops, tmp_path_factory.mktemp("vectors"))
    return {op["id"]: r for op, r in zip(ops, results, strict=True)}
