"""tools/rabbit_accounts.py: a sensor's broker account as RabbitMQ definitions.

The accounts are tried against real RabbitMQ nodes in tests/cluster; these
tests check the file itself and the rules it writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from protocol import topics
from tools import cli, rabbit_accounts
from tools.errors import UsageError


def test_the_password_hash_is_rabbitmqs_salted_sha256() -> None:
    hashed = rabbit_accounts.hash_password("open sesame")
    raw = base64.b64decode(hashed)
    salt = raw[: rabbit_accounts.SALT_BYTES]
    assert raw[len(salt) :] == hashlib.sha256(salt + b"open sesame").digest()
    assert rabbit_accounts.check_password("open sesame", hashed)
    assert not rabbit_accounts.check_password("open sesame!", hashed)
    assert rabbit_accounts.hash_password("open sesame") != hashed  # a fresh salt each time


def test_a_sensor_may_write_its_own_topics_and_read_its_config_only() -> None:
    defs = rabbit_accounts.sensor_definitions("leuven", "ns-01", "x")
    (perm,) = defs["topic_permissions"]
    assert perm["exchange"] == "amq.topic"

    def key(topic: str) -> str:
        return rabbit_accounts.routing_key(topic)

    for own in (topics.levels, topics.summary, topics.status):
        assert re.search(perm["write"], key(own("leuven", "ns-01")))
    for other in (
        topics.levels("leuven", "ns-02"),
        topics.levels("gent", "ns-01"),
        topics.config("leuven", "ns-01"),
        topics.light_set("leuven", "g-1"),
        topics.levels("leuven", "ns-01") + ".x",
        "x" + key(topics.levels("leuven", "ns-01")),
    ):
        assert not re.search(perm["write"], key(other)), other
    assert re.search(perm["read"], key(topics.config("leuven", "ns-01")))
    assert not re.search(perm["read"], key(topics.config("leuven", "ns-02")))
    assert not re.search(perm["read"], key(topics.sensors_wildcard("leuven", "config")))
    # updates over the air: its own offers and chunks in, its own gets out
    for leaf in ("offer", "chunk"):
        assert re.search(perm["read"], key(topics.ota("leuven", "ns-01", leaf)))
        assert not re.search(perm["read"], key(topics.ota("leuven", "ns-02", leaf)))
        assert not re.search(perm["write"], key(topics.ota("leuven", "ns-01", leaf)))
    assert re.search(perm["write"], key(topics.ota("leuven", "ns-01", "get")))
    assert not re.search(perm["write"], key(topics.ota("leuven", "ns-02", "get")))
    assert not re.search(perm["read"], key(topics.ota("leuven", "ns-01", "get")))

    (access,) = defs["permissions"]
    queue = "mqtt-subscription-leuven-ns-01qos1"
    assert re.search(access["configure"], queue)
    assert not re.search(access["configure"], "mqtt-subscription-leuven-ns-02qos1")


def test_provisioning_again_replaces_the_sensors_account(tmp_path: Path) -> None:
    defs = tmp_path / "defs.json"

    def provision(sensor: str) -> str:
        out = tmp_path / f"{sensor}.json"
        args = ["provision", "--out", str(out), "--id", sensor, "--site", "leuven"]
        args += ["--wifi-ssid", "s", "--wifi-password", "p", "--broker", "mqtt://h:1883"]
        assert cli.main([*args, "--rabbit-defs", str(defs)]) == 0
        password: str = json.loads(out.read_text())["mqtt_password"]
        return password

    provision("ns-01")
    provision("ns-02")
    again = provision("ns-01")
    data = json.loads(defs.read_text())
    assert sorted(u["name"] for u in data["users"]) == ["ns-01", "ns-02"]
    assert sorted(p["user"] for p in data["permissions"]) == ["ns-01", "ns-02"]
    assert sorted(p["user"] for p in data["topic_permissions"]) == ["ns-01", "ns-02"]
    (user,) = [u for u in data["users"] if u["name"] == "ns-01"]
    assert rabbit_accounts.check_password(again, user["password_hash"])
    assert defs.stat().st_mode & 0o777 == 0o600  # it holds password hashes


def test_a_broken_definitions_file_is_a_sentence(tmp_path: Path) -> None:
    defs = tmp_path / "defs.json"
    defs.write_text("{not json")
    account = rabbit_accounts.sensor_definitions("leuven", "ns-01", "x")
    with pytest.raises(UsageError, match="cannot read RabbitMQ definitions"):
        rabbit_accounts.upsert(defs, account)
    assert defs.read_text() == "{not json"


def test_an_operator_rolls_out_updates_to_the_sites_sensors_only() -> None:
    defs = rabbit_accounts.operator_definitions("leuven", "ops", "x")
    (perm,) = defs["topic_permissions"]

    def key(topic: str) -> str:
        return rabbit_accounts.routing_key(topic)

    for sensor in ("ns-01", "ns-02", "+"):
        wildcard = "*" if sensor == "+" else sensor
        for leaf in ("offer", "chunk"):
            if sensor != "+":
                assert re.search(perm["write"], key(topics.ota("leuven", sensor, leaf)))
        get = key(topics.root("leuven") + f"/sensors/{sensor}/ota/get").replace("+", wildcard)
        status = key(topics.root("leuven") + f"/sensors/{sensor}/status").replace("+", wildcard)
        assert re.search(perm["read"], get) and re.search(perm["read"], status)
    for denied in (
        topics.ota("gent", "ns-01", "offer"),
        topics.config("leuven", "ns-01"),
        topics.levels("leuven", "ns-01"),
        topics.light_set("leuven", "g-1"),
        topics.ota("leuven", "ns-01", "get"),
    ):
        assert not re.search(perm["write"], key(denied)), denied
    for denied in (topics.ota("leuven", "ns-01", "chunk"), topics.levels("leuven", "ns-01")):
        assert not re.search(perm["read"], key(denied)), denied
    (access,) = defs["permissions"]
    # the session queues of the release server's client ids (tools/ota_serve.py)
    assert re.search(access["configure"], "mqtt-subscription-hushlight-ota-leuven-0a1b2c3dqos0")
    assert not re.search(access["configure"], "mqtt-subscription-leuven-ns-01qos1")


def test_provisioning_an_operator_writes_its_password_and_account(tmp_path: Path) -> None:
    defs = tmp_path / "defs.json"
    secret = tmp_path / "ops.password"
    args = ["provision", "--operator", "ops", "--site", "leuven", "--out", str(secret)]
    assert cli.main([*args, "--rabbit-defs", str(defs)]) == 0
    data = json.loads(defs.read_text())
    (user,) = data["users"]
    assert rabbit_accounts.check_password(secret.read_text().strip(), user["password_hash"])
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (
        data["topic_permissions"]
        == rabbit_accounts.operator_definitions("leuven", "ops", user["password_hash"])[
            "topic_permissions"
        ]
    )
