"""`hushlight provision`: give a sensor its identity, its network and its broker account.

One run does three things for one sensor:

1. writes the firmware's `config.json` (the keys of `firmware/config.example.json`)
   to the board with mpremote, or to a file with `--out`;
2. makes a fresh MQTT password for the sensor (`secrets`) and adds or replaces
   the sensor's line in a Mosquitto password file, hashed as `mosquitto_passwd`
   does (PBKDF2-HMAC-SHA512, format `$7$`), so the plain password lives only
   in the sensor's config;
3. adds or replaces the sensor's block in a Mosquitto ACL file: it may publish
   only its own levels, summary and status, read only its own config, and
   take firmware updates on its own topics only (read ota/offer and
   ota/chunk, write ota/get);
4. with `--release-key release.pub`, gives the sensor the city's public
   release key (written beside the config with --out, copied to the board
   with --port), without which it refuses every update.

`--operator NAME` provisions the account of the people and tools that roll
out updates (`hushlight ota`) instead of a sensor: it may offer releases and
send their chunks to every sensor of the site, and read the sensors' update
requests and statuses.  Its password goes to the --out file (for
`--password-file`), its hash and rules to the same broker files.

For a RabbitMQ cluster (tools/rabbit_cluster.py), `--rabbit-defs FILE` writes
the same account and rules as RabbitMQ definitions (tools/rabbit_accounts.py).

Re-provisioning a sensor replaces its lines, so a lost or replaced board gets
new credentials and the old ones stop working when the broker reloads its
files (`kill -HUP` or a restart).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from protocol import brokerurl, topics
from protocol.errors import ProtocolError
from tools.errors import UsageError
from tools.upy import FIRMWARE_DIR

HELP = "write a sensor's config and add its MQTT credentials and ACL to Mosquitto's files"

EXAMPLE_CONFIG = FIRMWARE_DIR / "config.example.json"

# mosquitto_passwd (Mosquitto 2.0, password_mosq.c): PBKDF2-HMAC-SHA512 with a
# 12-byte random salt, 101 iterations, a 64-byte key, both base64-encoded.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
# The password only ever travels inside config.json, so it can be long.
PASSWORD_BYTES = 24
# Topics a sensor publishes (DESIGN.md, MQTT contract); status carries its last will.
PUBLISHED = (topics.levels, topics.summary, topics.status)
# Updates over the air (protocol/ota.py): what a sensor reads and writes of its own.
OTA_READ = ("offer", "chunk")
OTA_WRITE = ("get",)
CA_NAME = "ca.pem"
RELEASE_KEY_NAME = "release.pub"


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The `$7$` hash Mosquitto's `password_file` accepts for `password`."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether `hashed` (a `$7$` hash) was made from `password`."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError(f"{hashed[:12]!r}... is not a Mosquitto $7$ hash")
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(
        hash_password(password, salt=salt, iterations=int(parts[2])), hashed
    )


def acl_block(site: str, sensor: str) -> str:
    """The Mosquitto ACL lines for one sensor, user name = sensor id."""
    lines = [f"# sensor {sensor} of site {site}, written by hushlight provision", f"user {sensor}"]
    lines += [f"topic write {topic(site, sensor)}" for topic in PUBLISHED]
    lines.append(f"topic read {topics.config(site, sensor)}")
    lines += [f"topic read {topics.ota(site, sensor, leaf)}" for leaf in OTA_READ]
    lines += [f"topic write {topics.ota(site, sensor, leaf)}" for leaf in OTA_WRITE]
    return "\n".join(lines) + "\n"


def operator_acl_block(site: str, user: str) -> str:
    """The Mosquitto ACL lines of an operator account that rolls out updates
    to the sensors of `site`: offers and chunks to them, their gets and statuses."""
    every = f"{topics.root(site)}/sensors/+"
    lines = [f"# operator {user} of site {site}, written by hushlight provision", f"user {user}"]
    lines += [f"topic write {every}/ota/{leaf}" for leaf in OTA_READ]
    lines += [f"topic read {every}/ota/{leaf}" for leaf in OTA_WRITE]
    lines.append(f"topic read {every}/status")
    return "\n".join(lines) + "\n"


def upsert_password(path: Path, user: str, hashed: str) -> None:
    """Add `user:hashed` to a Mosquitto password file, replacing the user's old line."""
    kept = [line for line in _read_lines(path) if line.split(":", 1)[0] != user]
    kept.append(f"{user}:{hashed}")
    _write_private(path, "\n".join(kept) + "\n")


def upsert_acl(path: Path, site: str, sensor: str, block: str | None = None) -> None:
    """Add the sensor's block (or `block`, the lines of user `sensor`) to an ACL
    file, dropping a previous block of the same user.

    A block is a `user NAME` line and the lines up to the next `user`/`pattern`
    line; the comment line this tool writes above it goes with it.
    """
    lines = _read_lines(path)
    out: list[str] = []
    skipping = False
    for line in lines:
        words = line.split()
        if words[:1] in (["user"], ["pattern"]):
            skipping = words == ["user", sensor]
        if skipping:
            continue
        out.append(line)
    markers = (f"# sensor {sensor} of site ", f"# operator {sensor} of site ")
    out = [line for line in out if not line.startswith(markers)]
    while out and not out[-1].strip():
        out.pop()
    block = acl_block(site, sensor) if block is None else block
    text = "\n".join(out) + ("\n\n" if out else "") + block
    _write_private(path, text)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror}; check the path and its permissions"
        ) from exc


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, keeping an existing file's mode and owner.

    Written next to the target and renamed, so the broker never reads half a
    file.  A new file is readable by its owner only: it holds password hashes
    or a Wi-Fi password.  An existing one keeps its mode and owner, because
    the broker (user `mosquitto`) must still be able to read it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        if path.exists():
            old = path.stat()
            os.chmod(tmp, old.st_mode & 0o777)
            if os.geteuid() == 0:
                os.chown(tmp, old.st_uid, old.st_gid)
        else:
            tmp.chmod(0o600)
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror}; check the path and its permissions"
        ) from exc


def parse_broker(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an mqtt:// or mqtts:// URL (`protocol.brokerurl`)."""
    try:
        scheme, host, port, _tls = brokerurl.parse(url)
    except ProtocolError as exc:
        raise UsageError(
            f"{exc} (mqtts:// for a sensor in the field; mqtt:// only for a test broker "
            "without TLS)"
        ) from None
    return scheme, host, port


def parse_brokers(text: str) -> tuple[str, str]:
    """(scheme, the `broker` setting) of one broker URL or several separated by
    commas, brokers the sensor fails over across (`protocol.brokerurl.parse_list`);
    each written as scheme://HOST:PORT, its port spelled out."""
    try:
        brokers = brokerurl.parse_list(text)
    except ProtocolError as exc:
        raise UsageError(
            f"{exc} (mqtts:// for a sensor in the field; mqtt:// only for a test broker "
            "without TLS)"
        ) from None
    urls = [
        f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        for scheme, host, port, _tls in brokers
    ]
    return brokers[0][0], ",".join(urls)


def example_config() -> dict[str, Any]:
    try:
        base = json.loads(EXAMPLE_CONFIG.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(base, dict):
        raise UsageError(f"{EXAMPLE_CONFIG} is not a JSON object; restore it from git")
    return base


def sensor_config(
    *,
    sensor: str,
    site: str,
    ssid: str,
    wifi_password: str,
    broker: str,
    username: str,
    password: str,
    ca: bool,
) -> dict[str, Any]:
    """The firmware config: the committed example with this sensor's values filled in."""
    config = example_config()
    config.update(
        {
            "id": sensor,
            "site": site,
            "wifi_ssid": ssid,
            "wifi_password": wifi_password,
            "broker": broker,
            "mqtt_user": username,
            "mqtt_password": password,
        }
    )
    if ca:
        config["ca_file"] = CA_NAME
    return config


def _check_id(kind: str, value: str) -> str:
    try:
        return topics.check_id(kind, value)
    except ProtocolError as exc:
        raise UsageError(f"{exc} (e.g. ns-01)") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0); or use --out")
    parser.add_argument(
        "--out", type=Path, help="write config.json to this file instead of a board"
    )
    parser.add_argument("--id", help="sensor id, e.g. ns-01 (required for a sensor)")
    parser.add_argument("--site", required=True, help="site id, e.g. leuven")
    parser.add_argument("--wifi-ssid", help="the sensor's Wi-Fi network (required for a sensor)")
    parser.add_argument("--wifi-password", help="its password (required for a sensor)")
    parser.add_argument(
        "--broker",
        metavar="URL[,URL...]",
        help="mqtts://HOST:PORT, or the nodes of a broker cluster separated by commas "
        "(mqtts://N1:8883,mqtts://N2:8883), which the sensor fails over across"
        " (required for a sensor)",
    )
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) the sensor pins for mqtts://")
    parser.add_argument(
        "--release-key",
        type=Path,
        metavar="FILE",
        help=f"the city's public release key ({RELEASE_KEY_NAME} of `hushlight keygen`); "
        "without it the sensor refuses every firmware update",
    )
    parser.add_argument(
        "--operator",
        metavar="NAME",
        help="provision the account that rolls out firmware updates (`hushlight ota`) "
        "instead of a sensor; its password goes to --out FILE",
    )
    parser.add_argument("--passwd-file", type=Path, help="Mosquitto password file to update")
    parser.add_argument("--acl-file", type=Path, help="Mosquitto ACL file to update")
    parser.add_argument(
        "--rabbit-defs",
        type=Path,
        help="RabbitMQ definitions file to update (a broker cluster, tools/rabbit_cluster.py)",
    )


def run(args: argparse.Namespace) -> int:
    if args.operator is not None:
        return _operator(args)
    missing = [
        option
        for option, value in (
            ("--id", args.id),
            ("--wifi-ssid", args.wifi_ssid),
            ("--wifi-password", args.wifi_password),
            ("--broker", args.broker),
        )
        if value is None
    ]
    if missing:
        raise UsageError(
            f"a sensor needs {', '.join(missing)} (or give --operator NAME for the account "
            "that rolls out updates)"
        )
    sensor = _check_id("sensor id", args.id)
    site = _check_id("site id", args.site)
    scheme, broker = parse_brokers(args.broker)
    if (args.port is None) == (args.out is None):
        raise UsageError(
            "give either --port PORT (write to the board) or --out FILE (write a file)"
        )
    if args.ca is not None:
        if not args.ca.is_file():
            raise UsageError(
                f"CA certificate {args.ca} does not exist; give the broker's CA in PEM"
            )
        from tools.flash import check_ca

        check_ca(args.ca)
    if scheme == "mqtts" and args.ca is None:
        print(
            f"note: no --ca given; the sensor will look for {CA_NAME} on the board "
            f"(`hushlight flash --config` takes it from beside the config file)",
            file=sys.stderr,
        )
    if len(args.wifi_ssid) > 32:
        raise UsageError(f"Wi-Fi SSID {args.wifi_ssid!r} is longer than 32 bytes; check the name")
    if args.release_key is not None:
        from tools.release import read_public_key

        read_public_key(args.release_key)

    password = secrets.token_urlsafe(PASSWORD_BYTES)
    config = sensor_config(
        sensor=sensor,
        site=site,
        ssid=args.wifi_ssid,
        wifi_password=args.wifi_password,
        broker=broker,
        username=sensor,
        password=password,
        ca=args.ca is not None,
    )
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    if args.out is not None:
        _write_private(args.out, text)
        print(f"config for {sensor} written to {args.out}")
        if args.ca is not None:
            # beside the config, under the name the config gives it (ca_file):
            # `hushlight flash --config` copies both to the board
            ca_out = args.out.parent / CA_NAME
            try:
                ca_out.write_bytes(args.ca.read_bytes())
            except OSError as exc:
                raise UsageError(
                    f"cannot write {ca_out}: {exc.strerror}; check the folder and its permissions"
                ) from exc
            print(f"CA certificate {args.ca} written to {ca_out} (the config's ca_file)")
        extra, key_option = (" and the CA" if args.ca else ""), ""
        if args.release_key is not None:
            key_out = args.out.parent / RELEASE_KEY_NAME
            if key_out.resolve() != args.release_key.resolve():
                _copy(args.release_key, key_out)
            print(f"release key {args.release_key} written to {key_out}")
            extra += " and the release key"
            key_option = f" --release-key {key_out}"
        print(
            f"next: `hushlight flash --port PORT --micropython-bin ESP32_GENERIC-*.bin "
            f"--config {args.out}{key_option}` copies it{extra} to the board"
        )
    else:
        from tools.flash import StepError

        try:
            _write_to_board(args.port, text, args.ca, args.release_key)
        except StepError as exc:
            # nothing was added to the broker's files: the board has no config
            print(f"hushlight provision: {exc}", file=sys.stderr)
            return 1
    if args.passwd_file is not None:
        upsert_password(args.passwd_file, sensor, hash_password(password))
        print(f"MQTT user {sensor} set in {args.passwd_file}")
    if args.acl_file is not None:
        upsert_acl(args.acl_file, site, sensor)
        print(
            f"ACL for {sensor} set in {args.acl_file} "
            "(publishes its levels/summary/status, reads its config, takes updates)"
        )
    if args.rabbit_defs is not None:
        from tools import rabbit_accounts

        account = rabbit_accounts.sensor_definitions(
            site, sensor, rabbit_accounts.hash_password(password)
        )
        rabbit_accounts.upsert(args.rabbit_defs, account)
        print(
            f"RabbitMQ user {sensor} and its topic permissions set in {args.rabbit_defs}; "
            f"load them: `rabbitmqctl import_definitions {args.rabbit_defs}`"
        )
    if args.passwd_file is not None or args.acl_file is not None:
        print(
            "reload the broker so it reads them: "
            "`sudo systemctl reload mosquitto` or `kill -HUP PID`"
        )
    return 0


def _copy(source: Path, target: Path) -> None:
    try:
        target.write_bytes(source.read_bytes())
    except OSError as exc:
        raise UsageError(
            f"cannot write {target}: {exc.strerror}; check the folder and its permissions"
        ) from exc


def _operator(args: argparse.Namespace) -> int:
    """`--operator NAME`: the roll-out account, its password into --out."""
    user = _check_id("operator name", args.operator)
    site = _check_id("site id", args.site)
    given = [
        option
        for option, value in (
            ("--id", args.id),
            ("--port", args.port),
            ("--wifi-ssid", args.wifi_ssid),
            ("--wifi-password", args.wifi_password),
            ("--ca", args.ca),
            ("--release-key", args.release_key),
        )
        if value is not None
    ]
    if given:
        verb = "is" if len(given) == 1 else "are"
        raise UsageError(f"{', '.join(given)} {verb} for a sensor, not for --operator {user}")
    if args.out is None:
        raise UsageError(
            f"--operator {user} needs --out FILE for its password (give it to the roll-out "
            "tool as --password-file FILE)"
        )
    if args.passwd_file is None and args.acl_file is None and args.rabbit_defs is None:
        raise UsageError(
            f"--operator {user}: give the broker files to update: --passwd-file and "
            "--acl-file (Mosquitto) or --rabbit-defs (RabbitMQ)"
        )
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    _write_private(args.out, password + "\n")
    print(f"password of {user} written to {args.out} (readable by you only)")
    if args.passwd_file is not None:
        upsert_password(args.passwd_file, user, hash_password(password))
        print(f"MQTT user {user} set in {args.passwd_file}")
    if args.acl_file is not None:
        upsert_acl(args.acl_file, site, user, operator_acl_block(site, user))
        print(
            f"ACL for {user} set in {args.acl_file} (offers updates to the sensors of {site}, "
            "reads their update requests and statuses)"
        )
    if args.rabbit_defs is not None:
        from tools import rabbit_accounts

        account = rabbit_accounts.operator_definitions(
            site, user, rabbit_accounts.hash_password(password)
        )
        rabbit_accounts.upsert(args.rabbit_defs, account)
        print(f"RabbitMQ user {user} and its topic permissions set in {args.rabbit_defs}")
    if args.passwd_file is not None or args.acl_file is not None:
        print(
            "reload the broker so it reads them: "
            "`sudo systemctl reload mosquitto` or `kill -HUP PID`"
        )
    return 0


def _write_to_board(port: str, text: str, ca: Path | None, release_key: Path | None) -> None:
    # Imported here: flash pulls in the step runner, not needed for --out.
    from tools import flash

    with tempfile.TemporaryDirectory(prefix="hushlight-provision-") as tmp:
        local = Path(tmp) / "config.json"
        local.write_text(text)
        files = [flash.BoardFile(local, "config.json")]
        if ca is not None:
            files.append(flash.BoardFile(ca, CA_NAME))
        if release_key is not None:
            files.append(flash.BoardFile(release_key, RELEASE_KEY_NAME))
        names = " and ".join(f.name for f in files)
        flash.copy_to_board(flash.Step(1, 1, f"copy {names} to the board"), port, files)
    print(f"{names} written to the board on {port}")
