"""protocol/strictjson.py agrees with CPython's strict `json` parser.

CPython's parser is the independent oracle: for any text nested at most
MAX_DEPTH deep, `valid` must accept exactly what `json.loads` accepts
(with NaN/Infinity refused)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import strictjson


def cpython_accepts(text: str) -> bool:
    def refuse(token: str) -> None:
        raise ValueError(token)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)

# characters that matter to the grammar, to mutate valid documents with
GRAMMAR = ' \t\n{}[],:"\\0123456789.eE+-tfnulrsaxNI\x01'


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_valid_documents_are_accepted(value: object, pretty: bool) -> None:
    text = json.dumps(value, indent=1 if pretty else None, ensure_ascii=False)
    assert strictjson.valid(text.encode()) is (depth(value) <= strictjson.MAX_DEPTH)


@settings(max_examples=400, deadline=None)
@given(json_values, st.data())
def test_mutated_documents_agree_with_cpython(value: object, data: st.DataObject) -> None:
    text = json.dumps(value, ensure_ascii=False)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(("insert", "delete", "replace")))
        c = data.draw(st.sampled_from(GRAMMAR))
        if action == "insert":
            text = text[:i] + c + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + c + text[i + 1 :]
    if text.count("[") + text.count("{") <= strictjson.MAX_DEPTH:
        assert strictjson.valid(text.encode()) is cpython_accepts(text), repr(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=GRAMMAR, max_size=12))
def test_short_random_texts_agree_with_cpython(text: str) -> None:
    assert strictjson.valid(text.encode()) is cpython_accepts(text), repr(text)


def test_depth_limit() -> None:
    limit = strictjson.MAX_DEPTH
    assert strictjson.valid(b"[" * limit + b"]" * limit)
    assert not strictjson.valid(b"[" * (limit + 1) + b"]" * (limit + 1))
    assert strictjson.valid(b'{"a":' * limit + b"1" + b"}" * limit)
    assert not strictjson.valid(b'{"a":' * (limit + 1) + b"1" + b"}" * (limit + 1))
