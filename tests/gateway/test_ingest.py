"""Ingest without a broker: classification, dedup window, lateness, liveness, bounded memory."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SiteConfig, load_config
from gateway.events import LevelEvent, LightStateEvent, StatusEvent, SummaryRecord
from gateway.ingest import WINDOW, Ingest, SeqWindow
from gateway.metrics import UNKNOWN, Metrics
from protocol import payloads, topics
from tests.gateway.conftest import SITE, write_config

NOW = 1_750_000_000.0


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    return load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))


@pytest.fixture
def ingest(config: SiteConfig) -> Ingest:
    return Ingest(config, Metrics())


def levels(seq: int, t1: float = NOW, laeq: float = 55.0) -> bytes:
    ms = int(t1 * 1000)
    return payloads.encode_levels(
        seq=seq, t0=ms - 1000, t1=ms, laeq=laeq, lafmax=laeq + 2, lceq=laeq + 4, flags=0
    )


def send(ingest: Ingest, sensor: str, body: bytes, now: float = NOW) -> list[object]:
    return [a.event for a in ingest.handle(topics.levels(SITE, sensor), body, now)]


def test_a_record_becomes_an_event_in_seconds(ingest: Ingest) -> None:
    out = ingest.handle(topics.levels(SITE, "s1"), levels(7, NOW - 0.2, 63.21), NOW)
    online, record = out
    assert online.event == StatusEvent("s1", True, NOW)
    ev = record.event
    assert isinstance(ev, LevelEvent) and record.live
    assert (ev.sensor, ev.seq, ev.laeq, ev.lafmax, ev.lceq) == ("s1", 7, 63.21, 65.21, 67.21)
    assert ev.t1 == pytest.approx(NOW - 0.2) and ev.t0 == pytest.approx(NOW - 1.2)
    assert ev.received_at == NOW and ev.flags == ()
    assert ingest.metrics.records_accepted.get("s1") == 1 and ingest.online == 1


def test_duplicates_are_dropped_and_counted(ingest: Ingest) -> None:
    assert send(ingest, "s1", levels(1))
    assert send(ingest, "s1", levels(1)) == []
    assert send(ingest, "s2", levels(1))  # the same seq from another sensor is news
    assert send(ingest, "s1", levels(0, NOW - 1))  # out of order but new
    assert send(ingest, "s1", levels(0, NOW - 1)) == []
    assert ingest.metrics.duplicates.get("s1") == 2


def test_late_records_are_kept_but_not_live(ingest: Ingest) -> None:
    old = ingest.handle(topics.levels(SITE, "s1"), levels(1, NOW - 600), NOW)
    assert [a.live for a in old] == [True, False]  # status event, then the late record
    assert ingest.metrics.late.get("s1") == 1
    fresh = ingest.handle(topics.levels(SITE, "s1"), levels(2, NOW - 1), NOW)
    assert [a.live for a in fresh] == [True]


def test_records_from_the_future_are_refused(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    assert send(ingest, "s1", levels(1, NOW + 3600)) == []
    assert ingest.metrics.rejects.get("future_time", "s1") == 1
    # the log says when in the site's time, ISO 8601, not in epoch seconds
    when = dt.datetime.fromtimestamp(NOW + 3600, ZoneInfo("Europe/Brussels"))
    assert f"ends at {when.isoformat(timespec='seconds')}, 3600.0 s in the future" in caplog.text


def test_a_wiped_counter_restarts_the_window(ingest: Ingest) -> None:
    assert send(ingest, "s1", levels(100_000, NOW - 100))
    # seq far below the window but later in time: the sensor lost its counter
    assert send(ingest, "s1", levels(0, NOW))
    assert ingest.metrics.seq_resets.get("s1") == 1
    # an old replay (far below, earlier in time) is not a reset
    assert send(ingest, "s1", levels(90_000, NOW - 5000)) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "bad_json"),
        (b'{"seq": 1}', "missing_field"),
        (b"x" * 5000, "too_large"),
        (levels(1).replace(b'"laeq":55', b'"laeq":"55"'), "bad_type"),
        (levels(1).replace(b'"laeq":55', b'"laeq":NaN'), "bad_json"),
        (levels(1).replace(b'"laeq":55', b'"laeq":900'), "out_of_range"),
    ],
)
def test_bad_payloads_are_counted_by_protocol_reason(
    ingest: Ingest, body: bytes, reason: str
) -> None:
    assert send(ingest, "s1", body) == []
    assert ingest.metrics.rejects.get(reason, "s1") == 1


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (f"hushlight/v1/{SITE}/sensors/stranger/levels", "unknown_sensor"),
        (f"hushlight/v1/{SITE}/sensors/s1/levels/extra", "unknown_topic"),
        (f"hushlight/v1/{SITE}/sensors/S1!/levels", "bad_id"),
        (f"hushlight/v1/{SITE}/sensors/s1/noise", "unknown_topic"),
        (f"hushlight/v1/{SITE}/lights/other/state", "unknown_group"),
        ("something/else", "unknown_topic"),
    ],
)
def test_strays_are_counted_without_a_sensor_label(ingest: Ingest, topic: str, reason: str) -> None:
    assert ingest.handle(topic, levels(1), NOW) == []
    assert ingest.metrics.rejects.get(reason, UNKNOWN) == 1


def test_a_flood_of_unknown_sensors_does_not_grow_memory(ingest: Ingest) -> None:
    for i in range(5000):
        ingest.handle(f"hushlight/v1/{SITE}/sensors/x{i}/levels", levels(i), NOW)
    assert len(ingest.sensors) == 3
    assert ingest.metrics.unknown_sensors.total() == 5000
    assert len(ingest.metrics.rejects.values) == 1
    assert len(ingest._known) == 3 * 4 + 1


def test_liveness_from_status_last_will_and_silence(ingest: Ingest, config: SiteConfig) -> None:
    status = topics.status(SITE, "s2")
    online = json.dumps(
        {"state": "online", "fw": "1", "uptime_s": 1, "free_mem": 1, "dsp_load": 0.1,
         "buffered": 0, "calibration_offset_db": 0}
    ).encode()  # fmt: skip
    assert [a.event for a in ingest.handle(status, online, NOW)] == [StatusEvent("s2", True, NOW)]
    assert ingest.handle(status, online, NOW + 1) == []  # no change, no event
    will = b'{"state":"offline"}'
    assert [a.event for a in ingest.handle(status, will, NOW + 2)] == [
        StatusEvent("s2", False, NOW + 2)
    ]
    # records bring it back; silence takes it away again, once
    assert send(ingest, "s2", levels(1, NOW + 3), NOW + 3)[0] == StatusEvent("s2", True, NOW + 3)
    stale = config.stale_after_s
    assert ingest.sweep(NOW + 3 + stale) == []
    gone = ingest.sweep(NOW + 3 + stale + 0.1)
    assert gone == [StatusEvent("s2", False, NOW + 3 + stale + 0.1)]
    assert ingest.sweep(NOW + 100 + stale) == []
    causes = {k[2] for k in ingest.metrics.sensor_transitions.values}
    assert causes == {"status", "records", "silence"}


def test_light_state(ingest: Ingest) -> None:
    body = b'{"level":40,"cmd_id":"main-1-x.1","source":"override"}'
    [acc] = ingest.handle(topics.light_state(SITE, "g1"), body, NOW)
    assert acc.event == LightStateEvent("g1", 40.0, "main-1-x.1", "override", NOW)
    assert ingest.handle(topics.light_state(SITE, "g1"), b'{"level":40}', NOW) == []
    assert ingest.metrics.rejects.get("missing_field", UNKNOWN) == 1


def test_subscriptions_are_wide_enough_to_count_strays(ingest: Ingest) -> None:
    assert ingest.subscriptions() == [
        f"hushlight/v1/{SITE}/sensors/#",
        f"hushlight/v1/{SITE}/lights/+/state",
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * WINDOW), min_size=1, max_size=300))
def test_seq_window_matches_a_set_that_remembers_everything(seqs: list[int]) -> None:
    # time grows with seq, so nothing below the window looks like a counter reset
    window = SeqWindow()
    seen: set[int] = set()
    for seq in seqs:
        verdict = window.accept(seq, float(seq), float(seq + 1))
        top = max(seen, default=-1)
        if seq <= top - WINDOW:
            assert verdict == "too_old"  # forgotten: refused whether seen or not
        elif seq in seen:
            assert verdict == "duplicate"
        else:
            assert verdict is None
            seen.add(seq)


def test_summaries_are_kept_for_storage_and_never_trigger(ingest: Ingest) -> None:
    t1 = int(NOW * 1000)
    body = payloads.encode_summary(
        seq=3, t0=t1 - 60_000, t1=t1, laeq=61.5, lafmax=80.25, lamin=40.0, l10=66.0, l50=58.0,
        l90=45.5, lceq=70.0, peaks=4,
    )  # fmt: skip
    [acc] = ingest.handle(topics.summary(SITE, "s1"), body, NOW)
    assert not acc.live
    assert acc.event == SummaryRecord(
        "s1", 3, NOW - 60, NOW, 61.5, 80.25, 40.0, 66.0, 58.0, 45.5, 70.0, 4
    )
    assert ingest.handle(topics.summary(SITE, "s1"), b'{"seq":1}', NOW) == []
    assert ingest.metrics.rejects.get("missing_field", "s1") == 1
