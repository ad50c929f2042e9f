"""Run a private three-node RabbitMQ cluster with the MQTT plugin: tests and trials.

Mosquitto is the single-node broker (tools/broker.py).  A region that must
survive the loss of a broker machine uses RabbitMQ's MQTT plugin on a
cluster of three nodes (a majority must be up, so two are not enough).  This
module runs such a cluster on one machine, from Debian's `rabbitmq-server`:

- each node has its own node name (`{prefix}-N@localhost`), its own MQTT
  port (and TLS port), distribution port, data and log folders under one
  temporary folder, and the cluster has its own Erlang cookie, so the
  system's RabbitMQ (node `rabbit`, ports 5672/25672) is never touched; the
  nodes register with the `epmd` that already runs;
- no AMQP listener: the cluster speaks MQTT only;
- persistent sessions (clean session off) keep their messages in quorum
  queues (`mqtt.durable_queue_type = quorum`), replicated to every node, so
  a session's QoS 1 messages survive the loss of any one node;
- accounts come from a definitions file (tools/rabbit_accounts.py), loaded
  at boot and again by :meth:`RabbitCluster.load_definitions`.

What RabbitMQ does not do, and the rest of hushlight must not assume:
retained messages are kept by the node that received them and are not
replicated, so a client connected to another node does not see them; and
there are no shared subscriptions.

Nodes are real processes: :meth:`RabbitCluster.kill` sends SIGKILL to a
node's Erlang VM (a machine that dies), :meth:`RabbitCluster.start_node`
brings it back and it rejoins the cluster from its data folder.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tools import rabbit_accounts
from tools.broker import _listening, free_port
from tools.errors import ToolError, UsageError

HELP = "start, stop or show a private three-node RabbitMQ cluster with the MQTT plugin"

SBIN = Path("/usr/lib/rabbitmq/bin")
SIZE = 3
BOOT_TIMEOUT = 60.0
STATE_FILE = "cluster.json"
BOOT_DEFINITIONS = "boot-definitions.json"
NET_TICKTIME = 10
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ANONYMOUS = "hushlight-anonymous"


def find_rabbitmq() -> Path:
    server = SBIN / "rabbitmq-server"
    if not server.exists():
        raise ToolError(
            "rabbitmq-server is not installed; run `make rabbitmq` (it installs it) "
            "or `apt-get install rabbitmq-server`"
        )
    return SBIN


class RabbitNode:
    """One node of the cluster: its name, ports and folder."""

    def __init__(self, folder: Path, name: str, *, tls: bool) -> None:
        self.dir = folder
        self.name = name
        self.nodename = f"{name}@localhost"
        self.mqtt_port = free_port()
        self.tls_port = free_port() if tls else None
        self.dist_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def pid(self) -> int | None:
        """The node's Erlang VM (beam) process id, while it runs."""
        # rabbitmq-server execs the VM: once our child has exited (and is
        # reaped here), the pid in the file is no longer the node's
        if self._proc is not None and self._proc.poll() is not None:
            return None
        try:
            pid = int((self.dir / "pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None and _listening(self.mqtt_port)

    def log_tail(self, lines: int = 20) -> str:
        out: list[str] = []
        for path in [self.dir / "stdout.log", *sorted((self.dir / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])


class RabbitCluster:
    """Three RabbitMQ nodes joined into one cluster, MQTT on each.

    ``tls`` = (cafile, certfile, keyfile) adds an MQTT TLS listener on each
    node.  ``definitions`` is a definitions file (users, permissions, topic
    permissions) loaded at boot; without one, the cluster has only the
    accounts given later to :meth:`load_definitions`.  ``anonymous`` lets
    clients in without a user name, with every right (as a test Mosquitto
    without a password file does): for the demo and benchmarks only.  The
    nodes die with the process that started them (a test run killed
    outright leaves no RabbitMQ behind) unless ``outlive`` is set, as
    `hushlight cluster start` does.  Linux ties a node to the thread that
    started it: call :meth:`start` and :meth:`start_node` from a thread that
    lives as long as the cluster, such as the main thread.
    """

    def __init__(
        self,
        size: int = SIZE,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        definitions: Path | None = None,
        folder: Path | None = None,
        prefix: str | None = None,
        anonymous: bool = False,
        outlive: bool = False,
    ) -> None:
        if size < 1:
            raise UsageError(f"a cluster of {size} nodes makes no sense; give 3 (or 1 for a trial)")
        self.sbin = find_rabbitmq()
        self.dir = folder or Path(tempfile.mkdtemp(prefix="hushlight-rabbit-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.definitions = definitions
        self.anonymous = anonymous
        self.outlive = outlive
        prefix = prefix or "hushlight-" + secrets.token_hex(3)
        self.nodes = [
            RabbitNode(self.dir / f"node{i + 1}", f"{prefix}-{i + 1}", tls=tls is not None)
            for i in range(size)
        ]
        self._home = self.dir / "home"
        # the MQTT plugin logs anonymous clients in as this account
        self._anonymous_password = secrets.token_urlsafe(16)

    # -- addresses ---------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def tls_urls(self) -> list[str]:
        return [n.tls_url for n in self.nodes]

    # -- processes ---------------------------------------------------------

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                # the cookie lives in $HOME/.erlang.cookie, for the nodes and the CLI
                "HOME": str(self._home),
                # not /etc/rabbitmq/rabbitmq-env.conf: that one names the system's node
                "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
        )
        if node is not None:
            d = node.dir
            env.update(
                {
                    "RABBITMQ_NODENAME": node.nodename,
                    "RABBITMQ_DIST_PORT": str(node.dist_port),
                    "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(d / "log"),
                    "RABBITMQ_PID_FILE": str(d / "pid"),
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                        "-kernel inet_dist_use_interface {127,0,0,1} -noinput -noshell"
                    ),
                    # rabbitmq-server then execs the Erlang VM instead of
                    # waiting on it in a shell: the VM is our child, so it
                    # can be tied to our life (_die_with_parent) and its pid
                    # is the Popen's; stdin is /dev/null and -noinput holds
                    "RABBITMQ_ALLOW_INPUT": "1",
                }
            )
        return env

    def _config(self, node: RabbitNode) -> str:
        lines = [
            "listeners.tcp = none",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
            *(
                [
                    "mqtt.allow_anonymous = true",
                    f"mqtt.default_user = {ANONYMOUS}",
                    f"mqtt.default_pass = {self._anonymous_password}",
                ]
                if self.anonymous
                else ["mqtt.allow_anonymous = false"]
            ),
            # persistent sessions in replicated queues: survive the loss of a node
            "mqtt.durable_queue_type = quorum",
            # A node that stops answering (cut off, frozen) is declared down
            # after about net_ticktime s; until then every change to the
            # cluster's tables, such as a new subscription, waits for it.
            # The default, 60 s, would hold a sensor's failover that long.
            f"net_ticktime = {NET_TICKTIME}",
            # the side of a split with fewer than half the nodes stops
            # serving (its clients move to the majority) and heals by itself
            # when it sees the others again
            "cluster_partition_handling = pause_minority",
            "log.console = false",
            "log.file.level = warning",
            # a test machine's disk is small and shared; RabbitMQ's default
            # alarm threshold would block publishers on a nearly full disk
            "disk_free_limit.absolute = 50MB",
        ]
        if self.tls is not None:
            cafile, certfile, keyfile = self.tls
            lines += [
                f"mqtt.listeners.ssl.default = 127.0.0.1:{node.tls_port}",
                f"ssl_options.cacertfile = {cafile}",
                f"ssl_options.certfile = {certfile}",
                f"ssl_options.keyfile = {keyfile}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        # Definitions loaded at boot also keep RabbitMQ from making its
        # default administrator, `guest`/`guest`, which may log in from
        # loopback, where every client of this cluster is.
        lines.append(f"load_definitions = {self.dir / BOOT_DEFINITIONS}")
        return "\n".join(lines) + "\n"

    def _boot_definitions(self) -> None:
        """The accounts every node loads at boot: the given file, and the anonymous account."""
        defs = (
            rabbit_accounts.read_definitions(self.definitions)
            if self.definitions is not None
            else rabbit_accounts.empty_definitions()
        )
        if self.anonymous:
            hashed = rabbit_accounts.hash_password(self._anonymous_password)
            defs = rabbit_accounts.merge(
                defs, rabbit_accounts.service_definitions(ANONYMOUS, hashed)
            )
        path = self.dir / BOOT_DEFINITIONS
        path.write_text(json.dumps(defs, indent=2) + "\n")
        path.chmod(0o600)

    def _prepare(self) -> None:
        self._home.mkdir(parents=True, exist_ok=True)
        cookie = self._home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.dir / "rabbitmq-env.conf").write_text("")
        self._boot_definitions()
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            (node.dir / "rabbitmq.conf").write_text(self._config(node))
            (node.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    def _launch(self, node: RabbitNode) -> None:
        if node.pid is not None:
            return
        (node.dir / "pid").unlink(missing_ok=True)
        with open(node.dir / "stdout.log", "ab") as out:
            node._proc = subprocess.Popen(
                [str(self.sbin / "rabbitmq-server")],
                env=self._env(node),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self.outlive else _die_with_parent,
            )

    def _wait_listening(self, node: RabbitNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = [node.mqtt_port] + ([node.tls_port] if node.tls_port else [])
        while time.monotonic() < deadline:
            if node._proc is not None and node._proc.poll() is not None:
                raise ToolError(
                    f"RabbitMQ node {node.nodename} exited at start-up; its log ends:\n"
                    f"{node.log_tail()}"
                )
            if all(_listening(p) for p in ports):
                return
            time.sleep(0.1)
        raise ToolError(
            f"RabbitMQ node {node.nodename} did not listen on MQTT port {node.mqtt_port} "
            f"within {timeout:.0f} s; its log ends:\n{node.log_tail()}"
        )

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl` against ``node``; its output, or ToolError with it."""
        cmd = [str(self.sbin / "rabbitmqctl"), "-n", node.nodename, *args]
        try:
            done = subprocess.run(
                cmd, env=self._env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolError(
                f"`rabbitmqctl {' '.join(args)}` on {node.nodename} took over {timeout:.0f} s"
            ) from exc
        if done.returncode != 0:
            raise ToolError(
                f"`rabbitmqctl {' '.join(args)}` on {node.nodename} failed: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot every node at once, then join nodes 2.. to node 1, one at a time.

        Booting in parallel and joining afterwards is faster than booting
        one after the other, which RabbitMQ's peer discovery would need.
        The joins go one by one: two nodes joining at once can hold each
        other's `start_app` for a minute or more.
        """
        self._prepare()
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._wait_listening(node, timeout)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.nodename not in self.members(node):
                self._join(node, first)
        for node in self.nodes:
            self._wait_listening(node, timeout)
        self._write_state()

    def _join(self, node: RabbitNode, first: RabbitNode) -> None:
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", first.nodename)
        self.ctl(node, "start_app")

    def members(self, node: RabbitNode | None = None) -> list[str]:
        """The running nodes of the cluster, as ``node`` (default: the first running) sees them."""
        node = node or next((n for n in self.nodes if n.pid is not None), self.nodes[0])
        status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``'s Erlang VM: the node dies as with a power cut."""
        node = self.nodes[index]
        pid = node.pid
        if pid is None:
            raise ToolError(f"RabbitMQ node {node.nodename} does not run; nothing to kill")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node.pid is not None and time.monotonic() < deadline:
            if node._proc is not None:
                node._proc.poll()
            time.sleep(0.05)
        if node._proc is not None:
            node._proc.wait(10)
            node._proc = None

    def freeze(self, index: int) -> None:
        """SIGSTOP node ``index``: it keeps its sockets but answers nothing, like a
        machine cut off the network, until :meth:`thaw`."""
        node = self.nodes[index]
        pid = node.pid
        if pid is None:
            raise ToolError(f"RabbitMQ node {node.nodename} does not run; nothing to freeze")
        os.kill(pid, signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        """Let a frozen node run again."""
        pid = self.nodes[index].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def start_node(self, index: int, timeout: float = BOOT_TIMEOUT) -> None:
        """Start a stopped or killed node again; it rejoins the cluster from its data."""
        node = self.nodes[index]
        if node.running:
            return
        self._launch(node)
        self._wait_listening(node, timeout)

    def load_definitions(self, path: Path) -> None:
        """Import users and permissions into the whole cluster (they are replicated).

        They are added to the accounts the nodes load at boot as well: a node
        that boots again re-imports that file, and would otherwise put back
        an older password of a sensor provisioned again since.
        """
        node = next((n for n in self.nodes if n.running), None)
        if node is None:
            raise ToolError("no node of the RabbitMQ cluster runs; start it first")
        self.ctl(node, "import_definitions", str(path))
        boot = self.dir / BOOT_DEFINITIONS
        merged = rabbit_accounts.merge(
            rabbit_accounts.read_definitions(boot), rabbit_accounts.read_definitions(path)
        )
        boot.write_text(json.dumps(merged, indent=2) + "\n")
        boot.chmod(0o600)

    def stop(self) -> None:
        """Stop every node (SIGTERM to its VM: a clean shutdown), then make sure they are gone."""
        # the pids are taken first: a stopping node removes its pid file
        # before its VM has exited
        pids = [(node, node.pid) for node in self.nodes]
        for _node, pid in pids:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a frozen node must run to stop
        deadline = time.monotonic() + 20
        for node, pid in pids:
            if node._proc is not None:
                try:
                    node._proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node._proc.kill()
                    node._proc.wait()
                node._proc = None
                continue
            while pid is not None and alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- `hushlight cluster`: a cluster that outlives the command ------------

    def _write_state(self) -> None:
        state = {
            "prefix": self.nodes[0].name.rsplit("-", 1)[0],
            "tls": [str(p) for p in self.tls] if self.tls else None,
            "definitions": str(self.definitions) if self.definitions else None,
            "anonymous": self.anonymous,
            "nodes": [
                {"mqtt_port": n.mqtt_port, "tls_port": n.tls_port, "dist_port": n.dist_port}
                for n in self.nodes
            ],
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, folder: Path) -> RabbitCluster:
        """The cluster a `hushlight cluster start --dir FOLDER` left running."""
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{folder} holds no cluster started by `hushlight cluster start` ({exc}); "
                "check the folder"
            ) from None
        tls = state["tls"]
        cluster = cls(
            len(state["nodes"]),
            tls=(Path(tls[0]), Path(tls[1]), Path(tls[2])) if tls else None,
            definitions=Path(state["definitions"]) if state["definitions"] else None,
            folder=folder,
            prefix=state["prefix"],
            anonymous=bool(state.get("anonymous")),
        )
        for node, ports in zip(cluster.nodes, state["nodes"], strict=True):
            node.mqtt_port = ports["mqtt_port"]
            node.tls_port = ports["tls_port"]
            node.dist_port = ports["dist_port"]
        return cluster


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state letter follows the command name, which is in parentheses
    return stat[stat.rindex(")") + 2] not in "ZX"


def _die_with_parent() -> None:
    """In the node's process before it runs: SIGKILL it when its parent exits.

    Linux's PR_SET_PDEATHSIG survives the execs from rabbitmq-server down
    to the Erlang VM (none is set-user-ID).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("start", "stop", "status", "load"),
        help="load: import the accounts of --definitions into the running cluster",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="folder for the nodes' data, logs and cookie (kept by start, removed by stop)",
    )
    parser.add_argument(
        "--definitions",
        type=Path,
        metavar="FILE",
        help="RabbitMQ definitions file with the accounts (`hushlight provision --rabbit-defs`)",
    )
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="let clients in without a user name (a demo or benchmark cluster only)",
    )
    parser.add_argument(
        "--tls",
        nargs=3,
        type=Path,
        metavar=("CAFILE", "CERTFILE", "KEYFILE"),
        help="add an MQTT TLS listener on each node",
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError:
        raise
    except ToolError as exc:
        # a node that would not start or a rabbitmqctl that failed: its own words
        print(f"hushlight cluster: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    if args.action == "start":
        if (folder / STATE_FILE).exists():
            raise UsageError(
                f"{folder} already holds a cluster; `hushlight cluster stop --dir {folder}` first"
            )
        defs = args.definitions.resolve() if args.definitions else None
        if defs is not None and not defs.is_file():
            raise UsageError(f"definitions file {defs} does not exist; check the path")
        tls = tuple(p.resolve() for p in args.tls) if args.tls else None
        cluster = RabbitCluster(
            tls=tls, definitions=defs, folder=folder, anonymous=args.anonymous, outlive=True
        )
        began = time.monotonic()
        try:
            cluster.start()
        except (ToolError, KeyboardInterrupt):
            cluster.stop()
            raise
        print(f"cluster of {len(cluster.nodes)} nodes up in {time.monotonic() - began:.1f} s")
        _print_nodes(cluster)
        return 0
    if args.action == "load" and (args.definitions is None or not args.definitions.is_file()):
        raise UsageError(
            "give the accounts to load as --definitions FILE "
            "(written by `hushlight provision --rabbit-defs FILE`)"
        )
    cluster = RabbitCluster.attach(folder)
    if args.action == "status":
        _print_nodes(cluster)
        return 0
    if args.action == "load":
        cluster.load_definitions(args.definitions.resolve())
        print(f"accounts of {args.definitions} loaded into the cluster in {folder}")
        return 0
    cluster.close()
    print(f"cluster in {folder} stopped and its folder removed")
    return 0


def _print_nodes(cluster: RabbitCluster) -> None:
    for node in cluster.nodes:
        state = "running" if node.running else "down"
        tls = f"  {node.tls_url}" if node.tls_port else ""
        print(f"{node.nodename}  {node.url}{tls}  {state}")
