"""The broker accounts of `hushlight provision`, written for a RabbitMQ cluster.

For Mosquitto, provisioning writes a password file and an ACL file.  RabbitMQ
keeps its users in its own database, replicated to every node of a cluster,
and loads them from a definitions file (JSON, the format of
`rabbitmqctl export_definitions`): at boot (`load_definitions` in
rabbitmq.conf) or at any time with `rabbitmqctl import_definitions FILE`.
This module writes that file with the same rules as the Mosquitto ACL:

- the sensor's user name is its id, its password stored only as a salted
  hash (`rabbit_password_hashing_sha256`);
- it may publish only its own levels, summary and status and its update
  requests (ota/get), and read only its own config and the updates offered
  to it (ota/offer, ota/chunk).  The MQTT plugin routes every message through the `amq.topic`
  exchange with the MQTT topic as routing key, `/` turned into `.`, so the
  rules are topic permissions on `amq.topic` over those routing keys;
- it may create and use only its own session queue
  (`mqtt-subscription-{client id}qos0|qos1`, client id `{site}-{sensor}` as
  the firmware connects).

An operator account (`operator_definitions`) rolls out updates to the
sensors of one site (`hushlight ota`, tools/ota_serve.py): it publishes
offers and chunks to any of them and reads their update requests and
statuses, with its own session queues only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

from protocol import topics
from tools.errors import UsageError

VHOST = "/"
EXCHANGE = "amq.topic"
HASHING = "rabbit_password_hashing_sha256"
# rabbit_password.erl: a 4-byte random salt, prepended to the digest
SALT_BYTES = 4
# Topics a sensor publishes (DESIGN.md, MQTT contract); status carries its last will.
PUBLISHED = (topics.levels, topics.summary, topics.status)
# Updates over the air (protocol/ota.py), as in tools/provision.py.
OTA_READ = ("offer", "chunk")
OTA_WRITE = ("get",)
# the client id of the release server: hushlight-ota-{site}-{8 hex digits}
OPERATOR_CLIENT = "hushlight-ota-{site}-"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The `password_hash` RabbitMQ stores: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def check_password(password: str, hashed: str) -> bool:
    """Whether `hashed` (a RabbitMQ sha256 password hash) was made from `password`."""
    raw = base64.b64decode(hashed)
    if len(raw) != SALT_BYTES + 32:
        raise ValueError(f"{hashed[:12]!r}... is not a RabbitMQ sha256 password hash")
    return secrets.compare_digest(hash_password(password, salt=raw[:SALT_BYTES]), hashed)


def routing_key(topic: str) -> str:
    """The `amq.topic` routing key of an MQTT topic (the MQTT plugin swaps `/` and `.`)."""
    return topic.replace("/", ".")


def client_id(site: str, sensor: str) -> str:
    """The MQTT client id the firmware connects with (firmware/hushlight/start.py)."""
    return f"{site}-{sensor}"


def _exact(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def sensor_definitions(site: str, sensor: str, password_hash: str) -> dict[str, Any]:
    """The user, permissions and topic permissions of one sensor."""
    topics.check_id("site", site)
    topics.check_id("sensor", sensor)
    queue = re.escape(f"mqtt-subscription-{client_id(site, sensor)}") + "qos[01]"
    own = "^(" + re.escape(EXCHANGE) + "|" + queue + ")$"
    return {
        "users": [
            {
                "name": sensor,
                "password_hash": password_hash,
                "hashing_algorithm": HASHING,
                "tags": [],
            }
        ],
        "permissions": [
            {
                "user": sensor,
                "vhost": VHOST,
                "configure": "^" + queue + "$",
                "write": own,
                "read": own,
            }
        ],
        "topic_permissions": [
            {
                "user": sensor,
                "vhost": VHOST,
                "exchange": EXCHANGE,
                "write": _exact(
                    [routing_key(t(site, sensor)) for t in PUBLISHED]
                    + [routing_key(topics.ota(site, sensor, leaf)) for leaf in OTA_WRITE]
                ),
                "read": _exact(
                    [routing_key(topics.config(site, sensor))]
                    + [routing_key(topics.ota(site, sensor, leaf)) for leaf in OTA_READ]
                ),
            }
        ],
    }


def operator_definitions(site: str, user: str, password_hash: str) -> dict[str, Any]:
    """The user, permissions and topic permissions of an account that rolls out
    updates to the sensors of `site`."""
    topics.check_id("site", site)
    topics.check_id("operator", user)
    queue = re.escape("mqtt-subscription-" + OPERATOR_CLIENT.format(site=site))
    queue += "[0-9a-f]+qos[01]"
    own = "^(" + re.escape(EXCHANGE) + "|" + queue + ")$"
    # any one sensor of the site, or the `+` of a subscription (`*` as a binding key)
    sensors = re.escape(routing_key(topics.root(site) + "/sensors/")) + r"[^.]+\."

    def leaves(names: tuple[str, ...]) -> str:
        return "(" + "|".join(re.escape(routing_key(n)) for n in names) + ")"

    return {
        "users": [
            {"name": user, "password_hash": password_hash, "hashing_algorithm": HASHING, "tags": []}
        ],
        "permissions": [
            {
                "user": user,
                "vhost": VHOST,
                "configure": "^" + queue + "$",
                "write": own,
                "read": own,
            }
        ],
        "topic_permissions": [
            {
                "user": user,
                "vhost": VHOST,
                "exchange": EXCHANGE,
                "write": "^" + sensors + leaves(tuple("ota/" + x for x in OTA_READ)) + "$",
                "read": "^" + sensors + leaves((*("ota/" + x for x in OTA_WRITE), "status")) + "$",
            }
        ],
    }


def service_definitions(user: str, password_hash: str) -> dict[str, Any]:
    """An account with every right on the vhost: for the gateway and the lights controllers."""
    return {
        "users": [
            {
                "name": user,
                "password_hash": password_hash,
                "hashing_algorithm": HASHING,
                "tags": [],
            }
        ],
        "permissions": [
            {"user": user, "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "topic_permissions": [],
    }


def empty_definitions() -> dict[str, Any]:
    return {
        "vhosts": [{"name": VHOST}],
        "users": [],
        "permissions": [],
        "topic_permissions": [],
    }


def merge(base: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    """`base` with the entries of `account` added, replacing those of the same users."""
    names = {u["name"] for u in account.get("users", [])}
    out = dict(base)
    out.setdefault("vhosts", [{"name": VHOST}])
    out["users"] = [u for u in base.get("users", []) if u["name"] not in names]
    out["users"] += account.get("users", [])
    for key in ("permissions", "topic_permissions"):
        kept = [p for p in base.get(key, []) if p["user"] not in names]
        out[key] = kept + account.get(key, [])
    return out


def read_definitions(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return empty_definitions()
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read RabbitMQ definitions {path}: {exc}; "
            "give a file written by `hushlight provision` or `rabbitmqctl export_definitions`"
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(f"RabbitMQ definitions {path} is not a JSON object; check the file")
    return data


def upsert(path: Path, account: dict[str, Any]) -> None:
    """Add an account to a definitions file, replacing an older entry of the same user."""
    # provision imports this module; its file writer is taken at call time
    from tools.provision import _write_private

    text = json.dumps(merge(read_definitions(path), account), indent=2, sort_keys=True)
    _write_private(path, text + "\n")
