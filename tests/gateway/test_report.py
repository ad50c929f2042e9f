"""gateway.report: the reader checked against the raw records, the verdict printed plainly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.policy import Control, LevelEvent, Nudge
from gateway.report import compute, describe, read_episodes
from gateway.storage import Storage
from gateway.verdict import Effect, EpisodeLevels, Verdict, measures, verdicts
from tests.gateway.stored import fold_and_write
from tools.cli import main
from tools.pilot import simulate, store

T0 = 1_795_213_800.0  # a minute boundary
PEAK_DB = 70.0


class Street:
    """A database built with the real storage API, remembering every raw record."""

    def __init__(self, path: Path) -> None:
        self.storage = Storage(path, peak_threshold_db=PEAK_DB)
        self.records: list[LevelEvent] = []
        self.episodes: list[Nudge | Control] = []
        self.rng = random.Random(4)

    def episode(
        self, zone: str, at: float, kind: str, control: bool, sensors: tuple[str, ...], mean: float
    ) -> None:
        eid = f"{zone}-{len(self.episodes) + 1}"
        d: Nudge | Control
        if control:
            d = Control(zone, eid, at, 80.0, kind, {sensors[0]: 80.0}, sensors)
        else:
            d = Nudge(zone, eid, at, 80.0, kind, {"en": "hush"}, {sensors[0]: 80.0}, sensors)
        self.storage.record_decision(d, at)
        self.episodes.append(d)
        # 13 minutes of 1 s records from just before the episode, around `mean`
        batch = []
        for i in range(-30, 12 * 60):
            for s in sensors:
                laeq = mean + self.rng.uniform(-8, 8)
                t0 = at + i
                batch.append(
                    LevelEvent(s, i, t0, t0 + 1, laeq, laeq + self.rng.uniform(0, 12), laeq, (), 0)
                )
        self.records += batch
        fold_and_write(self.storage, batch)


def expected(street: Street, minutes: int = 10) -> dict[tuple[str, str], dict[str, object]]:
    """Independent computation from the raw records, not from the stored minute rows."""
    per: dict[tuple[str, str, bool], list[tuple[float, float]]] = {}
    for ep in street.episodes:
        lo, hi = ep.at, ep.at + 60 * minutes
        recs = [
            r for r in street.records if r.sensor in ep.sensors and lo <= (r.t0 // 60) * 60 < hi
        ]
        group = per.setdefault((ep.zone, ep.kind, isinstance(ep, Control)), [])
        if not recs:
            group.append((math.nan, math.nan))
            continue
        laeq = 10 * math.log10(sum(10 ** (r.laeq / 10) for r in recs) / len(recs))
        peaks = sum(r.lafmax >= PEAK_DB for r in recs) / len({r.sensor for r in recs})
        group.append((laeq, peaks))
    out: dict[tuple[str, str], dict[str, object]] = {}
    for (zone, kind, control), values in per.items():
        have = [v for v in values if not math.isnan(v[0])]
        row = out.setdefault((zone, kind), {})
        row["controls" if control else "nudges"] = {
            "count": len(values),
            "with_data": len(have),
            "laeq": sum(v[0] for v in have) / len(have) if have else None,
            "peaks": sum(v[1] for v in have) / len(have) if have else None,
        }
    return out


@pytest.fixture
def street(tmp_path: Path) -> Street:
    s = Street(tmp_path / "h.db")
    hour = 3600.0
    # nudges are followed by quieter minutes than controls, by kind
    s.episode("ns", T0 + 30, "dim", False, ("a", "b"), 62.0)
    s.episode("ns", T0 + 1 * hour, "dim", False, ("a", "b"), 64.0)
    s.episode("ns", T0 + 2 * hour + 17, "dim", True, ("a", "b"), 70.0)
    s.episode("ns", T0 + 3 * hour, "brighten", False, ("a", "b"), 66.0)
    s.episode("ns", T0 + 4 * hour, "brighten", True, ("a", "b"), 68.0)
    s.episode("ns", T0 + 5 * hour, "brighten", True, ("a", "b"), 72.0)
    s.episode("om", T0 + 6 * hour, "dim", False, ("c",), 75.0)
    # a nudge whose sensors stored nothing afterwards
    nudge = Nudge("om", "om-x", T0 + 9 * hour, 80.0, "dim", {}, {"c": 80.0}, ("c",))
    s.storage.record_decision(nudge, nudge.at)
    s.episodes.append(nudge)
    return s


def test_report_matches_an_independent_computation(street: Street) -> None:
    report = compute(street.storage)
    assert report["peak_threshold_db"] == PEAK_DB
    want = expected(street)
    assert [(r["zone"], r["kind"]) for r in report["rows"]] == sorted(want)
    for row in report["rows"]:
        exp = want[(row["zone"], row["kind"])]
        for side in ("nudges", "controls"):
            got = row[side]
            if side not in exp:
                assert got["count"] == 0 and got["mean_laeq_after"] is None
                continue
            e = exp[side]
            assert isinstance(e, dict)
            assert got["count"] == e["count"] and got["with_data"] == e["with_data"]
            if e["laeq"] is None:
                assert got["mean_laeq_after"] is None
            else:
                assert got["mean_laeq_after"] == pytest.approx(e["laeq"], abs=1e-3)
                assert got["mean_peaks_after"] == pytest.approx(e["peaks"], abs=1e-3)
        if "nudges" in exp and "controls" in exp:
            n, c = exp["nudges"], exp["controls"]
            assert isinstance(n, dict) and isinstance(c, dict)
            assert row["difference"]["laeq_db"] == pytest.approx(n["laeq"] - c["laeq"], abs=2e-3)
            assert row["difference"]["peaks"] == pytest.approx(n["peaks"] - c["peaks"], abs=2e-3)
        else:
            assert row["difference"] == {"laeq_db": None, "peaks": None}
    # the data were built so nudges are followed by quieter minutes
    dim = next(r for r in report["rows"] if (r["zone"], r["kind"]) == ("ns", "dim"))
    assert dim["difference"]["laeq_db"] < 0


def test_minutes_and_filters(street: Street) -> None:
    want5 = expected(street, minutes=5)
    report = compute(street.storage, minutes=5)
    dim = next(r for r in report["rows"] if (r["zone"], r["kind"]) == ("ns", "dim"))
    e = want5[("ns", "dim")]["nudges"]
    assert isinstance(e, dict)
    assert dim["nudges"]["mean_laeq_after"] == pytest.approx(e["laeq"], abs=1e-3)
    only_om = compute(street.storage, zone="om")
    assert [(r["zone"], r["kind"]) for r in only_om["rows"]] == [("om", "dim")]
    om = only_om["rows"][0]["nudges"]
    e = expected(street)[("om", "dim")]["nudges"]
    assert isinstance(e, dict)
    assert (om["count"], om["with_data"]) == (2, 1)
    assert om["mean_laeq_after"] == pytest.approx(e["laeq"], abs=1e-3)
    late = compute(street.storage, since=T0 + 4 * 3600)
    counts = {
        (r["zone"], r["kind"]): (r["nudges"]["count"], r["controls"]["count"]) for r in late["rows"]
    }
    assert counts == {("ns", "brighten"): (0, 2), ("om", "dim"): (2, 0)}


def test_cli_json_and_table(street: Street, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(street.storage.path)
    street.storage.close()
    with Storage(path) as s:
        direct = compute(s)
    assert main(["report", "--db", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(direct))
    assert main(["report", "--db", path, "--since", "2026-11-20T00:00+01:00", "--zone", "ns"]) == 0
    out = capsys.readouterr().out
    heads = [line.split(":")[0] for line in out.splitlines() if line.startswith("ns, ")]
    assert heads == ["ns, brighten", "ns, dim"]
    # three episodes of a kind are too few for an interval, and the report says so
    assert "ns, dim: 2 nudges vs 1 control on 1 night" in out
    assert out.count("not enough data yet: need about") == 2


def test_cli_empty_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    Storage(empty).close()
    assert main(["report", "--db", str(empty)]) == 0
    assert "No nudges or controls recorded" in capsys.readouterr().out
    assert main(["report", "--db", str(tmp_path / "none.db")]) == 2
    assert "--db" in capsys.readouterr().err
    assert main(["report", "--db", str(empty), "--since", "yesterday"]) == 2
    assert "--since 'yesterday': expected an ISO 8601" in capsys.readouterr().err
    assert main(["report", "--db", str(empty), "--minutes", "0"]) == 2
    assert "--minutes 0" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    assert main(["report", "--db", str(junk)]) == 2
    assert "not a usable SQLite database" in capsys.readouterr().err


def test_the_report_speaks_the_sites_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tz = ZoneInfo("Europe/Brussels")

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")

    path = tmp_path / "site.db"
    with Storage(path, timezone="Europe/Brussels") as s:
        for i, at in enumerate((T0, T0 + 7200)):
            nudge = Nudge("ns", f"ns-{i}", at, 80.0, "dim", {"en": "x"}, {"a": 80.0}, ("a",))
            s.record_decision(nudge, at)
    assert main(["report", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Episodes from {iso(T0)} to {iso(T0 + 7200)} (times in Europe/Brussels)" in out, out
    # --since without an offset is the site's local time, as the operator reads a clock there
    local = dt.datetime.fromtimestamp(T0 + 3600, tz).replace(tzinfo=None).isoformat()
    assert main(["report", "--db", str(path), "--since", local, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["since"] == T0 + 3600 and report["since_iso"] == iso(T0 + 3600)
    assert report["first_episode_at"] == T0 + 7200
    assert report["first_episode_at_iso"] == iso(T0 + 7200)
    assert report["timezone"] == "Europe/Brussels"


def test_the_minutes_before_match_the_raw_records(street: Street) -> None:
    """The reader's minutes before a trigger, against the raw records (the trigger's minute in)."""
    report = compute(street.storage, minutes=5)
    read = {e.id: e for e in read_episodes(street.storage, minutes=5)}
    for ep in street.episodes:
        lo, hi = ep.at - 300, ep.at
        recs = [
            r for r in street.records if r.sensor in ep.sensors and lo <= (r.t0 // 60) * 60 < hi
        ]
        eid = ep.control_id if isinstance(ep, Control) else ep.nudge_id
        got = measures(read[eid].before)
        if not recs:
            assert got is None
            continue
        laeq = 10 * math.log10(sum(10 ** (r.laeq / 10) for r in recs) / len(recs))
        peaks = sum(r.lafmax >= PEAK_DB for r in recs) / len({r.sensor for r in recs})
        assert got is not None
        assert got[0] == pytest.approx(laeq, abs=1e-6) and got[1] == pytest.approx(peaks)
    assert report["minutes_before"] == 5


def store_pilot(path: Path, episodes: list[EpisodeLevels]) -> list[EpisodeLevels]:
    """Write simulated episodes through the storage API; return those written."""
    with Storage(path, peak_threshold_db=PEAK_DB, timezone="Europe/Brussels") as s:
        return store(s, episodes)


def test_the_verdict_of_a_simulated_pilot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pilot.db"
    pilot = store_pilot(path, simulate(21, nights=20, rate_ratio=0.6, shift_db=-2.0))
    want = verdicts(pilot)[0]  # straight from the simulated minutes, not from the database
    assert want.peaks and want.laeq and want.peaks.estimate and want.laeq.estimate is not None
    assert main(["report", "--db", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["rows"][0]
    assert (got["zone"], got["kind"]) == ("ns", "dim")
    assert got["analysed"]["nudges"] == want.nudges_analysed
    assert got["analysed"]["controls"] == want.controls_analysed
    for measure, w in (("peaks", want.peaks), ("laeq", want.laeq)):
        for key in ("estimate", "low", "high", "p_value"):
            assert got[measure][key] == pytest.approx(getattr(w, key), rel=1e-3, abs=1e-3)
    assert main(["report", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    fewer = round(100 * (1 - want.peaks.estimate))
    assert want.peaks.high is not None and want.peaks.low is not None
    ci = f"{round(100 * (1 - want.peaks.high))}-{round(100 * (1 - want.peaks.low))} %"
    assert f"{fewer} % fewer peaks in the next 10 min, 95 % CI {ci}" in out, out
    assert f"ns, dim: {want.nudges} nudges vs {want.controls} controls on " in out
    assert f"{-want.laeq.estimate:.1f} dB quieter in the next 10 min" in out
    assert "balance: nudges and controls at the same hours" in out
    assert "Episodes from 2026-11-0" in out and "(times in Europe/Brussels)" in out
    # a 1 % effect is beyond these nights: the report asks for more
    assert main(["report", "--db", str(path), "--target-peaks", "1"]) == 0
    assert "not enough data yet to detect 1 % fewer peaks: need about" in capsys.readouterr().out


def test_csv_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pilot.db"
    pilot = store_pilot(path, simulate(22, nights=16, rate_ratio=0.7))
    want = verdicts(pilot)
    assert main(["report", "--db", str(path), "--csv", "--plots", str(tmp_path / "png")]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(r["zone"], r["measure"]) for r in rows] == [("ns", "peaks"), ("ns", "laeq")]
    assert want[0].peaks and want[0].peaks.estimate
    assert float(rows[0]["estimate"]) == pytest.approx(want[0].peaks.estimate, rel=1e-3)
    assert int(rows[0]["nudges"]) == want[0].nudges
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["effects.png", "verdict-ns-dim.png"]
    for name in pngs:
        data = (tmp_path / "png" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert "wrote " in captured.err  # out stays pure CSV


def test_period_and_option_errors(street: Street, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(street.storage.path)
    street.storage.close()
    until = dt.datetime.fromtimestamp(T0 + 4 * 3600, dt.UTC).isoformat()
    assert main(["report", "--db", path, "--until", until, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    counts = {
        (r["zone"], r["kind"]): r["nudges"]["count"] + r["controls"]["count"] for r in got["rows"]
    }
    assert counts == {("ns", "dim"): 3, ("ns", "brighten"): 1}
    assert got["until"] == T0 + 4 * 3600
    for argv, message in (
        (["--until", "2026-11-01", "--since", "2026-11-02"], "is not after --since"),
        (["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus': not an IANA time zone"),
        (["--target-peaks", "0"], "--target-peaks 0: expected a %"),
        (["--target-db", "-1"], "--target-db -1: expected dB above 0"),
        (["--plots", "/proc/no/such"], "--plots /proc/no/such: cannot create the folder"),
    ):
        assert main(["report", "--db", path, *argv]) == 2
        assert message in capsys.readouterr().err


def test_wording_of_effects_either_way() -> None:
    def effect(measure: str, est: float, low: float | None, high: float | None) -> Effect:
        target = 0.8 if measure == "peaks" else 1.0
        return Effect(measure, est, low, high, 0.31, 1.0, 1.0, 0.1, 0.75, target, 0, "")

    def text(peaks: Effect, laeq: Effect) -> str:
        v = Verdict("ns", "brighten", 6, 5, 6, 5, 4, peaks, laeq, None, 0, ())
        return "\n".join(describe(v, 5))

    out = text(effect("peaks", 1.08, 0.95, 1.2), effect("laeq", 0.4, -0.5, 1.3))
    assert "ns, brighten: 6 nudges vs 5 controls on 4 nights" in out
    assert "8 % more peaks in the next 5 min, 95 % CI 20 % more to 5 % fewer, p = 0.31" in out
    assert "0.4 dB louder in the next 5 min, 95 % CI 1.3 dB louder to 0.5 dB quieter" in out
    assert "detectable with these episodes (80 % power): 25 % fewer peaks, 0.8 dB" in out
    out = text(effect("peaks", 1.5, 1.1, None), effect("laeq", 2.0, 1.0, 3.0))
    assert "50 % more peaks in the next 5 min, 95 % CI 10-? % more" in out
    assert "2.0 dB louder in the next 5 min, 95 % CI 1.0-3.0 dB louder" in out
