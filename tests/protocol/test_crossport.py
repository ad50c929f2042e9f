"""Random damage to valid payloads: MicroPython and CPython must still agree.

The shared vectors are hand-picked; this adds a few thousand payloads made by
mutating the valid ones (grammar characters inserted, deleted or replaced,
numbers swapped for awkward spellings) and checks that protocol/ answers
the same on both Pythons, reason and field included.  The seed is fixed so a
failure reproduces."""

from __future__ import annotations

import math
import random
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest

from protocol import payloads
from protocol.errors import ProtocolError
from tests.protocol.conftest import decode_vectors, payload_bytes, run_in_micropython, same

GRAMMAR = ' \t\n{}[],:"\\0123456789.eE+-tfnulrsaxNI\x01\u00e9'
AWKWARD_NUMBERS = [
    "-0",
    "0.0",
    "1e999",
    "-1e999",
    "1E2",
    "1e-7",
    "160.000001",
    "9007199254740993",
    "1.5e1",
    "00",
    "1.",
    ".5",
    "+1",
    "0x10",
    "NaN",
    "Infinity",
    "1_0",
]
COUNT = 3000
# A single-precision MicroPython (the device) holds a decoded number as the float32
# nearest it, within half a unit in its last place of CPython's double: 160.000001
# has no float32 of its own and reads as 160.0 there.
FLOAT32_REL = 2.0**-23


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(text))
        action = rng.random()
        if action < 0.3:
            text = text[:i] + rng.choice(GRAMMAR) + text[i:]
        elif action < 0.55:
            text = text[:i] + text[i + 1 :]
        elif action < 0.8:
            text = text[:i] + rng.choice(GRAMMAR) + text[i + 1 :]
        else:
            # replace the number that starts nearest after i
            j = next((k for k in range(i, len(text)) if text[k] in "-0123456789"), -1)
            if j >= 0:
                k = j + 1
                while k < len(text) and text[k] in "0123456789.eE+-":
                    k += 1
                text = text[:j] + rng.choice(AWKWARD_NUMBERS) + text[k:]
    return text


def cases() -> list[tuple[str, str]]:
    rng = random.Random(20261123)
    valid = [v for v in decode_vectors() if v["ok"] and "payload" in v and "@" not in v["payload"]]
    out = []
    for _ in range(COUNT):
        v = rng.choice(valid)
        out.append((v["kind"], mutate(rng, payload_bytes(v).decode())))
    return out


def cpython(kind: str, text: str) -> dict[str, Any]:
    try:
        return {"ok": True, "fields": payloads.decode(kind, text.encode())}
    except ProtocolError as e:
        return {"ok": False, "reason": e.reason, "field": e.field}


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, upy_interpreter: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """The cases decoded by `upy_interpreter` (made once for each interpreter)."""
    todo = cases()
    ops = [{"op": "decode", "kind": k, "hex": t.encode().hex()} for k, t in todo]
    found = run_in_micropython(ops, tmp_path_factory.mktemp("crossport"))
    return [(k, t, r) for (k, t), r in zip(todo, found, strict=True)]


def test_micropython_and_cpython_agree_on_damaged_payloads(
    results: list[tuple[str, str, dict[str, Any]]], upy_interpreter: str
) -> None:
    rel_tol = FLOAT32_REL if upy_interpreter == "device" else 1e-12
    disagreements = []
    for kind, text, upy_result in results:
        mine = cpython(kind, text)
        if mine["ok"] != upy_result["ok"]:
            agree = False
        elif mine["ok"]:
            agree = same(mine["fields"], upy_result["fields"], rel_tol)
        else:
            agree = (mine["reason"], mine["field"]) == (upy_result["reason"], upy_result["field"])
        if not agree:
            disagreements.append((kind, text, mine, upy_result))
    assert disagreements == []


def test_the_damage_is_varied(results: list[tuple[str, str, dict[str, Any]]]) -> None:
    # the generator must produce both accepted and refused payloads, and many reasons
    outcomes = {r["reason"] if not r["ok"] else "ok" for _, _, r in results}
    assert {"ok", "bad_json", "bad_type", "missing_field"} <= outcomes
    assert len(outcomes) >= 6, outcomes


def number_texts() -> list[str]:
    """JSON numbers of every shape, near the double's limits and its ties too."""
    rng = random.Random(20261205)
    texts = ["0", "-0", "160.000001", "1e999", "-1e-400", "4.9e-324", "2.4703282292062327e-324"]
    texts += ["2.4703282292062328e-324", "1.7976931348623157e308", "1.7976931348623159e308"]
    texts += ["9007199254740993", "0.1", "1.12500000000000001", "2.2250738585072011e-308"]
    for _ in range(1500):
        k = rng.random()
        if k < 0.3:
            texts.append(repr(rng.uniform(-200, 200)))
        elif k < 0.5:
            texts.append(f"{rng.randint(-(10**20), 10**20)}e{rng.randint(-345, 320)}")
        elif k < 0.7:
            texts.append(f"{rng.uniform(1, 10):.{rng.randint(0, 25)}f}E{rng.randint(-330, 309)}")
        else:
            # halfway between two doubles, exactly: it must round to the even one
            m = rng.getrandbits(52) | 1 << 52
            half = Decimal(2 * m + 1) * Decimal(2) ** rng.randint(-80, 40)
            texts.append(str(half))
    return [t for t in texts if "inf" not in t]


def test_micropython_reads_numbers_as_the_double_cpython_parses(tmp_path: Path) -> None:
    with localcontext() as exact:
        exact.prec = 200  # every halfway point above is exact at this precision
        texts = number_texts()
    found = run_in_micropython([{"op": "double", "text": t} for t in texts], tmp_path)
    for text, r in zip(texts, found, strict=True):
        x = float(text)
        if math.isinf(x):
            want = None
        else:
            n, d = x.as_integer_ratio()
            want = [n * (1 << 1100) // d, -1100]  # the value, scaled to a common exponent
        got = r["double"]
        if got is not None:
            got = [got[0] << (got[1] + 1100), -1100]
        assert got == want, text


def encode_cases() -> list[dict[str, Any]]:
    """Levels and statuses with random numbers, ties (x.xx5) among them."""
    rng = random.Random(1123)
    ops = []
    for i in range(1500):
        level = rng.choice([rng.uniform(-5, 165), round(rng.uniform(0, 160), 3), i * 0.005])
        ops.append(
            {
                "op": "encode_levels",
                "fields": {
                    "seq": i,
                    "t0": 1700000000000 + 1000 * i,
                    "t1": 1700000001000 + 1000 * i,
                    "laeq": level,
                    "lafmax": rng.uniform(0, 160),
                    "lceq": rng.randint(-1, 161),
                    "flags": rng.randint(0, 15),
                },
            }
        )
        ops.append(
            {
                "op": "encode",
                "kind": "status",
                "fields": {
                    "state": "online",
                    "fw": "0.1.0",
                    "uptime_s": i,
                    "free_mem": 100000 - i,
                    "dsp_load": rng.choice([rng.random(), i * 0.00005]),
                    "buffered": 0,
                    "calibration_offset_db": rng.uniform(-20, 20),
                },
            }
        )
    return ops


def test_micropython_and_cpython_encode_the_same_bytes(tmp_path: Path) -> None:
    ops = encode_cases()
    found = run_in_micropython(ops, tmp_path)
    for op, r in zip(ops, found, strict=True):
        if op["op"] == "encode_levels":
            mine = payloads.encode_levels(**op["fields"])
        else:
            mine = payloads.encode(op["kind"], op["fields"])
        assert r == {"ok": True, "payload": mine.decode()}, op
