"""The demo's street model: what it makes of the MQTT traffic, without a broker."""

from __future__ import annotations

from protocol import payloads, topics
from tools.demo_view import Street

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
    assert "light minutes dimmed: 1.1" in street.summary()


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
    assert "peaks (LAFmax >= 70 dB(A)): ns-01 0, ns-02 2" in street.summary()


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
    assert street.zone_state("z", T0 + 1).startswith("NUDGE: dim to 40%")
    assert street.zone_state("z", T0 + 61).startswith("watching")
