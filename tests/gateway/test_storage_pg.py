"""gateway.storage on a real PostgreSQL: the SQLite tests of the API again, and what sharing adds.

The tests of `test_storage` that use the storage only through its API are
imported here, so pytest runs them a second time with this module's `db`, a
`Storage` on a scratch PostgreSQL database.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from gateway.config import parse_config
from gateway.errors import StateError, StorageError
from gateway.leases import LeaseStore
from gateway.policy import Nudge, Override, initial_state
from gateway.report import compute
from gateway.storage import Storage
from gateway.storage.postgres import translate
from tests.gateway.postgres import scratch_database
from tests.gateway.stored import fold_and_write
from tests.gateway.test_storage import (
    T0,
    _decisions,
    rec,
)
from tests.gateway.test_storage import (
    test_a_new_subscription_past_the_limit_is_not_stored as test_a_new_subscription_past_the_limit_is_not_stored,  # noqa: E501
)
from tests.gateway.test_storage import (
    test_calibration_minutes_left_out_and_bad_numbers_skipped as test_calibration_minutes_left_out_and_bad_numbers_skipped,  # noqa: E501
)
from tests.gateway.test_storage import (
    test_calls_from_several_threads_are_serialised as test_calls_from_several_threads_are_serialised,  # noqa: E501
)
from tests.gateway.test_storage import (
    test_decisions_and_episodes as test_decisions_and_episodes,
)
from tests.gateway.test_storage import (
    test_minute_rows_fold_records_across_batches as test_minute_rows_fold_records_across_batches,
)
from tests.gateway.test_storage import (
    test_prune_drops_what_is_older_than_retention as test_prune_drops_what_is_older_than_retention,
)
from tests.gateway.test_storage import (
    test_subscriptions_crud as test_subscriptions_crud,
)
from tools.cli import main


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture
def db(pg_url: str) -> Iterator[Storage]:
    with Storage(pg_url, peak_threshold_db=70.0) as s:
        yield s


def raw(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_two_gateways_write_one_store_and_a_reader_sees_both(pg_url: str) -> None:
    override, nudge = _decisions()
    assert isinstance(override, Override) and isinstance(nudge, Nudge)
    with Storage(pg_url) as a, Storage(pg_url) as b:
        # each gateway folds every record; a minute written early by one (20 records) and
        # whole by the other (60) holds the 60, not their sum
        records = [rec("s1", T0 + i + 1, 60.0, 65.0, 61.0) for i in range(60)]
        fold_and_write(a, records[:20])
        a.flush()
        fold_and_write(b, records)
        fold_and_write(b, [rec("s2", T0 + 1, 50.0, 55.0, 51.0)])
        b.flush()
        a.flush()  # again, with nothing new: the larger row stays
        a.record_decision(nudge, T0)
        b.record_override_sent(override)
    with Storage(pg_url, read_only=True) as reader:
        rows = reader.minute_levels(["s1", "s2"], T0, T0 + 60)
        assert [(r.sensor, r.n, r.dur) for r in rows] == [("s1", 60, 60.0), ("s2", 1, 1.0)]
        assert [e.id for e in reader.episodes()] == [nudge.nudge_id]
        assert reader.active_overrides(T0 + 1) == [override]


def test_each_gateway_keeps_its_own_policy_state(pg_url: str) -> None:
    cfg = parse_config(
        {"site": {"id": "x"}, "zones": [{"id": "z", "sensors": ["a"], "light_groups": ["g"]}]}
    )
    with Storage(pg_url) as a, Storage(pg_url) as b:
        a.state_id, b.state_id = "gw-a", "gw-b"
        one, two = initial_state(cfg, seed=1), initial_state(cfg, seed=2)
        assert one != two
        a.save_state(one, T0)
        b.save_state(two, T0)
        assert (a.load_state(cfg), b.load_state(cfg)) == (one, two)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE policy_state SET json = '{\"version\": 1}' WHERE id = 'gw-a'")
        with pytest.raises(StateError, match=r"postgresql://127\.0\.0\.1:5432/\w+: saved policy"):
            a.load_state(cfg)


def test_a_reader_refuses_a_database_without_hushlight(pg_url: str) -> None:
    with pytest.raises(StorageError, match=r"not a hushlight database .*give the storage\.url"):
        Storage(pg_url, read_only=True)
    assert raw(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    Storage(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match=r"newer hushlight \(schema 99"):
        Storage(pg_url)


def test_an_unreachable_server_is_a_sentence_without_the_password() -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError, match="cannot connect") as caught:
        Storage(url)
    assert "s3cret" not in str(caught.value)
    assert "postgresql://127.0.0.1:1/nowhere" in str(caught.value)


def test_a_lost_connection_is_a_storage_error_then_comes_back(db: Storage, pg_url: str) -> None:
    db.record_notification("n1", "mqtt", "t", T0)
    name = pg_url.rsplit("/", 1)[1]
    raw(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )
    with pytest.raises(StorageError):
        db.record_notification("n2", "mqtt", "t", T0)
    db.record_notification("n3", "mqtt", "t", T0)  # the next transaction connects again
    got = raw(pg_url, "SELECT nudge_id FROM notifications ORDER BY id")
    assert got == [("n1",), ("n3",)]


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT 1 FROM t WHERE a = ? AND b = ?", "SELECT 1 FROM t WHERE a = %s AND b = %s"),
        (
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            "INSERT INTO meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ),
        (
            "INSERT OR IGNORE INTO subscription_zones (endpoint, zone) VALUES (?, ?)",
            "INSERT INTO subscription_zones (endpoint, zone) VALUES (%s, %s)"
            " ON CONFLICT (zone, endpoint) DO NOTHING",
        ),
        (
            "SET lafmax = max(lafmax, excluded.lafmax)",
            "SET lafmax = greatest(lafmax, excluded.lafmax)",
        ),
        ("BEGIN IMMEDIATE", "BEGIN"),
    ],
)
def test_sqlite_statements_become_postgresql_ones(sqlite: str, postgres: str) -> None:
    assert translate(sqlite) == postgres


def test_an_upsert_on_a_table_without_a_known_key_is_refused() -> None:
    with pytest.raises(StorageError, match="no conflict key known for table other"):
        translate("INSERT OR REPLACE INTO other (a) VALUES (?)")


def test_stored_json_is_the_same_as_on_sqlite(db: Storage, pg_url: str) -> None:
    _, nudge = _decisions()
    assert isinstance(nudge, Nudge)
    db.record_decision(nudge, T0)
    ((data,),) = raw(pg_url, "SELECT data FROM decisions")
    assert json.loads(str(data))["nudge_id"] == nudge.nudge_id


def test_the_report_reads_a_postgresql_store(
    db: Storage, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, nudge = _decisions()
    assert isinstance(nudge, Nudge)
    db.record_decision(nudge, T0)
    fold_and_write(db, [rec("a", T0 + i + 1, 60.0, 65.0, 61.0) for i in range(120)])
    db.flush()
    direct = compute(db)
    assert direct["rows"], "the nudge is in the report"
    assert main(["report", "--db", pg_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(direct))
    assert main(["report", "--db", pg_url.rsplit("/", 1)[0] + "/no_such_db"]) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_gateways_starting_together_create_the_tables_once(pg_url: str) -> None:
    # without the schema lock, CREATE TABLE IF NOT EXISTS run at once fails on the catalogue
    # (a unique violation in pg_type) in nearly every such start
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            Storage(pg_url).close()
            LeaseStore(pg_url).close()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
