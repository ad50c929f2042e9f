"""gateway.report: levels after nudges vs after controls, checked against the raw records."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.policy import Control, LevelEvent, Nudge
from gateway.report import compute
from gateway.storage import Storage
from tools.cli import main

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
        self.storage.add_levels(batch)


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
    rows = [line.split("│")[1:3] for line in capsys.readouterr().out.splitlines() if "│" in line]
    assert [[c.strip() for c in r] for r in rows] == [["ns", "brighten"], ["ns", "dim"]]


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
