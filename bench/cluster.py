"""Gateway throughput and reaction time through the three-node RabbitMQ cluster, beside
one Mosquitto in the same run.

    .venv/bin/python bench/cluster.py [--sensors 1000] [--seconds 10]
    .venv/bin/python bench/cluster.py --sensors 10000 --seconds 60 --two-gateways

What runs (all on this machine), once per broker, one broker after the other:

- the reference: a private Mosquitto (`tools.broker.Mosquitto`), as in
  bench/gateway.py;
- the cluster: three RabbitMQ nodes with the MQTT plugin
  (`tools.rabbit_cluster.RabbitCluster`, anonymous mode), the gateway's
  persistent session in a quorum queue replicated to the three nodes;
- `hushlight gateway` in its own process, connected to node 1 (or to the
  Mosquitto);
- the raw-socket sensors of bench/gateway.py (`publish_load`), their
  connections spread in turn over the three nodes, so two thirds of the
  records cross from one node to another before they reach the gateway;
- the prober of bench/gateway.py, on node 3: loud records from fresh zones,
  timed until the zone's override comes back on ``lights/+/set``;
- with ``--flood N``, the gateway flat out: N queued records published as
  fast as they go to node 2 (bench/gateway.py's `gateway_rate`);
- with ``--two-gateways``, a third run on the cluster: two gateways, on
  nodes 1 and 2, sharing the zones through leases in a scratch PostgreSQL
  database.  RabbitMQ has no shared subscriptions, so each gateway
  subscribes to every sensor and receives every record; it stores and
  commands only the zones it holds.

The same figures are printed for each run, then the cluster's as a ratio of
Mosquitto's.  Prints figures only; nothing is asserted.  The machine is
shared, so run it twice and read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

ROOT_DIR = Path(__file__).resolve().parent.parent
# the repository first: `gateway` is the package, not bench/gateway.py beside this file
sys.path.insert(0, str(ROOT_DIR))

from bench.gateway import (  # noqa: E402 -- after the path fix above
    SITE,
    GatewayProc,
    cpu_s,
    gateway_rate,
    pct,
    probe,
    publish_load,
    sensor_ids,
    write_config,
)
from tests.gateway.postgres import scratch_database  # noqa: E402
from tools.broker import Mosquitto, free_port  # noqa: E402
from tools.rabbit_cluster import RabbitCluster  # noqa: E402


@dataclass
class Broker:
    """Where a run's clients connect, and the processes whose CPU is the broker's."""

    name: str
    gateway_ports: list[int]  # one per gateway
    sensor_ports: list[int]  # the sensors' connections go to these in turn
    probe_port: int
    flood_port: int
    pids: list[int]


@dataclass
class Figures:
    offered: float = 0.0
    sustained: float = 0.0  # records/s accepted, per gateway
    dropped: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    answered: str = ""
    cpu_us: float = 0.0  # gateway CPU per record
    broker_core: float = 0.0  # share of one core, all nodes together
    broker_idle: float = 0.0  # the same without records
    flat_out: float = 0.0


def gateway_config(
    path: Path, url: str, zones: int, per_zone: int, http_port: int, shared: str | None, name: str
) -> None:
    """bench/gateway.py's site config; with `shared` (a postgresql:// URL) the gateway keeps
    its data there and shares the zones with the others under the client id `name`."""
    write_config(path, url, zones, per_zone, http_port)
    if shared is None:
        return
    lines = path.read_text().splitlines()
    storage = lines.index("[storage]")
    # storage.path and storage.url exclude each other
    lines[storage + 1] = f'url = "{shared}"'
    lines.insert(lines.index("[broker]") + 1, f'client_id = "{name}"')
    path.write_text("\n".join(lines) + "\n")


async def health(gw: GatewayProc, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{gw.http_port}/api/health") as r:
        body: dict[str, Any] = await r.json()
        return body


async def wait_split(gws: list[GatewayProc], http: aiohttp.ClientSession, zones: int) -> None:
    """Until every zone is held and each gateway holds its share."""
    for _ in range(600):
        held = [len((await health(gw, http))["zones_held"] or {}) for gw in gws]
        if sum(held) == zones and min(held) >= zones // len(gws):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the gateways did not split the {zones} zones within 60 s: they hold {held}")


async def forget_session(port: int, client_id: str) -> None:
    """End a gateway's persistent session, so that its queue stops taking the next run's
    records (on the cluster, a quorum queue replicated to every node)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=True):
        pass


async def measure(
    broker: Broker, args: argparse.Namespace, folder: Path, shared: str | None
) -> Figures:
    per_zone = args.per_zone
    zones = max(1, args.sensors // per_zone)
    ctx = mp.get_context("spawn")
    fig = Figures()
    gws: list[GatewayProc] = []
    names = [f"bench-gw-{i + 1}" for i in range(len(broker.gateway_ports))]
    for name, port in zip(names, broker.gateway_ports, strict=True):
        cfg = folder / f"{name}.toml"
        http_port = free_port()
        url = f"mqtt://127.0.0.1:{port}"
        gateway_config(cfg, url, zones, per_zone, http_port, shared, name)
        gws.append(GatewayProc(cfg, http_port, folder / f"{name}.log", None))
    try:
        for gw in gws:
            gw.spawn()
        async with aiohttp.ClientSession() as http:
            for gw in gws:
                await gw.wait_up(http)
            if shared is not None:
                await wait_split(gws, http, zones)
            print(f"\n{broker.name}")
            # an idle broker's own CPU (timers, the nodes' heartbeats), not the records'
            idle0, t_idle = sum(cpu_s(p) for p in broker.pids), time.monotonic()
            await asyncio.sleep(3.0)
            fig.broker_idle = (sum(cpu_s(p) for p in broker.pids) - idle0) / (
                time.monotonic() - t_idle
            )

            out: Any = ctx.Queue()
            warm = 3.0
            load = ctx.Process(
                target=publish_load,
                args=(broker.sensor_ports, sensor_ids(zones, per_zone), 1.0,
                      warm + args.seconds + 3, args.conns, out),
            )  # fmt: skip
            load.start()
            await asyncio.sleep(warm)
            m0 = [await gw.metrics(http) for gw in gws]
            cpu0 = [gw.cpu_s() for gw in gws]
            bcpu0 = sum(cpu_s(p) for p in broker.pids)
            t0 = time.monotonic()
            order = list(range(zones))
            random.Random(2).shuffle(order)
            latencies, probes = await probe(
                broker.probe_port, order, 1.0 / args.probe_rate, args.seconds
            )
            m1 = [await gw.metrics(http) for gw in gws]
            cpu1 = [gw.cpu_s() for gw in gws]
            bcpu1 = sum(cpu_s(p) for p in broker.pids)
            t1 = time.monotonic()
            stats = out.get()
            load.join()

            key = "hushlight_records_accepted_total"
            accepted = [b[key] - a[key] for a, b in zip(m0, m1, strict=True)]
            fig.offered = stats["sent"] / stats["elapsed"]
            fig.sustained = min(accepted) / (t1 - t0)
            fig.dropped = sum(m.get("hushlight_queue_dropped_total", 0) for m in m1)
            print(
                f"offered            {fig.offered:10.0f} records/s  (publisher fell behind in "
                f"{stats['late_slices']} of {int(stats['elapsed'] / 0.01)} 10 ms slices)"
            )
            for name, n in zip(names, accepted, strict=True):
                rate = n / (t1 - t0)
                print(
                    f"{name} sustained {rate:10.0f} records/s  "
                    f"({rate / fig.offered:.1%} of offered)"
                )
            depth = sum(m.get("hushlight_queue_depth", 0) for m in m1)
            print(f"queue dropped      {fig.dropped:10.0f}   depth at end {depth:.0f}")
            if latencies:
                ms = [x * 1000 for x, _ in latencies]
                fig.p50, fig.p99 = pct(ms, 50), pct(ms, 99)
                fig.answered = f"{len(ms)} of {probes}"
                print(
                    f"publish->override  p50 {fig.p50:7.1f} ms  p90 {pct(ms, 90):7.1f} ms  "
                    f"p99 {fig.p99:7.1f} ms  max {max(ms):7.1f} ms  "
                    f"({fig.answered} probes answered)"
                )
            else:
                fig.answered = f"0 of {probes}"
                print(f"publish->override  no answer to {probes} probes")
            fig.cpu_us = max(
                (b - a) / max(1.0, n) * 1e6 for a, b, n in zip(cpu0, cpu1, accepted, strict=True)
            )
            busiest = max(b - a for a, b in zip(cpu0, cpu1, strict=True)) / (t1 - t0)
            print(
                f"gateway CPU        {fig.cpu_us:10.1f} us per record ({busiest:.0%} of a core"
                f"{', the busier gateway' if len(gws) > 1 else ''})"
            )
            fig.broker_core = (bcpu1 - bcpu0) / (t1 - t0)
            per_record = (fig.broker_core - fig.broker_idle) / fig.offered * 1e6
            print(
                f"broker CPU         {fig.broker_core:10.0%} of a core"
                f"{f' ({len(broker.pids)} nodes together)' if len(broker.pids) > 1 else ''}, "
                f"{fig.broker_idle:.0%} idle: {per_record:.0f} us per record above idle"
            )
            behind = fig.sustained < 0.9 * fig.offered
            if args.flood and len(gws) == 1 and behind:
                # the flood would first wait for the broker's backlog to drain, for minutes
                print("gateway flat out   not measured: the broker is already behind the load")
            elif args.flood and len(gws) == 1:
                fig.flat_out, dropped, flood_us = await gateway_rate(
                    gws[0], http, broker.flood_port, sensor_ids(zones, per_zone), args.flood,
                    args.conns,
                )  # fmt: skip
                print(
                    f"gateway flat out   {fig.flat_out:10.0f} records/s ({dropped:.0f} dropped), "
                    f"{flood_us:.1f} us of gateway CPU per record"
                )
    finally:
        for gw in gws:
            gw.stop()
    client_ids = names if shared is not None else [f"hushlight-gateway-{SITE}"]
    for client_id, port in zip(client_ids, broker.gateway_ports, strict=True):
        await forget_session(port, client_id)
    return fig


def ratios(ref: Figures, run: Figures, label: str) -> None:
    def r(a: float, b: float) -> str:
        return f"{a / b:5.2f}x" if a and b else "    -"  # 0: nothing measured

    print(
        f"{label:<28} sustained {r(run.sustained, ref.sustained)}  "
        f"p50 {r(run.p50, ref.p50)}  p99 {r(run.p99, ref.p99)}  "
        f"gateway CPU/record {r(run.cpu_us, ref.cpu_us)}  "
        f"broker CPU {r(run.broker_core, ref.broker_core)}"
        + (f"  flat out {r(run.flat_out, ref.flat_out)}" if run.flat_out else "")
    )


@contextlib.contextmanager
def started_cluster(folder: Path) -> Iterator[tuple[RabbitCluster, float]]:
    t = time.monotonic()
    cluster = RabbitCluster(folder=folder, anonymous=True)
    try:
        cluster.start()
        yield cluster, time.monotonic() - t
    finally:
        cluster.close()


async def run(args: argparse.Namespace) -> None:
    zones = max(1, args.sensors // args.per_zone)
    n = zones * args.per_zone
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hushlight-bench-")))
        print(
            f"sensors {n} in {zones} zones, 1 record/s each, {args.seconds} s measured per run; "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        mosquitto = stack.enter_context(Mosquitto())
        pid = mosquitto._proc.pid if mosquitto._proc else 0  # the bench peeks: no API
        p = mosquitto.port
        ref = await measure(
            Broker("one Mosquitto (the reference)", [p], [p], p, p, [pid]), args, tmp, None
        )
        mosquitto.stop()

        (tmp / "rabbit").mkdir()
        cluster, took = stack.enter_context(started_cluster(tmp / "rabbit"))
        ports = [node.mqtt_port for node in cluster.nodes]
        pids = [node.pid or 0 for node in cluster.nodes]
        print(f"\n(the RabbitMQ cluster started in {took:.1f} s)")
        one = Broker(
            "three-node RabbitMQ cluster, one gateway on node 1",
            ports[:1], ports, ports[2], ports[1], pids,
        )  # fmt: skip
        one_fig = await measure(one, args, tmp / "rabbit", None)
        two_fig = None
        if args.two_gateways:
            two = Broker(
                "three-node RabbitMQ cluster, two gateways (nodes 1 and 2) sharing the zones "
                "through PostgreSQL leases",
                ports[:2], ports, ports[2], ports[1], pids,
            )  # fmt: skip
            with scratch_database() as url:
                two_fig = await measure(two, args, tmp / "rabbit", url)

        print("\ncluster / Mosquitto")
        ratios(ref, one_fig, "one gateway")
        if two_fig is not None:
            ratios(ref, two_fig, "two gateways (each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-zone", type=int, default=10, help="sensors per zone (default 10)")
    parser.add_argument(
        "--probe-rate", type=float, default=5.0, help="loud probes per second (default 5)"
    )
    parser.add_argument(
        "--conns", type=int, default=6, help="publisher connections, over all nodes (default 6)"
    )
    parser.add_argument(
        "--flood", type=int, default=0, help="queued records for the flat-out rate (0: skip)"
    )
    parser.add_argument(
        "--two-gateways",
        action="store_true",
        help="a third run: two gateways sharing the zones (scratch PostgreSQL database)",
    )
    args = parser.parse_args()
    os.chdir(ROOT_DIR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
