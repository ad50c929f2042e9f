"""The demo's street model: what it makes of the MQTT traffic, without a broker."""

from __future__ import annotations

import io
import re

import pytest

from protocol import payloads, topics
from tools.demo_view import Scene, Street, ZoneRule

T0 = 1_781_298_000.0


def _street() -> Street:
    return Street(
        "leuven",
        ("ns-01", "ns-02"),
        {"z": (("ns-01", "ns-02"), ("lamps",))},
        programme=70.0,
    )


def _state(street: Street, level: float | None, source: str, at: float) -> None:
    payload = payloads.encode_light_state(level, source, "c1" if source == "override" else None)
    street.on_message(topics.light_state("leuven", "lamps"), payload, at)


def test_light_minutes_are_the_time_away_from_the_programme() -> None:
    street = _street()
    _state(street, 70.0, "programme", T0)
    _state(street, 55.0, "override", T0 + 10)  # ramping down
    _state(street, 40.0, "override", T0 + 13)
    _state(street, 70.0, "programme", T0 + 73)  # back after 63 s away
    _state(street, 90.0, "override", T0 + 100)
    street.finish(T0 + 130)
    row = street.groups["lamps"]
    assert row.dimmed_s == 63.0
    assert row.brightened_s == 30.0
    # said once, in one line
    lines = [line for line in street.summary() if "min" in line]
    assert lines == [
        "light minutes away from the programme: lamps (z) dimmed 1.1 min and brightened 0.5 min"
    ]


def test_levels_peaks_and_nudges() -> None:
    street = _street()
    topic = topics.levels("leuven", "ns-02")
    for seq, lafmax in enumerate((65.0, 70.0, 71.5)):
        rec = payloads.encode_levels(seq, 1000 * seq, 1000 * seq + 1000, 60.0, lafmax, 70.0, [])
        street.on_message(topic, rec, T0)
    nudge = payloads.encode_nudge(
        "n1", "z", int(T0 * 1000), 72.5, "dim", {"nl": "Stil aub", "en": "Quiet please"}
    )
    street.on_message(topics.nudge("leuven", "z"), nudge, T0)
    row = street.rows["ns-02"]
    assert (row.records, row.peaks, row.lafmax) == (3, 2, 71.5)
    assert [(n.zone, n.kind, n.message) for n in street.nudges] == [("z", "dim", "Quiet please")]
    assert (
        "peaks (seconds with LAFmax >= 70 dB(A)), whole run: ns-01 0, ns-02 2" in street.summary()
    )


def test_bad_and_foreign_messages_are_counted_or_ignored() -> None:
    street = _street()
    street.on_message(topics.levels("leuven", "ns-01"), b'{"seq": "x"}', T0)
    street.on_message("hushlight/v1/leuven/sensors/ns-01/nonsense", b"{}", T0)
    street.on_message(topics.levels("other-site", "ns-01"), b"{}", T0)
    assert street.rejected == 2
    assert street.rows["ns-01"].records == 0


def test_zone_state_follows_the_override_and_its_expiry() -> None:
    street = _street()
    cmd = payloads.encode_light_set("c1", 40.0, 3.0, int(T0 + 60), "noise", "z")
    street.on_message(topics.light_set("leuven", "lamps"), cmd, T0)
    assert street.zone_state("z", T0 + 1).startswith("NUDGE dim 40% to ")
    assert street.zone_state("z", T0 + 61).startswith("watching")


def _draw(street: Street, now: float, width: int = 80) -> list[str]:
    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(street.render(now, "a group walks by, shouting", "note"))
    return capture.get().splitlines()


def _columns(lines: list[str]) -> list[list[int]]:
    """Where the table rules cross each line (the panel's own borders left out)."""
    marks = "┃│┡┩╇┼┏┓┳┗┛┻━"
    return [[i for i, c in enumerate(line[1:-1]) if c in marks] for line in lines]


@pytest.mark.parametrize("width", [80, 140])
def test_columns_keep_their_width_between_frames(width: int) -> None:
    street = _street()
    first = _draw(street, T0, width)
    for seq, (laeq, lafmax) in enumerate([(38.2, 40.1), (81.3, 104.7), (102.4, 110.0)]):
        rec = payloads.encode_levels(
            seq, int(T0 * 1000), int(T0 * 1000) + 1000, laeq, lafmax, laeq + 19.6, []
        )
        street.on_message(topics.levels("leuven", f"ns-0{1 + seq % 2}"), rec, T0)
    cmd = payloads.encode_light_set("c1", 40.0, 3.0, int(T0 + 60), "noise", "z")
    street.on_message(topics.light_set("leuven", "lamps"), cmd, T0)
    _state(street, 52.5, "override", T0 + 1)
    second = _draw(street, T0 + 2, width)
    # the tables (everything above the nudges line) are drawn on the same grid
    tables = next(i for i, line in enumerate(first) if "nudges" in line)
    assert _columns(first[:tables]) == _columns(second[:tables])
    # and nothing in them is cut short, on a terminal of 80 columns too
    assert not [line for line in second[:tables] if "…" in line]


PEAKS = ZoneRule("peaks", 70.0, 30.0, min_sensors=2, peaks_needed=4)
LAEQ = ZoneRule("laeq", 65.0, 30.0)
MUSIC = Scene("music from an open window", T0 + 100, T0 + 170)
CAR = Scene("a car passes", T0 + 200, T0 + 235)


def _night() -> Street:
    """Two zones sharing ns-02: 'pk' counts peaks, 'eq' measures LAeq."""
    return Street(
        "leuven",
        ("ns-01", "ns-02", "ns-03"),
        {"pk": (("ns-01", "ns-02"), ("lamps-1",)), "eq": (("ns-02", "ns-03"), ("lamps-2",))},
        programme=70.0,
        rules={"pk": PEAKS, "eq": LAEQ},
        scenes=(MUSIC, CAR),
    )


def _second(
    street: Street, sensor: str, t0: float, laeq: float, lafmax: float, lceq: float
) -> None:
    seq = int(t0 - T0)
    rec = payloads.encode_levels(seq, int(t0 * 1000), int(t0 * 1000) + 1000, laeq, lafmax, lceq, [])
    street.on_message(topics.levels("leuven", sensor), rec, t0 + 1)


def _nudge(street: Street, nudge_id: str, zone: str, at: float, laeq: float) -> None:
    payload = payloads.encode_nudge(nudge_id, zone, int(at * 1000), laeq, "dim", {"en": "Quiet"})
    street.on_message(topics.nudge("leuven", zone), payload, at)


def test_a_nudge_says_what_triggered_it_in_the_zone_terms() -> None:
    street = _night()
    for k in range(30):
        loud = k % 5 != 0  # 24 of the 30 seconds have a peak over 70 dB(A)
        for sensor in ("ns-01", "ns-02", "ns-03"):
            _second(street, sensor, T0 + k, 66.0 + k / 10, 74.0 if loud else 60.0, 68.0)
    _nudge(street, "pk-1", "pk", T0 + 30, 68.5)
    _nudge(street, "eq-1", "eq", T0 + 30, 68.5)
    peaks, laeq = (street.nudge_line(n) for n in street.nudges)
    # before the gateway's evidence comes: the demo's own count, marked as such
    assert "LAFmax peaks >= 70 dB(A) in 30 s: ns-01 24, ns-02 24" in peaks
    assert "needs 4 peaks in 30 s at 2 sensors" in peaks
    assert "[counted by the demo: the gateway's evidence is not in]" in peaks
    assert "LAeq" not in peaks  # the peaks zone's nudge is not described by an LAeq
    # the gateway's recorded evidence wins
    street.on_decisions(
        [
            {"type": "Override", "cmd_id": "c"},
            {"type": "Nudge", "nudge_id": "pk-1", "evidence": {"ns-01": 7.0, "ns-02": 5.0}},
            {"type": "Nudge", "nudge_id": "eq-1", "evidence": {"ns-03": 67.63}},
        ]
    )
    peaks, laeq = (street.nudge_line(n) for n in street.nudges)
    assert peaks.endswith(
        "pk: dim the lights: LAFmax peaks >= 70 dB(A) in 30 s: ns-01 7, ns-02 5 "
        "(needs 4 peaks in 30 s at 2 sensors)"
    )
    assert laeq.endswith(
        "eq: dim the lights: LAeq over 30 s >= 65 dB(A): ns-03 67.6 dB(A) "
        "(needs LAeq over 30 s >= 65 dB(A) at 1 sensor)"
    )
    summary = street.summary()
    assert f"  {peaks}" in summary and f"  {laeq}" in summary


def test_music_and_a_car_that_draw_no_nudge_are_explained() -> None:
    street = _night()
    for k in range(100, 170):  # bass-heavy music, loudest at ns-02
        for sensor, laeq in (("ns-01", 50.0), ("ns-02", 61.0), ("ns-03", 48.0)):
            _second(street, sensor, T0 + k, laeq, laeq + 2.5, laeq + 19.4)
    for k in range(170, 240):  # quiet, then a car: over 70 dB(A) for two seconds at each sensor
        for n, sensor in enumerate(("ns-01", "ns-02", "ns-03")):
            passing = 210 + 8 * n <= k < 212 + 8 * n
            laeq = 72.0 if passing else 45.0
            _second(street, sensor, T0 + k, laeq, laeq + 3.0, laeq + 2.0)
    music, car = (street.verdict(scene) for scene in street.scenes)
    assert music[0].endswith(": no nudge")
    assert "LCeq - LAeq up to +19.4 dB at ns-01" in music[1]  # the first of the equal ones
    assert "pk: LAFmax up to 63.5 dB(A), no peak >= 70 dB(A); needs 4 peaks" in music[2]
    assert music[3].startswith("  eq: LAeq over 30 s up to 61.0 dB(A)")
    assert music[3].endswith("needs LAeq over 30 s >= 65 dB(A) at 1 sensor")
    assert car[0].endswith(": no nudge") and len(car) == 3  # no bass line
    assert "pk: LAFmax up to 75.0 dB(A), but at most 2 peaks in 30 s at 2 sensors at once" in car[1]
    # 2 s at 72 dB(A) and 28 s at 45: 10 log10((2 * 10^7.2 + 28 * 10^4.5) / 30) = 60.5
    assert car[2].startswith("  eq: LAeq over 30 s up to 60.5 dB(A) (LAFmax up to 75.0 dB(A))")
    # the live view shows the latest part of the night that is over
    frame = "\n".join(_draw(street, CAR.stop + 40))
    assert "a car passes (" in frame and "music from" not in frame
    # a nudge sent while the car's sound fills the zone's window is the car's
    _nudge(street, "pk-9", "pk", T0 + 236, 70.0)
    car = street.verdict(CAR)
    assert "nudged pk (dim at" in car[0]
    assert len(car) == 2 and car[1].startswith("  eq:")
    assert street.summary()[-len(car) - 3 :][: len(car)] == [f"  {line}" for line in car]


def test_a_scene_verdict_names_its_nudged_zones_in_the_site_order() -> None:
    """The zones come in the site's order, whichever nudge the gateway sent first."""
    street = _night()
    _nudge(street, "eq-1", "eq", CAR.stop - 5, 68.0)
    _nudge(street, "pk-1", "pk", CAR.stop - 2, 71.0)
    [line] = street.verdict(CAR)
    assert re.search(r": nudged pk \(dim at [\d:]+\), eq \(dim at [\d:]+\)$", line), line


def test_the_peaks_column_counts_the_zone_window_and_says_so() -> None:
    street = _night()
    for k in range(5):
        _second(street, "ns-01", T0 + k, 70.0, 75.0, 72.0)
    now = _draw(street, T0 + 6)
    later = _draw(street, T0 + 40)  # the peaks have left the 30 s window
    # a two-line header: "peaks" over "30 s", and "peaks" over "total"
    top = next(i for i, line in enumerate(now) if "┃ peaks ┃ peaks ┃" in line)
    assert re.search(r"┃  30 s ┃ total ┃", now[top + 1])
    assert any("seconds with LAFmax >= 70 dB(A), in the last 30 s" in line for line in now)

    def ns01(lines: list[str]) -> tuple[str, str]:
        line = next(line for line in lines if "ns-01" in line)
        found = re.search(r"│ +(\d+) │ +(\d+) │", line)
        assert found is not None, line
        return found[1], found[2]

    assert ns01(now) == ("5", "5")
    assert ns01(later) == ("0", "5")


def test_the_plain_progress_line_keeps_lceq_and_its_columns() -> None:
    street = _night()
    quiet = street.progress(T0, "quiet street")
    _second(street, "ns-02", T0, 61.04, 63.0, 80.44)
    loud = street.progress(T0 + 1, "before the night: the street settles")
    assert "LAeq/LCeq 01   -/  - 02  61/ 80 03   -/  -" in loud
    assert quiet.index("LAeq/LCeq") == loud.index("LAeq/LCeq")
    assert len(quiet) == len(loud)


def test_the_summary_ends_with_the_next_steps() -> None:
    street = _night()
    steps = ["hushlight demo --keep   keep the logs", "hushlight report --db X"]
    lines = street.summary(steps)
    assert lines[-3:] == ["next:", f"  {steps[0]}", f"  {steps[1]}"]


def test_records_too_late_for_the_zone_windows_are_counted_and_explained() -> None:
    street = _night()  # zone windows of 30 s
    _second(street, "ns-01", T0, 50.0, 52.0, 55.0)  # comes in 1 s after its second
    for k in range(3):  # a backlog: seconds that come in 40 s after they ended
        rec = payloads.encode_levels(
            k, int((T0 + k) * 1000), int((T0 + k + 1) * 1000), 50.0, 52.0, 55.0, []
        )
        street.on_message(topics.levels("leuven", "ns-02"), rec, T0 + k + 41)
    assert (street.rows["ns-01"].late, street.rows["ns-02"].late) == (0, 3)
    [line] = [line for line in street.summary() if "too late" in line]
    assert line.startswith("records that came in more than 30 s after their second, too late")
    assert "windows: ns-02 3 (" in line and "--speed" in line
