"""How `hushlight ota` runs its phases (tools.ota.Rollout): halts, skips, one wave at a time.

The release server here is a script standing in for the sensors: each offer
plays the statuses the test gave for that sensor through the roll-out's
status callback, as `tools.ota_serve.ReleaseServer` does with real ones (the
end-to-end test, test_rollout.py, runs the real thing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from tools import release
from tools.fleet import BrokerLogin
from tools.ota import Report, Rollout, Screen, SensorState, plan

V = "0.2.0"
ZONES = {"north": ["n-1", "n-2", "n-3"], "south": ["s-1", "s-2", "s-3"]}
OLD = SensorState(online=True, fw="0.1.0", ota="idle")
GOOD = ("staging", "staged", "trial", "confirmed")


class Script:
    """Plays each offered sensor's statuses; records which offers were open at once."""

    def __init__(
        self, rollout: Rollout, steps: Mapping[str, Sequence[str]], offline: Sequence[str] = ()
    ) -> None:
        self.rollout = rollout
        self.steps = steps
        self.statuses: dict[str, dict[str, Any]] = {s: {"state": "offline"} for s in offline}
        self.offered: list[str] = []
        self.open: set[str] = set()
        self.most_open = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def offer(self, sensor: str, version: str) -> None:
        self.offered.append(sensor)
        self.open.add(sensor)
        self.most_open = max(self.most_open, len(self.open))
        self.tasks.append(asyncio.create_task(self._play(sensor, version)))

    async def _play(self, sensor: str, version: str) -> None:
        fw = "0.1.0"
        for state in self.steps.get(sensor, GOOD):
            await asyncio.sleep(0.01)
            if state == "trial":
                fw = version
            if state == "rolled_back":
                fw = "0.1.0"
            status = {"state": "online", "fw": fw, "ota": state, "ota_version": version}
            if state in ("refused", "rolled_back"):
                status["ota_reason"] = f"{sensor} says no"
            if state in ("confirmed", "refused", "rolled_back"):
                self.open.discard(sensor)
            self.rollout._on_status(sensor, status)

    def progress(self, sensor: str) -> tuple[int, int]:
        return (0, 0)

    async def cancel(self, sensor: str) -> None:
        pass


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[release.Bundle]:
    work = tmp_path_factory.mktemp("ota-phases")
    key, _ = release.generate_key(work, bits=2048)
    path = release.build_release(key, V, work, to=release.target("device"))
    yield release.read_bundle(path)


def _run(
    bundle: release.Bundle,
    steps: Mapping[str, Sequence[str]],
    *,
    offline: Sequence[str] = (),
    canary: int | Sequence[str] = 1,
) -> tuple[Report, Script]:
    fleet = {s: OLD for members in ZONES.values() for s in members}
    the_plan = plan(V, fleet, ZONES, canary=canary, max_share=0.34)
    login = BrokerLogin("mqtt://127.0.0.1:1", "127.0.0.1", 1, None, None, None)
    screen = Screen(len(the_plan.sensors), bundle.total, bars=False, to_stderr=False)
    rollout = Rollout(login, "test", bundle, the_plan, fleet, screen)
    script = Script(rollout, steps, offline)

    async def go() -> None:
        await rollout._phases(script)
        await asyncio.gather(*script.tasks)

    asyncio.run(go())
    return rollout.report, script


def _outcomes(report: Report) -> dict[str, str | None]:
    return {s: t.outcome or t.state for s, t in report.tracks.items()}


def test_every_sensor_confirms_one_wave_at_a_time(bundle: release.Bundle) -> None:
    report, script = _run(bundle, {})
    assert report.ok and report.halted is None
    assert set(_outcomes(report).values()) == {"confirmed"}
    # the plan's first phase went first, and no more were open at once than one wave
    phases = [p.sensors for p in report.phases]
    assert script.offered == [s for wave in phases for s in wave]
    assert script.most_open == max(len(w) for w in phases) == 2


def test_a_refusing_canary_halts_before_any_wave(bundle: release.Bundle) -> None:
    report, script = _run(bundle, {"n-1": ("staging", "refused")})
    assert script.offered == ["n-1"]
    assert report.halted == "canary n-1 refused: n-1 says no"
    assert not report.ok
    assert {s: o for s, o in _outcomes(report).items() if s != "n-1"} == {
        s: "waiting" for s in report.tracks if s != "n-1"
    }
    assert "not started 5" in report.line()


def test_a_refusal_in_a_wave_does_not_stop_the_next(bundle: release.Bundle) -> None:
    report, script = _run(bundle, {"n-2": ("staging", "refused")})
    assert report.halted is None and not report.ok
    assert sorted(script.offered) == sorted(report.tracks)
    assert _outcomes(report)["n-2"] == "refused"
    assert report.count("confirmed") == len(report.tracks) - 1


def test_a_rollback_in_a_wave_stops_the_waves_after_it(bundle: release.Bundle) -> None:
    report, script = _run(bundle, {"n-2": ("staging", "staged", "trial", "rolled_back")})
    wave = next(p for p in report.phases if "n-2" in p.sensors)
    later = [s for p in report.phases[report.phases.index(wave) + 1 :] for s in p.sensors]
    assert later, "the plan must have waves after the one of n-2 for this test"
    assert report.halted == f"n-2 ({wave.name}) rolled back: n-2 says no"
    assert not set(later) & set(script.offered)
    # the rest of n-2's own wave finished
    assert all(_outcomes(report)[s] == "confirmed" for s in wave.sensors if s != "n-2")


def test_a_sensor_offline_at_its_turn_is_not_offered(bundle: release.Bundle) -> None:
    report, script = _run(bundle, {}, offline=["s-3"])
    assert "s-3" not in script.offered
    assert _outcomes(report)["s-3"] == "went_offline"
    assert report.count("confirmed") == len(report.tracks) - 1
    assert report.halted is None and not report.ok
    assert "went offline 1" in report.line()
