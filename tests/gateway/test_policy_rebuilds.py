"""The policy's fast rebuilds of its state stay in step with the dataclasses they build.

`_zone_with` and `_still_loud` build `ZoneState` and `Episode` by position on
every record; a field added, removed or moved in either would silently shift
the rest or fall back to its default.  These tests derive what they expect
from `dataclasses.fields()`, so such a change fails here first.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Any

import pytest

from gateway import policy


def _sentinels(cls: type) -> dict[str, Any]:
    """A distinct object per field, so a value that lands in another field is seen."""
    return {f.name: object() for f in dataclasses.fields(cls)}


def test_zone_with_keeps_every_field_in_its_place() -> None:
    given = _sentinels(policy.ZoneState)
    zs = policy.ZoneState(**given)
    same = policy._zone_with(zs)
    for name, value in given.items():
        assert getattr(same, name) is value, name
    changed: dict[str, Any] = {"sensors": object(), "loud": object(), "suppressed": object()}
    out = policy._zone_with(zs, **changed)
    for name, value in given.items():
        assert getattr(out, name) is changed.get(name, value), name


def test_still_loud_keeps_every_field_but_last_loud() -> None:
    zone_given = _sentinels(policy.ZoneState)
    episode_given = _sentinels(policy.Episode)
    ep = policy.Episode(**episode_given)
    zs = policy.ZoneState(**{**zone_given, "episode": ep})
    now = object()
    out = policy._still_loud(zs, ep, now)  # type: ignore[arg-type]  # a sentinel for the time
    for name, value in zone_given.items():
        if name != "episode":
            assert getattr(out, name) is value, name
    assert out.episode is not None
    for name, value in episode_given.items():
        assert getattr(out.episode, name) is (now if name == "last_loud" else value), name


_STATE_CLASSES = {
    name: obj
    for name, obj in vars(policy).items()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == policy.__name__
}


def _positional_calls() -> list[tuple[str, int, int]]:
    """(class, line, number of positional arguments) of each call in gateway/policy.py that
    builds one of its dataclasses with positional arguments."""
    tree = ast.parse(inspect.getsource(policy))
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _STATE_CLASSES
            and node.args
        ):
            assert not any(isinstance(a, ast.Starred) for a in node.args), (
                f"line {node.lineno}: {node.func.id}(*...) hides which field gets what"
            )
            calls.append((node.func.id, node.lineno, len(node.args)))
    return calls


def test_the_policy_builds_its_dataclasses_by_position_in_the_fast_paths() -> None:
    # the check below must see the calls it is there for
    built = {name for name, _, _ in _positional_calls()}
    assert {"ZoneState", "Episode", "SensorWindow"} <= built, built


@pytest.mark.parametrize("call", _positional_calls(), ids=lambda c: f"{c[0]}@{c[1]}")
def test_every_positional_construction_gives_every_field(call: tuple[str, int, int]) -> None:
    # with every field given, a field added or removed changes the count and fails
    # here, instead of taking its default or shifting the rest
    name, line, given = call
    fields = [f.name for f in dataclasses.fields(_STATE_CLASSES[name])]
    assert given == len(fields), (
        f"gateway/policy.py line {line} builds {name} from {given} positional arguments; "
        f"it has {len(fields)} fields ({', '.join(fields)}): give each in order, or use keywords"
    )
