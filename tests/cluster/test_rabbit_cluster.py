"""tools/rabbit_cluster.py: three RabbitMQ nodes as hushlight's broker, tried over MQTT."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from protocol import payloads, topics
from tests.cluster.conftest import SITE, Cluster
from tests.tools.virtual import Sensor
from tools import cli, rabbit_accounts
from tools.rabbit_cluster import RabbitCluster, alive
from tools.upy import REPO_ROOT


class Link:
    """A paho client on one node, with the messages it received in a queue."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        client_id: str = "",
        clean: bool = True,
        ca: Path | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.granted: queue.Queue[list[int]] = queue.Queue()
        self.connected: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.dropped = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "test-" + secrets.token_hex(4),
            clean_session=clean,
        )
        if user:
            c.username_pw_set(user, password)
        if ca is not None:
            c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        c.on_message = lambda _c, _u, m: self.messages.put(m)
        c.on_connect = lambda _c, _u, flags, rc, _p: self.connected.put(
            (rc.value, bool(flags.session_present))
        )
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.granted.put(
            [r.value if isinstance(r, ReasonCode) else int(r) for r in codes]
        )
        c.on_disconnect = lambda *_a: setattr(self, "dropped", True)
        self.client = c
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        # after a node dies the cluster elects new leaders for a few seconds:
        # a refused or reset connection is tried again until the deadline
        deadline = time.monotonic() + timeout
        while True:
            try:
                c.connect(host, int(port), keepalive=30)
                c.loop_start()
                wait = min(10.0, max(0.1, deadline - time.monotonic()))
                rc, self.session_present = self.connected.get(timeout=wait)
                if rc == 0:
                    return
                c.loop_stop()
            except (OSError, queue.Empty):
                c.loop_stop()
                rc = -1
            if rc in (134, 135, 4, 5) or time.monotonic() > deadline:
                # bad user name or password / not authorised: no use trying again
                raise ConnectionRefusedError(f"connection to {url} refused, code {rc}")
            time.sleep(0.5)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.client.subscribe(topic, qos)
        return self.granted.get(timeout=10)

    def refused(self, timeout: float = 10.0) -> bool:
        """Whether the broker refused the last request: a failure SUBACK or a closed link.

        RabbitMQ 3.10 answers a subscription or publication it does not allow
        by closing the connection.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dropped:
                return True
            try:
                if self.granted.get(timeout=0.05) == [0x80]:
                    return True
            except queue.Empty:
                pass
        return False

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def received(self, count: int, timeout: float) -> list[mqtt.MQTTMessage]:
        out: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway(rabbit: Cluster, node: int, **kw: object) -> Link:
    return Link(rabbit.nodes.urls[node], "gateway", rabbit.gateway_password, **kw)  # type: ignore[arg-type]


def provision(rabbit: Cluster, tmp_path: Path, sensor: str) -> dict[str, str]:
    """Provision a sensor with `hushlight provision --rabbit-defs` and load its account."""
    defs = tmp_path / "sensors.json"
    out = tmp_path / f"{sensor}.json"
    status = cli.main(
        [
            "provision",
            "--out",
            str(out),
            "--id",
            sensor,
            "--site",
            SITE,
            "--wifi-ssid",
            "street",
            "--wifi-password",
            "secret",
            "--broker",
            rabbit.nodes.urls[0],
            "--rabbit-defs",
            str(defs),
        ]
    )
    assert status == 0
    load = ["cluster", "load", "--dir", str(rabbit.nodes.dir), "--definitions", str(defs)]
    assert cli.main(load) == 0
    config: dict[str, str] = json.loads(out.read_text())
    return config


def test_the_three_nodes_form_one_cluster(rabbit: Cluster) -> None:
    names = sorted(n.nodename for n in rabbit.nodes.nodes)
    for node in rabbit.nodes.nodes:
        assert rabbit.nodes.members(node) == names


@pytest.mark.parametrize("killed", [0, 1], ids=["its-own-node", "the-publishers-node"])
def test_a_persistent_sessions_messages_survive_the_loss_of_a_node(
    rabbit: Cluster, killed: int
) -> None:
    # The gateway's session lives on node 1; a sensor publishes through node 2
    # while the gateway is away; then one of those nodes dies.  The session's
    # quorum queue has copies on every node, so the gateway, back on node 3,
    # gets every message.
    topic = topics.sensors_wildcard(SITE, "levels")
    client_id = "gw-" + secrets.token_hex(4)
    sub = gateway(rabbit, 0, client_id=client_id, clean=False)
    assert sub.subscribe(topic) == [1]
    sub.close()

    pub = gateway(rabbit, 1)
    sent = {f"record {i}".encode() for i in range(20)}
    for payload in sorted(sent):
        pub.publish(topics.levels(SITE, "ns-07"), payload)
    pub.close()

    rabbit.nodes.kill(killed)
    assert not rabbit.nodes.nodes[killed].running
    back = gateway(rabbit, 2, client_id=client_id, clean=False, timeout=30)
    try:
        assert back.session_present
        got = {m.payload for m in back.received(len(sent), timeout=20)}
        assert got == sent
    finally:
        back.close()

    # the killed node comes back into the cluster from its own data
    rabbit.nodes.start_node(killed)
    assert rabbit.nodes.members() == sorted(n.nodename for n in rabbit.nodes.nodes)


def test_a_sensor_account_publishes_only_its_own_topics(rabbit: Cluster, tmp_path: Path) -> None:
    config = provision(rabbit, tmp_path, "ns-31")
    provision(rabbit, tmp_path, "ns-32")
    watcher = gateway(rabbit, 1)
    assert watcher.subscribe(topics.sensors_wildcard(SITE, "+")) == [1]

    def connect() -> Link:
        return Link(
            rabbit.nodes.urls[0],
            config["mqtt_user"],
            config["mqtt_password"],
            client_id=rabbit_accounts.client_id(SITE, "ns-31"),
            clean=False,
        )

    sensor = connect()
    assert sensor.subscribe(topics.config(SITE, "ns-31")) == [1]
    for leaf in (topics.levels, topics.summary, topics.status):
        sensor.publish(leaf(SITE, "ns-31"), b"mine")
    got = watcher.received(3, timeout=10)
    assert sorted(m.topic for m in got) == sorted(
        t(SITE, "ns-31") for t in (topics.levels, topics.summary, topics.status)
    )

    # another sensor's config it may not read
    sensor.client.subscribe(topics.config(SITE, "ns-32"), 1)
    assert sensor.refused()
    sensor.close()

    # nor publish as another sensor, nor on a lights topic
    for forged in (topics.levels(SITE, "ns-32"), topics.light_set(SITE, "g-1")):
        sensor = connect()
        sensor.client.publish(forged, b"forged", qos=1)
        assert sensor.refused()
        sensor.close()
    assert watcher.received(1, timeout=2) == []
    watcher.close()


def test_a_wrong_password_is_refused(rabbit: Cluster, tmp_path: Path) -> None:
    config = provision(rabbit, tmp_path, "ns-33")
    with pytest.raises(ConnectionRefusedError):
        Link(rabbit.nodes.urls[2], config["mqtt_user"], config["mqtt_password"] + "x")
    Link(rabbit.nodes.urls[2], config["mqtt_user"], config["mqtt_password"]).close()


def test_retained_messages_are_not_seen_on_another_node(rabbit: Cluster) -> None:
    # A documented RabbitMQ limitation, shown here so that nothing in
    # hushlight comes to rely on a retained config crossing nodes.
    topic = topics.config(SITE, "ns-" + secrets.token_hex(3))
    pub = gateway(rabbit, 0)
    pub.publish(topic, b'{"rev": 1}', retain=True)
    pub.close()

    elsewhere = gateway(rabbit, 1)
    assert elsewhere.subscribe(topic) == [1]
    same = gateway(rabbit, 0)
    assert same.subscribe(topic) == [1]
    try:
        assert [m.payload for m in same.received(1, timeout=5)] == [b'{"rev": 1}']
        assert elsewhere.received(1, timeout=2) == []
    finally:
        elsewhere.close()
        same.close()


def test_mqtt_over_tls_on_each_node(rabbit: Cluster) -> None:
    for url in rabbit.nodes.tls_urls:
        assert url.startswith("mqtts://")
    topic = topics.status(SITE, "ns-tls")
    sub = gateway(rabbit, 1)
    assert sub.subscribe(topic) == [1]
    tls = Link(
        rabbit.nodes.tls_urls[2].replace("mqtts://", "mqtt://"),
        "gateway",
        rabbit.gateway_password,
        ca=rabbit.ca,
    )
    tls.publish(topic, b"over tls")
    tls.close()
    assert [m.payload for m in sub.received(1, timeout=5)] == [b"over tls"]
    sub.close()


def test_cluster_status_command_lists_the_nodes(
    rabbit: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["cluster", "status", "--dir", str(rabbit.nodes.dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [n.nodename for n in rabbit.nodes.nodes]
    assert all(line.endswith("running") for line in out)
    assert [line.split()[1] for line in out] == rabbit.nodes.urls


def test_a_provisioned_virtual_sensor_reports_through_the_cluster(
    rabbit: Cluster, tmp_path: Path
) -> None:
    # The firmware itself (MicroPython unix port), with the account and the
    # CA provisioning gives it, over TLS to one node; the gateway listens on
    # another.
    config = provision(rabbit, tmp_path, "ns-41")
    watcher = gateway(rabbit, 1)
    assert watcher.subscribe(topics.sensors_wildcard(SITE, "+")) == [1]
    secret = tmp_path / "secret"
    secret.write_text(config["mqtt_password"])
    secret.chmod(0o600)
    args = ["--id", "ns-41", "--site", SITE, "--broker", rabbit.nodes.tls_urls[0]]
    args += ["--ca", str(rabbit.ca), "--username", config["mqtt_user"]]
    args += ["--password-file", str(secret), "--state-dir", str(tmp_path / "st")]
    args += ["--synthetic", "street", "--heap", "256K"]
    sensor = Sensor(tmp_path, *args)
    try:
        got = watcher.received(3, timeout=60)
        leaves = {m.topic.rsplit("/", 1)[1] for m in got}
        assert "levels" in leaves, sensor.output()
        assert {m.topic.split("/")[4] for m in got} == {"ns-41"}
        # a valid record of the contract, as the gateway will read it
        record = payloads.decode_levels(next(m.payload for m in got if m.topic.endswith("/levels")))
        assert record["seq"] >= 0
        assert sensor.proc.poll() is None, sensor.output()
    finally:
        sensor.kill()
        watcher.close()


def test_the_default_administrator_guest_is_not_there(rabbit: Cluster) -> None:
    # RabbitMQ's `guest`/`guest` may log in from loopback, where every client
    # of this cluster is: it would get past every sensor's permissions.
    with pytest.raises(ConnectionRefusedError):
        Link(rabbit.nodes.urls[0], "guest", "guest")
    with pytest.raises(ConnectionRefusedError):
        Link(rabbit.nodes.urls[0], "", "")  # nor anybody without a name


def test_a_frozen_node_answers_nothing_and_the_others_carry_on(rabbit: Cluster) -> None:
    # Subscribed before the freeze: until the others declare the frozen node
    # down (net_ticktime), a new subscription anywhere waits for it; routing
    # through subscriptions that exist does not.
    topic = topics.status(SITE, "ns-frozen")
    sub = gateway(rabbit, 1)
    assert sub.subscribe(topic) == [1]
    pub = gateway(rabbit, 0)
    rabbit.nodes.freeze(2)
    try:
        with pytest.raises(ConnectionRefusedError):
            gateway(rabbit, 2, timeout=2)
        pub.publish(topic, b"still here")
        assert [m.payload for m in sub.received(1, timeout=5)] == [b"still here"]
    finally:
        rabbit.nodes.thaw(2)
        pub.close()
        sub.close()
    gateway(rabbit, 2, timeout=10).close()


def test_an_anonymous_cluster_for_the_demo_lets_clients_in_without_a_name(
    tmp_path: Path,
) -> None:
    with RabbitCluster(1, anonymous=True, folder=tmp_path / "anon") as one:
        link = Link(one.urls[0], "", "")
        topic = topics.levels(SITE, "ns-anon")
        assert link.subscribe(topic) == [1]
        link.publish(topic, b"hello")
        assert [m.payload for m in link.received(1, timeout=5)] == [b"hello"]
        link.close()
        with pytest.raises(ConnectionRefusedError):
            Link(one.urls[0], "guest", "guest")


def test_nodes_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    # A test run killed outright (a timeout, SIGKILL) must not leave Erlang
    # VMs running on a machine shared with other work.
    code = (
        "import sys, time\n"
        "from tools.rabbit_cluster import RabbitCluster\n"
        "c = RabbitCluster(1, folder=__import__('pathlib').Path(sys.argv[1]))\n"
        "c.start()\n"
        "print(c.nodes[0].pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    folder = tmp_path / "orphan"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert alive(pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"node {pid} outlived the process that started it")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["start", "--definitions", "missing.json"], "definitions file"),
        (["status"], "holds no cluster started by `hushlight cluster start`"),
        (["load"], "give the accounts to load as --definitions FILE"),
    ],
)
def test_cluster_command_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert cli.main(["cluster", *args, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
