"""Gateway throughput and reaction time against a private Mosquitto.

    .venv/bin/python bench/gateway.py [--sensors 1000] [--seconds 10]
    .venv/bin/python bench/gateway.py --sensors 10000 --seconds 60     # the target

What runs (all on this machine):

- a private Mosquitto (`tools.broker.Mosquitto`);
- `hushlight gateway` in its own process, with zones of `--per-zone` sensors;
- N simulated sensors in another process (`--conns` raw MQTT connections
  writing pre-built QoS 1 packets, ~5% of a core for 10,000 sensors, so they
  do not starve the gateway on a small machine), each publishing one level
  record per second, spread evenly over the second;
- a prober in this process that, 5 times a second (so 60 s give a p99 over
  300 probes, not the second largest of 60), sends one loud record
  from a fresh zone's probe sensor and times how long until the override for
  that zone arrives on ``lights/+/set`` (publish -> broker -> gateway ->
  policy -> storage -> broker -> here);
- then, the ceiling: the same broker, a bare aiomqtt subscriber draining
  queued QoS 1 messages as fast as it can (with the gateway's socket work,
  `gateway.paho_io`, and with plain aiomqtt), and the gateway draining the
  same number of queued records from its persistent session; their ratio says
  how much of the client library's rate the gateway's own work leaves.

The main figure is the gateway's CPU per record (from /proc, so it does not
depend on how busy the machine is); the rates and latencies do.  Prints
figures only; nothing is asserted.  The machine is shared, so run it twice
and read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

from gateway import paho_io  # noqa: E402 -- after the path fix above
from protocol import payloads, topics  # noqa: E402
from tests.firmware.conftest import make_ca  # noqa: E402 -- a test CA for --tls
from tools.broker import Mosquitto, free_port  # noqa: E402

SITE = "bench"
TOKEN = "bench-token-0123456789abcdef"


# ---------------------------------------------------------------- set-up


def write_config(
    path: Path, broker: str, zones: int, per_zone: int, http_port: int, ca: Path | None = None
) -> None:
    lines = [
        "[site]",
        f'id = "{SITE}"',
        "stale_after_s = 30",
        "[broker]",
        f'url = "{broker}"',
        *([f'ca = "{ca}"'] if ca else []),
        "[storage]",
        f'path = "{path.parent / "bench.db"}"',
        "[http]",
        f"port = {http_port}",
        f'token = "{TOKEN}"',
    ]
    for z in range(zones):
        sensors = [f"z{z}-s{i}" for i in range(per_zone)] + [f"z{z}-probe"]
        lines += [
            "[[zones]]",
            f'id = "z{z}"',
            f"sensors = {json.dumps(sensors)}",
            f'light_groups = ["z{z}-lamps"]',
            'schedule = ["00:00-24:00"]',
            "threshold_db = 70.0",
            "window_s = 10",
            "hold_s = 600",
            "[zones.messages]",
            'en = "People are sleeping here."',
        ]
    path.write_text("\n".join(lines) + "\n")


def sensor_ids(zones: int, per_zone: int) -> list[str]:
    return [f"z{z}-s{i}" for z in range(zones) for i in range(per_zone)]


# ---------------------------------------------------------------- the sensors (child process)

# Levels records as the firmware sends them (`payloads.encode_levels` with two
# decimals), formatted from a template: the simulated sensors must cost the
# machine little, or on two cores they starve the gateway being measured.
_RECORD = b'{"seq":%d,"t0":%d,"t1":%d,"laeq":%s,"lafmax":60,"lceq":62,"flags":[]}'
_LAEQ = tuple(b"%.2f" % (45.0 + i * 0.15) for i in range(100))  # 45.00 .. 59.85 dB


class RawPublisher:
    """One MQTT 3.1.1 connection writing pre-built QoS 1 PUBLISH packets on a plain socket.

    paho spends ~50 us of Python per QoS 1 publish (message objects, locks,
    its network thread); here a packet is a few byte concatenations and a
    whole 10 ms slice of them goes out in one `sendall`.  PUBACKs (4 bytes
    each) are read back and counted, so the broker's flow is the real one.
    """

    def __init__(self, port: int, client_id: str) -> None:
        import socket
        import struct

        self._struct = struct
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
        self.sock.sendall(b"\x10" + self._length(len(body)) + body)  # CONNECT, clean session
        connack = self._recv_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise SystemExit(f"broker refused the bench publisher: CONNACK {connack.hex()}")
        self.sock.setblocking(False)
        self.pid = 0
        self.sent = 0
        self.acked_bytes = 0
        self._pending: list[bytes] = []

    @staticmethod
    def _length(n: int) -> bytes:
        out = bytearray()
        while True:
            n, digit = n >> 7, n & 0x7F
            out.append(digit | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("broker closed the bench publisher's connection")
            data += chunk
        return data

    def topic(self, topic: str) -> bytes:
        """The topic as it goes into a PUBLISH (length-prefixed), built once per sensor."""
        raw = topic.encode()
        return self._struct.pack("!H", len(raw)) + raw

    def add(self, topic: bytes, payload: bytes) -> None:
        """Queue one QoS 1 PUBLISH; `flush` sends what is queued."""
        self.pid = self.pid % 65535 + 1
        rest = len(topic) + 2 + len(payload)
        self._pending.append(
            b"\x32" + self._length(rest) + topic + self.pid.to_bytes(2, "big") + payload
        )
        self.sent += 1

    def flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.sock.setblocking(False)
        self.read_acks()

    def read_acks(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                raise SystemExit("broker closed the bench publisher's connection")
            self.acked_bytes += len(chunk)

    def close(self, timeout: float = 60.0) -> None:
        """Wait until the broker acknowledged everything sent (4 bytes per PUBACK), disconnect."""
        self.flush()
        limit = time.monotonic() + timeout
        while self.acked_bytes < 4 * self.sent and time.monotonic() < limit:
            time.sleep(0.01)
            self.read_acks()
        self.sock.setblocking(True)
        self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def publish_load(
    port: int | list[int], sensors: list[str], rate_hz: float, seconds: float, conns: int, out: Any
) -> None:
    """N sensors at `rate_hz`, evenly spread, over `conns` raw connections (spread in turn
    over the brokers' ports when given several: the nodes of a cluster)."""
    ports = [port] if isinstance(port, int) else port
    pubs = [RawPublisher(ports[i % len(ports)], f"bench-sensors-{i}") for i in range(conns)]
    tps = [pubs[k % conns].topic(topics.levels(SITE, s)) for k, s in enumerate(sensors)]
    check = _RECORD % (0, 0, 1000, _LAEQ[0])
    payloads.decode("levels", check)  # the template must stay a valid record
    rng = random.Random(1)
    seq = [0] * len(sensors)
    n = len(sensors)
    step = 0.01  # publish in 10 ms slices
    per_slice = n * rate_hz * step
    start = time.monotonic()
    end = start + seconds
    sent = 0
    due = 0.0
    idx = 0
    late_slices = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due += per_slice
        t1 = int(time.time() * 1000)
        while sent < due:
            k = idx % n
            body = _RECORD % (seq[k], t1 - 1000, t1, _LAEQ[rng.randrange(100)])
            seq[k] += 1
            pubs[k % conns].add(tps[k], body)
            sent += 1
            idx += 1
        for p in pubs:
            p.flush()
        slice_end = start + (sent / (n * rate_hz))
        pause = slice_end - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            late_slices += 1
    elapsed = time.monotonic() - start
    for p in pubs:
        p.close()
    out.put({"sent": sent, "elapsed": elapsed, "late_slices": late_slices})


def flood(port: int, topic_fmt: str, ids: list[str], count: int, conns: int, out: Any) -> None:
    """`count` QoS 1 level records as fast as they can be sent, round-robin over `ids`."""
    pubs = [RawPublisher(port, f"bench-flood-{i}") for i in range(conns)]
    tps = [[p.topic(topic_fmt % x) for x in ids] for p in pubs]
    start = time.monotonic()
    t1 = 0
    for i in range(count):
        if i % 500 == 0:
            t1 = int(time.time() * 1000)  # fresh, so the gateway treats them as live
            for p in pubs:
                p.flush()
        c = i % conns
        pubs[c].add(tps[c][i % len(ids)], _RECORD % (1_000_000 + i, t1 - 1000, t1, b"50.00"))
    for p in pubs:
        p.close()
    elapsed = time.monotonic() - start
    out.put({"sent": count, "elapsed": elapsed})


# ---------------------------------------------------------------- the gateway (child process)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GatewayProc:
    def __init__(self, config: Path, http_port: int, log: Path, profile: str | None) -> None:
        self.profile = profile
        self.config = config
        self.http_port = http_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "gateway", "--config", str(self.config),
                 "--log-level", "warning"],
                cwd=ROOT_DIR, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            base = name.split("{", 1)[0]
            out[base] = out.get(base, 0.0) + float(value)
        return out

    async def wait_up(self, http: aiohttp.ClientSession) -> None:
        for _ in range(600):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit("gateway exited:\n" + self.log.read_text()[-3000:])
            try:
                async with http.get(f"http://127.0.0.1:{self.http_port}/api/health") as r:
                    if (await r.json())["mqtt_connected"]:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise SystemExit("gateway did not come up:\n" + self.log.read_text()[-3000:])

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the gateway process has used so far."""
        assert self.proc is not None
        return cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- measurements


async def probe(
    port: int, zones: list[int], interval: float, seconds: float
) -> tuple[list[tuple[float, float]], int]:
    """Loud records from fresh zones; (latency until each zone's override arrives, wall
    clock time it was sent)."""
    sent_at: dict[str, tuple[float, float]] = {}  # zone -> (perf_counter, wall clock)
    latencies: list[tuple[float, float]] = []  # (seconds, wall clock when sent)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-prober") as client:
        await client.subscribe(topics.lights_wildcard(SITE, "set"), qos=1)

        async def listen() -> None:
            async for m in client.messages:
                arrived = time.perf_counter()
                assert isinstance(m.payload, bytes)
                zone = json.loads(m.payload)["zone"]
                if zone in sent_at:
                    sent, wall = sent_at.pop(zone)
                    latencies.append((arrived - sent, wall))

        listener = asyncio.create_task(listen())
        start = time.monotonic()
        probes = 0
        for z in zones:
            if time.monotonic() - start >= seconds:
                break
            t1 = int(time.time() * 1000)
            body = payloads.encode_levels(0, t1 - 1000, t1, 100.0, 103.0, 104.0, 0)
            sent_at[f"z{z}"] = (time.perf_counter(), time.time())
            await client.publish(topics.levels(SITE, f"z{z}-probe"), body, qos=1)
            probes += 1
            await asyncio.sleep(interval)
        await asyncio.sleep(2.0)  # the stragglers
        listener.cancel()
    return latencies, probes


def start_flood(port: int, topic_fmt: str, ids: list[str], count: int, conns: int) -> Any:
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    p = ctx.Process(target=flood, args=(port, topic_fmt, ids, count, conns, out))
    p.start()
    return p, out


async def bare_rate(port: int, count: int, conns: int, hooked: bool) -> tuple[float, float]:
    """(received/s of a bare aiomqtt subscriber, sent/s of the flood) for `count` messages.

    `hooked`: take messages through aiomqtt's `queue_type` hook and with the
    socket work of `gateway.paho_io`, as the gateway does, instead of aiomqtt's
    `async for` iterator (which costs a task per message) and paho's own reads.
    """
    got = 0
    first = last = 0.0
    done = asyncio.Event()

    def one() -> None:
        nonlocal got, first, last
        last = time.perf_counter()
        if got == 0:
            first = last
        got += 1
        if got == count:
            done.set()

    class Hook(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            one()

    kind = "hook" if hooked else "iter"
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-bare-{kind}", queue_type=Hook if hooked else None
    ) as c:
        if hooked:
            paho_io.tune(c, lambda topic, payload: one())  # and the gateway's socket work
        await c.subscribe(f"bench/{kind}/#", qos=1)
        p, out = start_flood(port, f"bench/{kind}/%s", [str(i) for i in range(1000)], count, conns)

        async def take() -> None:
            if hooked:
                await done.wait()
                return
            async for _ in c.messages:
                one()
                if done.is_set():
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(take(), 120)
        stats = await asyncio.to_thread(out.get)
        p.join()
    return (got - 1) / (last - first), stats["sent"] / stats["elapsed"]


async def gateway_rate(
    gw: GatewayProc,
    http: aiohttp.ClientSession,
    port: int,
    ids: list[str],
    count: int,
    conns: int,
) -> tuple[float, float, float]:
    """(accepted records/s of the gateway, messages dropped, gateway CPU us per record)
    under a flood of `count` records."""
    m = await gw.metrics(http)
    base = m["hushlight_records_accepted_total"]
    dropped0 = m.get("hushlight_queue_dropped_total", 0.0)
    samples: list[tuple[float, float]] = [(time.monotonic(), 0.0)]
    p, out = start_flood(port, topics.root(SITE) + "/sensors/%s/levels", ids, count, conns)
    spy = None
    if gw.profile and gw.proc is not None:
        # collapsed stacks of the gateway while it runs flat out (py-spy from the venv)
        spy = subprocess.Popen(  # noqa: ASYNC220 -- starts at once, waited for in a thread
            [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(gw.proc.pid),
             "-d", "6", "-f", "raw", "-o", gw.profile],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    cpu0 = cpu1 = gw.cpu_s()
    idle = 0
    while idle < 2:
        # rendering /metrics for 10,000 sensors costs the gateway tens of ms: ask once a second
        await asyncio.sleep(1.0)
        m = await gw.metrics(http)
        value = m["hushlight_records_accepted_total"] - base
        if value == samples[-1][1] and value > 0:
            idle += 1
        else:
            idle = 0
            samples.append((time.monotonic(), value))
            cpu1 = gw.cpu_s()
    await asyncio.to_thread(out.get)
    p.join()
    if spy is not None:
        await asyncio.to_thread(spy.wait)
    moving = [s for s in samples if s[1] > 0]
    (t_a, v_a), (t_b, v_b) = samples[samples.index(moving[0]) - 1], moving[-1]
    dropped = m.get("hushlight_queue_dropped_total", 0.0) - dropped0
    return (v_b - v_a) / (t_b - t_a), dropped, (cpu1 - cpu0) / max(1.0, v_b) * 1e6


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def run(args: argparse.Namespace) -> None:
    per_zone = args.per_zone
    zones = max(1, args.sensors // per_zone)
    n = zones * per_zone
    ctx = mp.get_context("spawn")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hushlight-bench-"))
        tls = make_ca(Path(tmp) / "tls", "hushlight bench CA") if args.tls else None
        broker = stack.enter_context(Mosquitto(tls=(tls.ca, tls.cert, tls.key) if tls else None))
        cfg = Path(tmp) / "site.toml"
        http_port = free_port()
        # with --tls only the gateway's own connection is TLS: its reads are what is measured
        url = broker.tls_url if tls else broker.url
        write_config(cfg, url, zones, per_zone, http_port, tls.ca if tls else None)
        gw = GatewayProc(cfg, http_port, Path(tmp) / "gateway.log", args.py_spy)
        gw.spawn()
        async with aiohttp.ClientSession() as http:
            await gw.wait_up(http)
            print(
                f"sensors {n} in {zones} zones, 1 record/s each, {args.seconds} s measured"
                f"{', gateway over TLS' if tls else ''}; "
                f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
            )

            out: Any = ctx.Queue()
            warm = 3.0
            load = ctx.Process(
                target=publish_load,
                args=(broker.port, sensor_ids(zones, per_zone), 1.0, warm + args.seconds + 3,
                      args.conns, out),
            )  # fmt: skip
            load.start()
            await asyncio.sleep(warm)
            m0 = await gw.metrics(http)
            cpu0 = gw.cpu_s()
            broker_pid = broker._proc.pid if broker._proc else 0  # the bench peeks: no API
            bcpu0 = cpu_s(broker_pid)
            assert load.pid is not None
            pcpu0 = cpu_s(load.pid)
            t0 = time.monotonic()
            order = list(range(zones))
            random.Random(2).shuffle(order)
            # each probe is a real nudge: decisions recorded, policy state saved
            interval = 1.0 / args.probe_rate

            rss: list[float] = []

            async def sample_rss() -> None:
                while True:
                    rss.append(gw.rss_mb())
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample_rss())
            latencies, probes = await probe(broker.port, order, interval, args.seconds)
            m1 = await gw.metrics(http)
            cpu1 = gw.cpu_s()
            bcpu1 = cpu_s(broker_pid)
            pcpu1 = cpu_s(load.pid)
            t1 = time.monotonic()
            sampler.cancel()
            stats = out.get()
            load.join()

            accepted = (
                m1["hushlight_records_accepted_total"] - m0["hushlight_records_accepted_total"]
            )
            offered = stats["sent"] / stats["elapsed"]
            rate = accepted / (t1 - t0)
            print(
                f"offered            {offered:10.0f} records/s  (publisher fell behind in "
                f"{stats['late_slices']} of {int(stats['elapsed'] / 0.01)} 10 ms slices)"
            )
            print(f"gateway sustained  {rate:10.0f} records/s  ({rate / offered:.1%} of offered)")
            print(
                f"queue dropped      {m1.get('hushlight_queue_dropped_total', 0):10.0f}   "
                f"depth at end {m1.get('hushlight_queue_depth', 0):.0f}"
            )
            if latencies:
                ms = [x * 1000 for x, _ in latencies]
                print(
                    f"publish->override  p50 {pct(ms, 50):7.1f} ms  p90 {pct(ms, 90):7.1f} ms  "
                    f"p99 {pct(ms, 99):7.1f} ms  max {max(ms):7.1f} ms  "
                    f"({len(ms)} of {probes} probes answered)"
                )
                # when the slowest were sent (second of the minute): periodic work shows up
                slow = sorted(latencies, reverse=True)[: max(3, len(latencies) // 50)]
                when = ", ".join(f"{x * 1000:.0f} ms at :{wall % 60:04.1f}" for x, wall in slow)
                print(f"slowest probes     {when}")
            else:
                print(
                    f"publish->override  no answer to {probes} probes: behind the load, their "
                    "records arrive late and late records never trigger (by design)"
                )
            print(
                f"gateway RSS        {max(rss):10.1f} MB (max), {statistics.mean(rss):.1f} MB mean"
            )
            cpu_us = (cpu1 - cpu0) / max(1.0, accepted) * 1e6
            print(
                f"gateway CPU        {cpu_us:10.1f} us per record ({(cpu1 - cpu0) / (t1 - t0):.0%} "
                f"of a core): one free core carries ~{1e6 / cpu_us:.0f} records/s"
            )
            print(
                f"broker CPU         {(bcpu1 - bcpu0) / (t1 - t0):10.0%} of a core; the sensors' "
                f"publisher {(pcpu1 - pcpu0) / (t1 - t0):.0%}"
            )

            # ceiling: the same flood into a bare subscriber, then into the gateway
            count = args.flood
            gw_rate, dropped, flood_us = await gateway_rate(
                gw, http, broker.port, sensor_ids(zones, per_zone), count, args.conns
            )
            gw.stop()
            iterated, flood_rate = await bare_rate(broker.port, count, args.conns, False)
            bare, _ = await bare_rate(broker.port, count, args.conns, True)
            print(
                f"ceiling            a bare aiomqtt subscriber takes {bare:8.0f} msg/s "
                f"through the queue hook the gateway uses, {iterated:.0f} msg/s with "
                f"`async for` (flood sent {flood_rate:.0f}/s)"
            )
            print(
                f"gateway flat out   {gw_rate:10.0f} records/s = {gw_rate / bare:.0%} of the "
                f"ceiling ({dropped:.0f} dropped), {flood_us:.1f} us of gateway CPU per record"
            )
            print(
                f"at 1 Hz per sensor the gateway carries {n} sensors at "
                f"{rate / bare:.0%} of the ceiling; flat out, {gw_rate:.0f} sensors"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-zone", type=int, default=10, help="sensors per zone (default 10)")
    parser.add_argument(
        "--probe-rate", type=float, default=5.0, help="loud probes per second (default 5)"
    )
    parser.add_argument("--conns", type=int, default=4, help="publisher connections (default 4)")
    parser.add_argument(
        "--tls", action="store_true", help="the gateway connects over TLS (mqtts://, a test CA)"
    )
    parser.add_argument("--flood", type=int, default=60000, help="messages for the ceiling")
    parser.add_argument(
        "--py-spy", metavar="OUT.txt", default=None, help="profile the flat-out gateway (py-spy)"
    )
    args = parser.parse_args()
    os.chdir(ROOT_DIR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
