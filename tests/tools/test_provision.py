"""`hushlight provision`: config file, Mosquitto password hash and ACL, checked by a real broker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from tools import provision
from tools.broker import Mosquitto
from tools.cli import main
from tools.errors import UsageError

SITE = "leuven"


def _provision(tmp_path: Path, sensor: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "provision",
            "--out",
            str(tmp_path / f"{sensor}.json"),
            "--id",
            sensor,
            "--site",
            SITE,
            "--wifi-ssid",
            "street",
            "--wifi-password",
            "pw",
            "--broker",
            "mqtt://127.0.0.1:1884",
            "--passwd-file",
            str(tmp_path / "mosquitto.passwd"),
            "--acl-file",
            str(tmp_path / "mosquitto.acl"),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hash_matches_pbkdf2_definition() -> None:
    salt = bytes(range(12))
    hashed = provision.hash_password("secret", salt=salt)
    scheme, iterations, salt64, key64 = hashed.split("$")[1:]
    assert (scheme, iterations) == ("7", "101")
    assert base64.b64decode(salt64) == salt
    # PBKDF2-HMAC-SHA512 (RFC 8018) over the decoded salt, as Mosquitto checks it.
    assert base64.b64decode(key64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101, 64)
    assert provision.check_password("secret", hashed)
    assert not provision.check_password("Secret", hashed)


def test_reprovision_replaces_lines(tmp_path: Path) -> None:
    passwd = tmp_path / "p"
    acl = tmp_path / "a"
    acl.write_text("user gateway\ntopic readwrite hushlight/#\n")
    for sensor in ("ns-01", "ns-02", "ns-01"):
        provision.upsert_password(passwd, sensor, provision.hash_password(sensor))
        provision.upsert_acl(acl, SITE, sensor)
    users = [line.split(":")[0] for line in passwd.read_text().splitlines()]
    assert sorted(users) == ["ns-01", "ns-02"]
    text = acl.read_text()
    assert text.count("user ns-01") == 1
    assert text.count("user ns-02") == 1
    assert text.startswith("user gateway\ntopic readwrite hushlight/#\n")
    assert oct(passwd.stat().st_mode & 0o777) == "0o600"


def test_bad_values_are_usage_errors(tmp_path: Path) -> None:
    proc = _provision(tmp_path, "NS_01")
    assert proc.returncode == 2
    assert "'NS_01'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="ftp://x"):
        provision.parse_broker("ftp://x")
    assert provision.parse_broker("mqtts://broker.city") == ("mqtts", "broker.city", 8883)


def _sensor_password(tmp_path: Path, sensor: str) -> str:
    config = json.loads((tmp_path / f"{sensor}.json").read_text())
    assert config["id"] == sensor and config["site"] == SITE
    password = config["mqtt_password"]
    assert isinstance(password, str)
    return password


async def _expect(client: aiomqtt.Client, count: int) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            seen.append(str(message.topic))
            if len(seen) == count:
                return seen
    return seen


def _client(broker: Mosquitto, user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", broker.port, username=user, password=password, identifier=user
    )


async def test_real_mosquitto_enforces_the_acl(tmp_path: Path) -> None:
    for sensor in ("ns-01", "ns-02"):
        proc = _provision(tmp_path, sensor)
        assert proc.returncode == 0, proc.stderr
    passwd = tmp_path / "mosquitto.passwd"
    acl = tmp_path / "mosquitto.acl"
    # An observer that sees everything and may write configs, as the gateway would.
    provision.upsert_password(passwd, "observer", provision.hash_password("watch"))
    acl.write_text(
        "user observer\ntopic read hushlight/#\ntopic write hushlight/v1/+/sensors/+/config\n\n"
        + acl.read_text()
    )
    ns01 = _sensor_password(tmp_path, "ns-01")
    root = f"hushlight/v1/{SITE}/sensors"
    with Mosquitto(password_file=passwd, acl_file=acl) as broker:
        with pytest.raises(aiomqtt.MqttError):
            async with _client(broker, "ns-01", "wrong"):
                pass
        async with (
            _client(broker, "observer", "watch") as observer,
            _client(broker, "ns-01", ns01) as device,
        ):
            await observer.subscribe("hushlight/#", qos=1)
            await device.subscribe(f"{root}/ns-01/config", qos=1)
            # Mosquitto 2.0 grants this subscription but delivers nothing through it.
            await device.subscribe(f"{root}/ns-02/config", qos=1)
            # Denied first, allowed second, same client and QoS: the broker keeps their order,
            # so if the first is not seen before the second it was dropped.
            await device.publish(f"{root}/ns-02/levels", b"{}", qos=1)
            await device.publish(f"{root}/ns-01/levels", b"{}", qos=1)
            assert await _expect(observer, 1) == [f"{root}/ns-01/levels"]
            await observer.publish(f"{root}/ns-02/config", b'{"rev":1}', qos=1)
            await observer.publish(f"{root}/ns-01/config", b'{"rev":1}', qos=1)
            assert await _expect(device, 1) == [f"{root}/ns-01/config"]
            # The sensor cannot write its own config (only the gateway or tools may).
            await device.publish(f"{root}/ns-01/config", b'{"rev":2}', qos=1)
            await device.publish(f"{root}/ns-01/status", b"{}", qos=1)
            # The observer also hears its own two config publishes; the sensor's is not there.
            assert await _expect(observer, 3) == [
                f"{root}/ns-02/config",
                f"{root}/ns-01/config",
                f"{root}/ns-01/status",
            ]


async def test_real_mosquitto_lets_updates_through_to_their_own_sensor_only(
    tmp_path: Path,
) -> None:
    for sensor in ("ns-01", "ns-02"):
        proc = _provision(tmp_path, sensor)
        assert proc.returncode == 0, proc.stderr
    secret = tmp_path / "ops.password"
    argv = ["provision", "--operator", "ops", "--site", SITE, "--out", str(secret)]
    argv += ["--passwd-file", str(tmp_path / "mosquitto.passwd")]
    assert main([*argv, "--acl-file", str(tmp_path / "mosquitto.acl")]) == 0
    root = f"hushlight/v1/{SITE}/sensors"
    ops_password = secret.read_text().strip()
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "mosquitto.acl"
    provision.upsert_password(passwd, "observer", provision.hash_password("watch"))
    acl.write_text("user observer\ntopic read hushlight/#\n\n" + acl.read_text())
    with Mosquitto(password_file=passwd, acl_file=acl) as broker:
        async with (
            _client(broker, "observer", "watch") as observer,
            _client(broker, "ops", ops_password) as ops,
            _client(broker, "ns-01", _sensor_password(tmp_path, "ns-01")) as device,
        ):
            await observer.subscribe(f"{root}/+/ota/offer", qos=1)
            await observer.subscribe(f"{root}/+/ota/get", qos=1)
            await ops.subscribe(f"{root}/+/ota/get", qos=0)
            await ops.subscribe(f"{root}/+/status", qos=1)
            await device.subscribe(f"{root}/ns-01/ota/offer", qos=1)
            await device.subscribe(f"{root}/ns-01/ota/chunk", qos=1)
            await device.subscribe(f"{root}/ns-02/ota/offer", qos=1)  # granted, never delivered
            # the operator may not configure the sensor, only offer it updates
            await ops.publish(f"{root}/ns-01/config", b'{"rev":1}', qos=1)
            await ops.publish(f"{root}/ns-02/ota/offer", b"{}", qos=1)
            await ops.publish(f"{root}/ns-01/ota/offer", b"{}", qos=1)
            await ops.publish(f"{root}/ns-01/ota/chunk", b"\0\0\0\0", qos=1)
            assert await _expect(device, 2) == [
                f"{root}/ns-01/ota/offer",
                f"{root}/ns-01/ota/chunk",
            ]
            # the sensor asks for its own release only, and may not offer one
            await device.publish(f"{root}/ns-02/ota/get", b"{}", qos=1)
            await device.publish(f"{root}/ns-01/ota/offer", b"{}", qos=1)
            await device.publish(f"{root}/ns-01/ota/get", b"{}", qos=1)
            await device.publish(f"{root}/ns-01/status", b"{}", qos=1)
            assert await _expect(ops, 2) == [f"{root}/ns-01/ota/get", f"{root}/ns-01/status"]
            # the operator's two offers reached the broker, the sensor's did not (or it
            # would be seen before the sensor's own get, published after it)
            assert await _expect(observer, 3) == [
                f"{root}/ns-02/ota/offer",
                f"{root}/ns-01/ota/offer",
                f"{root}/ns-01/ota/get",
            ]


def test_the_release_key_goes_beside_the_config(tmp_path: Path) -> None:
    from tools import release

    private, public = release.generate_key(tmp_path / "keys", 2048)
    proc = _provision(tmp_path, "ns-05", "--release-key", str(private))
    assert proc.returncode == 2 and f"{private} is not a public release key" in proc.stderr
    assert not (tmp_path / "ns-05.json").exists()
    proc = _provision(tmp_path, "ns-05", "--release-key", str(public))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "release.pub").read_text() == public.read_text()
    assert f"--release-key {tmp_path / 'release.pub'}` copies it and the release key" in proc.stdout


def test_board_that_is_not_there(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "provision",
            "--port",
            "/dev/ttyUSB-hushlight-missing",
            "--id",
            "ns-09",
            "--site",
            SITE,
            "--wifi-ssid",
            "street",
            "--wifi-password",
            "pw",
            "--broker",
            "mqtts://broker.example:8883",
            "--passwd-file",
            str(tmp_path / "passwd"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "step 1/1 (copy config.json to the board) failed" in proc.stderr
    assert "does not exist" in proc.stderr
    # the broker learns no password for a sensor that never got its config
    assert not (tmp_path / "passwd").exists()


def test_provision_says_every_file_it_wrote(tmp_path: Path) -> None:
    from tests.firmware.conftest import make_ca

    city_ca = make_ca(tmp_path / "pki", "city CA").ca
    out = tmp_path / "ns-02.json"
    proc = _provision(tmp_path, "ns-02", "--ca", str(city_ca))
    assert proc.returncode == 0, proc.stderr
    config = json.loads(out.read_text())
    beside = out.parent / config["ca_file"]
    assert beside.read_bytes() == city_ca.read_bytes()
    lines = proc.stdout.splitlines()
    assert f"config for ns-02 written to {out}" in lines
    assert f"CA certificate {city_ca} written to {beside} (the config's ca_file)" in lines
    assert any(f"--config {out}` copies it and the CA to the board" in line for line in lines)
    # a CA that is no certificate is refused before anything is written
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    proc = _provision(tmp_path, "ns-03", "--ca", str(junk))
    assert proc.returncode == 2 and "is not a PEM or DER certificate" in proc.stderr
    assert not (tmp_path / "ns-03.json").exists()


def test_provision_to_a_board_copies_the_config_and_its_ca(tmp_path: Path) -> None:
    from tests.firmware.conftest import make_ca
    from tests.tools.upy_board import UnixBoard
    from tools.release import generate_key

    city_ca = make_ca(tmp_path / "pki", "city CA").ca
    _, public = generate_key(tmp_path / "keys", 2048)
    with UnixBoard(tmp_path / "board") as board:
        proc = subprocess.run(
            [sys.executable, "-m", "tools.cli", "provision", "--port", board.port, "--id",
             "ns-04", "--site", SITE, "--wifi-ssid", "street", "--wifi-password", "pw",
             "--broker", "mqtts://broker.example:8883", "--ca", str(city_ca),
             "--release-key", str(public), "--passwd-file", str(tmp_path / "passwd")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"config.json and ca.pem and release.pub written to the board on {board.port}" in (
        proc.stdout
    )
    assert (tmp_path / "board" / "release.pub").read_text() == public.read_text()
    on_board = json.loads((tmp_path / "board" / "config.json").read_text())
    assert (on_board["id"], on_board["ca_file"]) == ("ns-04", "ca.pem")
    assert (tmp_path / "board" / "ca.pem").read_bytes() == city_ca.read_bytes()
    # the broker learns the password the board holds
    hashed = (tmp_path / "passwd").read_text().split(":", 1)[1].strip()
    assert provision.check_password(on_board["mqtt_password"], hashed)
