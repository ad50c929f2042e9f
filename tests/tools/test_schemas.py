"""tools/schemas.py: the JSON Schema files match protocol/ and agree with the shared vectors.

`jsonschema` is the independent judge: the generated files must be valid
draft 2020-12 schemas, accept every payload protocol/ accepts, and refuse
every refused payload whose fault a schema can express."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from protocol import docs, schema
from tests.protocol.conftest import decode_vectors, payload_bytes, vector_id
from tools import schemas

# Faults a JSON Schema cannot see: syntax and size (before any schema
# applies), unknown kinds, and rules between fields.
NOT_EXPRESSIBLE = {"bad_json", "too_large", "unknown_kind"}


def validator(kind: str) -> Draft202012Validator:
    doc = json.loads((schemas.DEFAULT_OUT / f"{kind}.schema.json").read_text())
    return Draft202012Validator(doc)


def integral_float_field(v: dict[str, Any]) -> bool:
    """True if the vector's offending field holds a float like 1.0 (an integer to JSON Schema)."""
    doc = json.loads(payload_bytes(v))
    value = doc.get(v.get("field", "")) if isinstance(doc, dict) else None
    return isinstance(value, float) and value.is_integer()


def expressible(v: dict[str, Any]) -> bool:
    # (JSON Schema's maxLength counts characters; protocol/ counts UTF-8 bytes)
    return v["ok"] or not (
        v["reason"] in NOT_EXPRESSIBLE
        or cross_field(v)
        or integral_float_field(v)
        or v.get("utf8_length", False)
    )


def cross_field(v: dict[str, Any]) -> bool:
    return (v["kind"], v.get("field")) in {
        ("levels", "t1"),
        ("summary", "t1"),
        ("summary", "l50"),
    }


def test_committed_files_match_protocol() -> None:
    assert schemas.stale(schemas.DEFAULT_OUT) == [], "run `hushlight schemas`"


@pytest.mark.parametrize("kind", schema.KINDS)
def test_files_are_valid_draft_2020_12(kind: str) -> None:
    doc = json.loads((schemas.DEFAULT_OUT / f"{kind}.schema.json").read_text())
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == schemas.DIALECT


VECTORS = [v for v in decode_vectors() if v["kind"] in schema.KINDS]
EXPRESSIBLE = [v for v in VECTORS if expressible(v)]


def test_most_vectors_are_expressible() -> None:
    # the exemptions above must stay exceptions
    assert len(EXPRESSIBLE) > 0.6 * len(VECTORS)


@pytest.mark.parametrize("v", EXPRESSIBLE, ids=vector_id)
def test_schema_agrees_with_the_vector(v: dict[str, Any]) -> None:
    errors = list(validator(v["kind"]).iter_errors(json.loads(payload_bytes(v))))
    if v["ok"]:
        assert errors == []
    else:
        assert errors, f"{v['name']} should be refused by the schema"


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schemas.main(["--out", str(tmp_path)]) == 0
    assert schemas.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "levels.schema.json").write_text("{}\n")
    assert schemas.main(["--out", str(tmp_path), "--check"]) == 1
    assert "levels.schema.json" in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("")
    assert schemas.main(["--out", str(f)]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_every_field_is_described() -> None:
    names = {str(f[schema.NAME]) for kind in schema.KINDS for f in schema.MESSAGES[kind][0]}
    assert names - set(docs.FIELD_DOCS) == set()
    assert set(docs.FIELD_DOCS) - names == set()  # no description of a field that is gone
