"""gateway.storage: minute levels, decisions, commands, notifications, subscriptions, state."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.storage
from gateway.config import parse_config
from gateway.errors import StateError, StorageError
from gateway.policy import (
    Control,
    EpisodeEnded,
    LevelEvent,
    Nudge,
    Override,
    Release,
    SensorWindow,
    TriggerSuppressed,
    initial_state,
    step,
)
from gateway.storage import SCHEMA_VERSION, Storage, SummaryRecord
from tests.gateway.stored import delivered, fold_and_write

T0 = 1_795_213_800.0  # a minute boundary (divisible by 60)


def rec(sensor: str, t1: float, laeq: float, lafmax: float, lceq: float, *flags: str) -> LevelEvent:
    return LevelEvent(sensor, 0, t1 - 1, t1, laeq, lafmax, lceq, flags, t1)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Storage]:
    with Storage(tmp_path / "h.db", peak_threshold_db=70.0) as s:
        yield s


def test_minute_rows_fold_records_across_batches(db: Storage) -> None:
    assert T0 % 60 == 0
    first = [rec("a", T0 + i + 1, 50.0 + i, 60.0 + i, 55.0 + i) for i in range(30)]
    second = [rec("a", T0 + i + 1, 50.0 + i, 60.0 + i, 55.0 + i) for i in range(30, 60)]
    later = [rec("a", T0 + 61, 90.0, 95.0, 91.0), rec("b", T0 + 1, 40.0, 45.0, 41.0)]
    assert fold_and_write(db, first) == 30
    assert fold_and_write(db, second + later) == 32
    rows = db.minute_levels(["a", "b"], T0, T0 + 120)
    assert [(r.sensor, r.minute, r.n) for r in rows] == [
        ("a", T0, 60),
        ("b", T0, 1),
        ("a", T0 + 60, 1),
    ]
    a = rows[0]
    levels = [50.0 + i for i in range(60)]
    assert a.laeq == pytest.approx(10 * math.log10(sum(10 ** (x / 10) for x in levels) / 60))
    assert a.lceq == pytest.approx(10 * math.log10(sum(10 ** ((x + 5) / 10) for x in levels) / 60))
    assert a.lafmax == 60.0 + 59
    assert a.peaks == sum(1 for x in levels if x + 10 >= 70.0)
    assert a.dur == 60.0
    # the window is half-open and per sensor
    assert db.minute_levels(["a"], T0 + 60, T0 + 120) == [rows[2]]
    assert db.minute_levels([], T0, T0 + 120) == []


def test_a_minute_is_written_when_the_next_starts(tmp_path: Path) -> None:
    """Rows are held while their minute is current; a crash loses at most that minute."""
    path = tmp_path / "h.db"
    s = Storage(path)
    fold_and_write(s, [rec("a", T0 + 1, 50.0, 55.0, 51.0)])

    def on_disk() -> list[tuple[int, int]]:
        with sqlite3.connect(path) as raw:
            return raw.execute("SELECT minute, n FROM levels_minute ORDER BY minute").fetchall()

    assert on_disk() == []
    fold_and_write(s, [rec("a", T0 + 61, 50.0, 55.0, 51.0)])
    assert on_disk() == [(T0, 1)]
    fold_and_write(s, [rec("a", T0 + 2, 50.0, 55.0, 51.0)])  # late, for the written minute
    fold_and_write(s, [rec("a", T0 + 121, 50.0, 55.0, 51.0)])
    assert on_disk() == [(T0, 2), (T0 + 60, 1)]
    s.close()
    assert on_disk() == [(T0, 2), (T0 + 60, 1), (T0 + 120, 1)]


def test_calibration_minutes_left_out_and_bad_numbers_skipped(db: Storage) -> None:
    fold_and_write(
        db, [rec("a", T0 + 1, 94.0, 94.0, 94.0, "calibrating"), rec("a", T0 + 2, 50.0, 55.0, 51.0)]
    )
    assert db.minute_levels(["a"], T0, T0 + 60) == []
    (row,) = db.minute_levels(["a"], T0, T0 + 60, include_calibrating=True)
    assert row.calibrating == 1 and row.n == 2
    bad = [
        rec("a", T0 + 3, math.nan, 1.0, 1.0),
        rec("a", T0 + 4, 1.0, math.inf, 1.0),
        rec("a", T0 + 5, 1e308, 1.0, 1.0),
        rec("a", T0 + 6, 50.0, 50.0, -1e9),
        rec("a", math.nan, 50.0, 50.0, 50.0),
        rec("a", 1e300, 50.0, 50.0, 50.0),
        rec("a", -5.0, 50.0, 50.0, 50.0),
    ]
    assert fold_and_write(db, bad) == 0


def test_summaries_replace_a_repeated_minute(db: Storage) -> None:
    s = SummaryRecord("a", 1, T0, T0 + 60, 60.0, 80.0, 40.0, 65.0, 55.0, 45.0, 66.0, 3)
    db.add_summaries([s, s])
    db.add_summaries(
        [SummaryRecord("a", 2, T0, T0 + 60, 61.0, 80.0, 40.0, 65.0, 55.0, 45.0, 66.0, 4)]
    )
    with sqlite3.connect(db.path) as raw:
        assert raw.execute("SELECT seq, laeq, peaks FROM summaries").fetchall() == [(2, 61.0, 4)]


def _decisions() -> list[object]:
    cfg = parse_config(
        {
            "site": {"id": "x"},
            "zones": [
                {"id": "z", "sensors": ["a", "b"], "light_groups": ["g"], "schedule": "00:00-24:00"}
            ],
        }
    )
    state = initial_state(cfg)
    _, out = step(cfg, state, rec("a", T0, 90.0, 95.0, 90.0), T0)
    return list(out)


def test_decisions_and_episodes(db: Storage) -> None:
    override, nudge = _decisions()
    assert isinstance(override, Override) and isinstance(nudge, Nudge)
    db.record_decision(override, T0)
    db.record_decision(nudge, T0)
    control = Control("z", "z-2-x", T0 + 900, 80.0, "dim", {"a": 80.0}, ("a", "b"))
    db.record_decision(control, T0 + 900)
    db.record_decision(TriggerSuppressed("z", T0 + 950, "cooldown", 81.0), T0 + 950)
    db.record_decision(EpisodeEnded("z", nudge.nudge_id, T0 + 600, "quiet", False), T0 + 600)
    assert db.has_nudge(nudge.nudge_id) and db.has_nudge("z-2-x") and not db.has_nudge("nope")
    recent = db.recent_decisions(10)
    assert [d["type"] for d in recent] == [
        "EpisodeEnded",
        "TriggerSuppressed",
        "Control",
        "Nudge",
        "Override",
    ]
    assert recent[3]["evidence"] == {"a": 90.0} and recent[3]["message"] == dict(nudge.message)
    assert db.recent_decisions(1)[0]["type"] == "EpisodeEnded"
    eps = db.episodes()
    assert [(e.id, e.control, e.sensors) for e in eps] == [
        (nudge.nudge_id, False, ("a", "b")),
        ("z-2-x", True, ("a", "b")),
    ]
    assert (eps[0].ended_at, eps[0].end_reason) == (T0 + 600, "quiet")
    assert [e.id for e in db.episodes(since=T0 + 1)] == ["z-2-x"]
    assert db.episodes(zone="other") == []
    # recording the same nudge again (a replay) does not duplicate the episode
    db.record_decision(nudge, T0 + 1)
    assert len(db.episodes()) == 2


def test_commands_acks_and_active_overrides(db: Storage) -> None:
    override, _ = _decisions()
    assert isinstance(override, Override)
    db.record_override_sent(override)
    assert db.active_overrides(T0 + 1) == [override]
    assert db.active_overrides(override.expires_at) == []  # expired by itself
    assert db.record_override_acked(override.cmd_id, T0 + 1)
    assert db.record_override_acked(override.cmd_id, T0 + 5)  # first ack kept
    assert not db.record_override_acked("unknown", T0)
    with sqlite3.connect(db.path) as raw:
        assert raw.execute("SELECT acked_at FROM commands").fetchall() == [(T0 + 1,)]
    release = Release(
        "z", override.group, override.cmd_id + "r", "quiet", T0 + 10, override.episode
    )
    db.record_override_sent(release)
    assert db.active_overrides(T0 + 11) == []


def test_notifications(db: Storage) -> None:
    db.record_notification("n1", "webpush", "https://push/1", T0, ok=False, detail="410 Gone")
    assert not delivered(db, "n1", "webpush")
    db.record_notification("n1", "mqtt", "topic", T0)
    assert delivered(db, "n1", "mqtt") and delivered(db, "n1", "mqtt", "topic")
    assert not delivered(db, "n1", "mqtt", "other")


def test_subscriptions_crud(db: Storage) -> None:
    keys = {"p256dh": "BK", "auth": "au"}
    db.add_subscription("https://push/1", keys, ["z1", "z2"], T0)
    db.add_subscription("https://push/2", keys, ["z2"], T0 + 1)
    assert [s.endpoint for s in db.subscriptions_for_zone("z2")] == [
        "https://push/1",
        "https://push/2",
    ]
    sub = db.subscriptions_for_zone("z1")[0]
    assert sub.keys == keys and sub.zones == ("z1", "z2") and sub.last_push_at is None
    db.mark_pushed("https://push/1", T0 + 5)
    sub1 = db.subscription("https://push/1")
    assert sub1 is not None and sub1.last_push_at == T0 + 5
    # re-subscribing replaces the zones
    db.add_subscription("https://push/1", keys, ["z3"], T0 + 2)
    assert db.subscriptions_for_zone("z1") == []
    assert db.remove_subscription("https://push/1")
    assert not db.remove_subscription("https://push/1")
    assert db.subscriptions_for_zone("z3") == [] and db.subscription("https://push/1") is None


def test_a_new_subscription_past_the_limit_is_not_stored(db: Storage) -> None:
    keys = {"p256dh": "BK", "auth": "au"}
    assert db.add_subscription("https://push/1", keys, ["z1"], T0, limit=2)
    assert db.add_subscription("https://push/2", keys, ["z1"], T0, limit=2)
    assert not db.add_subscription("https://push/3", keys, ["z1"], T0, limit=2)
    assert db.subscription("https://push/3") is None
    # the same endpoint again replaces its zones, limit or not
    assert db.add_subscription("https://push/2", keys, ["z2"], T0 + 1, limit=2)
    sub = db.subscription("https://push/2")
    assert sub is not None and sub.zones == ("z2",)
    assert len(db.subscriptions_for_zone("z1")) == 1


def test_state_round_trip_and_damage(db: Storage) -> None:
    cfg = parse_config(
        {"site": {"id": "x"}, "zones": [{"id": "z", "sensors": ["a"], "light_groups": ["g"]}]}
    )
    assert db.load_state(cfg) is None
    state = initial_state(cfg, seed=42)
    db.save_state(state, T0)
    assert db.load_state(cfg) == state
    state, out = step(cfg, state, rec("a", T0, 90.0, 95.0, 90.0), T0)
    assert out and state.zones["z"].sensors["a"].recent
    db.save_state(state, T0 + 1)
    loaded = db.load_state(cfg)
    # everything but the sliding windows, which refill from fresh records
    zone = state.zones["z"]
    a = zone.sensors["a"]
    windowless = dataclasses.replace(zone, sensors={"a": SensorWindow(a.online, a.last_seen)})
    assert loaded == dataclasses.replace(state, zones={"z": windowless})
    with sqlite3.connect(db.path) as raw:
        raw.execute("UPDATE policy_state SET json = '{\"version\": 1}'")
    with pytest.raises(StateError, match=r"h\.db: saved policy state is damaged"):
        db.load_state(cfg)


def test_prune_drops_what_is_older_than_retention(db: Storage) -> None:
    override, nudge = _decisions()
    assert isinstance(override, Override) and isinstance(nudge, Nudge)
    db.record_decision(nudge, T0)
    db.record_override_sent(override)
    db.record_notification(nudge.nudge_id, "mqtt", "t", T0)
    fold_and_write(db, [rec("a", T0 + 1, 50.0, 55.0, 51.0), rec("a", T0 + 3601, 50.0, 55.0, 51.0)])
    db.add_subscription("https://push/1", {"auth": "x"}, ["z"], T0)
    # the override is still in force until it expires: kept until then
    assert db.prune(T0 + 60) == 4  # minute row, decision, episode, notification
    assert db.active_overrides(T0 + 1) == [override]
    assert db.prune(override.expires_at + 1) == 1
    assert [r.minute for r in db.minute_levels(["a"], 0, T0 + 7200)] == [T0 + 3600]
    assert not db.has_nudge(nudge.nudge_id) and db.recent_decisions() == []
    assert db.subscription("https://push/1") is not None


def test_file_is_wal_versioned_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Storage(path) as s:
        fold_and_write(s, [rec("a", T0 + 1, 50.0, 55.0, 51.0)])
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with Storage(path) as s:
        assert len(s.minute_levels(["a"], T0, T0 + 60)) == 1


def test_read_only_reads_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Storage(path, peak_threshold_db=65.0) as s:
        fold_and_write(s, [rec("a", T0 + 1, 50.0, 55.0, 51.0)])
    path.chmod(0o444)
    try:
        with Storage(path, read_only=True) as r:
            assert r.peak_threshold_db == 65.0  # as written, whatever the default
            assert [row.n for row in r.minute_levels(["a"], T0, T0 + 60)] == [1]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                r.record_notification("n", "mqtt", "t", T0)
    finally:
        path.chmod(0o644)
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StorageError, match="not a hushlight database"):
        Storage(empty, read_only=True)
    with pytest.raises(StorageError, match="check it exists and is readable"):
        Storage(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()


def test_newer_or_foreign_files_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="written by a newer hushlight"):
        Storage(newer)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(StorageError, match="holds other tables"):
        Storage(foreign)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        Storage(junk)
    with pytest.raises(StorageError, match="cannot open the database"):
        Storage(tmp_path / "missing-dir" / "h.db")


def test_calls_from_several_threads_are_serialised(db: Storage) -> None:
    errors: list[BaseException] = []

    def writer(sensor: str) -> None:
        try:
            for i in range(50):
                fold_and_write(db, [rec(sensor, T0 + i + 1, 60.0, 65.0, 61.0)])
                db.recent_decisions(1)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("a", "b", "c", "d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = db.minute_levels(["a", "b", "c", "d"], T0, T0 + 60)
    assert sorted((r.sensor, r.n) for r in rows) == [("a", 50), ("b", 50), ("c", 50), ("d", 50)]


def test_a_minute_is_written_in_short_transactions(tmp_path: Path) -> None:
    """A decision recorded meanwhile waits for one chunk, not for the whole minute."""
    with Storage(tmp_path / "h.db") as s:
        s.fold_levels([rec(f"s{i}", T0 + 1, 50.0, 55.0, 51.0) for i in range(10)])
        assert not s.minutes_due()  # the minute is still the newest
        s.fold_levels([rec("s0", T0 + 61, 50.0, 55.0, 51.0)])
        assert s.minutes_due()
        statements: list[str] = []
        conn = s._db
        assert isinstance(conn, sqlite3.Connection)
        conn.set_trace_callback(statements.append)
        assert s.write_minutes(chunk=3) == 10
        conn.set_trace_callback(None)
        assert statements.count("COMMIT") == 4  # 3 + 3 + 3 + 1 rows
        assert not s.minutes_due()
        assert len(s.minute_levels([f"s{i}" for i in range(10)], T0, T0 + 60)) == 10


def test_a_failed_minute_write_keeps_its_rows_and_what_came_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    sensors = [f"s{i}" for i in range(7)]
    with Storage(path) as s:
        s.fold_levels([rec(x, T0 + 1, 50.0, 55.0, 51.0) for x in sensors])
        s.fold_levels([rec("s0", T0 + 61, 50.0, 55.0, 51.0)])
        # the disk refuses sensor s4's row: its chunk (s4, s5) fails, the earlier are kept
        s._db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON levels_minute WHEN NEW.sensor = 's4' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        with pytest.raises(sqlite3.Error, match="disk says no"):
            s.write_minutes(chunk=2)
        with sqlite3.connect(path) as raw:
            stored = raw.execute("SELECT sensor FROM levels_minute ORDER BY sensor").fetchall()
        assert stored == [("s0",), ("s1",), ("s2",), ("s3",)]
        # a late record for the failed row joins it in memory
        s.fold_levels([rec("s4", T0 + 2, 60.0, 65.0, 61.0)])
        s._db.execute("DROP TRIGGER refuse")
        s.flush()
        rows = {r.sensor: r for r in s.minute_levels(sensors, T0, T0 + 60)}
    assert sorted(rows) == sensors and all(rows[x].n == 1 for x in sensors if x != "s4")
    s4 = rows["s4"]
    assert (s4.n, s4.dur, s4.lafmax) == (2, 2.0, 65.0)
    assert s4.laeq == pytest.approx(10 * math.log10((10**5.0 + 10**6.0) / 2))
    assert s4.lceq == pytest.approx(10 * math.log10((10**5.1 + 10**6.1) / 2))


def test_bulk_writes_copy_the_wal_into_the_file(tmp_path: Path) -> None:
    """The state save checkpoints by itself, so no later commit (a decision's) has to."""
    path = tmp_path / "h.db"
    text = json.dumps({"pad": "x" * 2_000_000})
    with Storage(path) as s:
        s.save_state_text(text, T0)
        # copied into the database file already, not only appended to the WAL
        assert path.stat().st_size > len(text)
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT json FROM policy_state").fetchone()[0] == text


def test_a_second_writer_on_the_same_database_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    first = Storage(path)
    with pytest.raises(StorageError) as err:
        Storage(path)
    text = str(err.value)
    assert f"{path} is in use by another gateway (pid {os.getpid()} on " in text, text
    assert "give this one its own storage.path" in text
    # a reader (the report) is never refused
    with Storage(path, read_only=True) as reader:
        assert reader.episodes() == []
    first.close()
    Storage(path).close()


def test_the_summary_table_keeps_the_fields_of_a_summary_record(db: Storage) -> None:
    with sqlite3.connect(db.path) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(summaries)")]
    assert columns == [f.name for f in dataclasses.fields(SummaryRecord)]


def test_no_class_of_the_storage_package_is_a_room_too_big() -> None:
    package = Path(gateway.storage.__file__).parent
    sizes = {
        f"{module.name}:{node.name}": (node.end_lineno or node.lineno) - node.lineno + 1
        for module in package.glob("*.py")
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    }
    assert "__init__.py:Storage" in sizes
    assert {name: n for name, n in sizes.items() if n > 300} == {}
