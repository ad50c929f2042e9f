"""`hushlight demo`: a night on Naamsestraat in about a minute, with every real piece running.

What runs, each in its own process as in a deployment:

- an MQTT broker: amqtt on a free port (`tools.embedded_broker`), or the
  broker given with ``--broker mqtt://HOST:PORT``;
- seven virtual sensors, ns-01 to ns-07, 60 m apart: the firmware in the
  MicroPython unix port (`hushlight sensor`), each hearing the scripted night
  of `tools.scenes` from its own spot on the street, at 16 kHz;
- the gateway (`hushlight gateway --config`, with `tools/demo_config.toml`)
  and the simulated lighting controller (`hushlight lights-sim`).

How the clocks agree: the night is played faster than real time (``--speed``,
default 4.5).  The sensors stamp their records from the night's start
(``--time-origin``, 23:00 in Leuven) plus audio time; the gateway and the
lights run a scaled clock with the same origin, speed and real start moment.
The demo itself feeds each sensor its audio as raw PCM on stdin, paced by the
wall clock from that common start, instead of letting each sensor pace a WAV
from its own boot: seven sensors booting on a busy machine can start a second
apart, which at 4.5x is several seconds of night and would make the gateway
see their records as late (not used to trigger) or from the future.

The live view shows each sensor's levels, each zone's state, the light levels
and the nudges; without a terminal (``make demo | tee demo.log``) it says so
and prints a plain progress line every 2 s instead.  Each nudge is shown with
what triggered it in its zone's terms, from the evidence the gateway recorded
(``GET /api/decisions``); each part of the night that drew no nudge is
explained once it is over (the music's bass, the car's short peak).  At the
end a summary: nudges sent, what each part of the night did, light minutes,
peak counts, and the commands to try next.

One night gives a zone a nudge or two, too few for `hushlight report` to
compare nudges with controls.  So once the night is over, `tools.pilot` writes
``--history-nights`` simulated nights of the same street before it into the
gateway's database, through the gateway's storage API; the summary says that
they are simulated and what their true effects are.  The database is kept
(the logs only with ``--keep``), and the summary names it in the `hushlight
report` command to try.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from gateway.config import SiteConfig, parse_config
from gateway.errors import StorageError
from tools import pilot, scenes, upy
from tools.broker import free_port
from tools.demo_view import LABEL_W, TZ, Scene, Street, ZoneRule, clock
from tools.embedded_broker import BrokerProcess
from tools.errors import ToolError, UsageError

HELP = "run the night-street demo: seven virtual sensors, the gateway and the simulated lights"

SITE = "leuven"
RATE = 16000
SPEED = 4.5
CONFIG = Path(__file__).resolve().parent / "demo_config.toml"
PROGRAMME_LEVEL = 70.0
# The night starts at 23:00 in Leuven, when the zones' schedule opens.
NIGHT = datetime(2026, 6, 12, 23, 0, 0, tzinfo=TZ)
CHUNK_S = 0.5  # audio seconds fed to a sensor at a time
BOOT_TIMEOUT_S = 90.0
# seconds a sensor's firmware may run past its start-up without coming online; then it
# is started again
ONLINE_S = 8.0
LEAD_WALL_S = 8.0
PROGRESS_EVERY_S = 2.0  # real seconds between plain progress lines
# real seconds a nudge line waits for the gateway's evidence before it is shown without it
EVIDENCE_WAIT_S = 3.0
HISTORY_NIGHTS = 40  # simulated nights before the live one, for `hushlight report`
MAX_HISTORY_NIGHTS = 365


def cache_dir(seconds: float) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hushlight" / "demo" / f"night-v1-{RATE}-{seconds:g}"


def night_wavs(seconds: float, say: Any) -> dict[str, Path]:
    """The scripted night as one WAV per sensor, synthesised once and cached."""
    folder = cache_dir(seconds)
    paths = {s: folder / f"{s}.wav" for s in scenes.SENSORS}
    if all(p.exists() for p in paths.values()):
        return paths
    say(f"synthesising the night for {len(paths)} sensors ({seconds:g} s at {RATE} Hz) ...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".night-", dir=folder.parent))
    scenes.write_night(tmp, RATE, seconds)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return paths


def pcm16(path: Path) -> bytes:
    from dsp.wavfile import read

    rate, x = read(path)
    if rate != RATE:
        raise ToolError(f"{path} is at {rate} Hz, not {RATE}; delete {path.parent} to rebuild it")
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def config_text(broker: str, database: str, http_port: int, run: str, token: str) -> str:
    """The gateway's site file for the demo: `demo_config.toml` with its placeholders filled."""
    return Template(CONFIG.read_text()).substitute(
        broker=broker, database=database, http_port=http_port, run=run, token=token
    )


def site_config() -> SiteConfig:
    """The demo's zones as the gateway reads them (broker, database and port are placeholders)."""
    text = config_text("mqtt://127.0.0.1:1883", "demo.db", 8080, "x", "x" * 32)
    return parse_config(tomllib.loads(text), source=str(CONFIG))


def build_street(origin: float, seconds: float) -> Street:
    """What the demo shows: the zones and rules of its gateway config, the night's scenes."""
    config = site_config()
    return Street(
        SITE,
        scenes.SENSORS,
        {z.id: (z.sensors, z.light_groups) for z in config.zones},
        PROGRAMME_LEVEL,
        rules={
            z.id: ZoneRule(z.trigger, z.threshold_db, z.window_s, z.min_sensors, z.peaks_needed)
            for z in config.zones
        },
        scenes=[
            Scene(e.name, origin + e.start_s, origin + min(e.stop_s, seconds))
            for e in scenes.SCRIPT
            if e.start_s < seconds
        ],
    )


def next_steps(prog: str, work: Path, kept: bool) -> list[str]:
    """The commands to try after the demo, each with what it shows."""
    db = work / "gateway.db"
    steps = [(f"{prog} report --db {db}", "each nudge kind against its controls, 95 % intervals")]
    if kept:
        steps += [(f"less {work / 'gateway.log'}", "the gateway's log (each sensor's beside it)")]
    else:
        steps += [(f"{prog} demo --keep", "again, keeping the logs too")]
    steps += [
        (f"{prog} demo --speed 1", "the night in real time"),
        (f"{prog} gateway --help", "run the gateway on a site file of your own"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    return [f"{command:<{width}}{why}" for command, why in steps]


def hushlight_command() -> str:
    """How to call `hushlight` from here: its name when the PATH finds it, else its path."""
    script = Path(sys.executable).parent / "hushlight"
    found = shutil.which("hushlight")
    if found is not None and Path(found).resolve() == script.resolve():
        return "hushlight"
    if not script.exists():
        return f"{sys.executable} -m tools.cli"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


class Child:
    """A `hushlight` subcommand in its own process, output to a log file."""

    def __init__(self, name: str, args: list[str], logs: Path, stdin: int | None = None) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", *args],
                stdin=stdin,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ToolError(f"{self.name} stopped (exit {code}):\n{self.tail()}")

    def started_up(self) -> bool:
        """Whether a sensor's firmware has ended its start-up (its heap line)."""
        try:
            return "hushlight: heap:" in self.log.read_text(errors="replace")
        except OSError:
            return False

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the child (SIGTERM, then SIGKILL after `timeout`); False if it was killed."""
        clean = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # `hushlight sensor` runs the firmware in a session of its own:
                # kill that too, or it would outlive the demo
                for pid in [*_descendants(self.proc.pid), self.proc.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()
                clean = False
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return clean


class Demo:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.speed: float = args.speed
        self.seconds: float = args.seconds
        self.live = sys.stdout.isatty() and not args.plain
        self.plain_asked: bool = args.plain
        self.work = work
        self.broker_url: str | None = args.broker
        self.token = uuid.uuid4().hex  # for the gateway's operator endpoints
        self.stopped: list[Child] = []  # sensors stopped by a restart
        self.origin = NIGHT.timestamp()
        # long enough, in real seconds, for seven MicroPython sensors to boot
        self.lead_s = float(round(self.speed * args.lead_in))
        self.start: float | None = None  # wall time at which the night begins
        self.children: list[Child] = []
        self.sensors: dict[str, Child] = {}
        self.street = build_street(self.origin, self.seconds)
        self.shown_nudges = 0
        self.shown_scenes = 0
        self.http_port: int | None = None
        self.nudge_seen: dict[str, float] = {}  # nudge id -> monotonic time first seen
        self.feeders: list[threading.Thread] = []
        self.pcm: dict[str, bytes] = {}
        self.feed_error: list[str] = []
        self.reported: set[str] = set()
        self.reported_feed: list[str] = []

    # ---- time ---------------------------------------------------------

    @property
    def first(self) -> float:
        """Site time of the first audio sample: the lead-in before the night."""
        return self.origin - self.lead_s

    def site_now(self) -> float:
        if self.start is None:
            return self.first
        return self.first + (time.time() - self.start) * self.speed

    def say(self, text: str) -> None:
        print(text, flush=True)

    # ---- the pieces ---------------------------------------------------

    def write_config(self, broker: str, http_port: int) -> Path:
        text = config_text(
            broker=broker,
            database=str(self.work / "gateway.db"),
            http_port=http_port,
            run=uuid.uuid4().hex[:8],
            token=self.token,
        )
        path = self.work / "demo.toml"
        path.write_text(text)
        return path

    def start_sensors(self) -> None:
        for sensor in scenes.SENSORS:
            self.sensors[sensor] = self._sensor_child(sensor, self.first)
            self.children.append(self.sensors[sensor])

    def sensor_broker(self, sensor: str) -> str:
        """The broker URL `sensor` is given."""
        assert self.broker_url is not None
        return self.broker_url

    def _sensor_child(self, sensor: str, origin: float) -> Child:
        args = ["sensor", "--id", sensor, "--site", SITE, "--broker", self.sensor_broker(sensor)]
        args += ["--stdin-pcm", "--rate", str(RATE), "--speed", "0"]
        args += ["--time-origin", f"{origin:.3f}", "--interval", "1"]
        # a short keepalive: in a night compressed 4.5 times, a sensor that
        # stops must be declared offline within seconds
        args += ["--keepalive", "5"]
        args += ["--state-dir", str(self.work / "sensors" / sensor)]
        name = sensor if sensor not in self.sensors else f"{sensor}-again"
        return Child(name, args, self.work, stdin=subprocess.PIPE)

    def start_gateway(self, config: Path) -> None:
        assert self.start is not None
        timing = ["--time-scale", f"{self.speed:g}", "--time-origin", f"{self.first:.3f}"]
        timing += ["--time-start", f"{self.start:.3f}"]
        self.children.append(
            Child(
                "gateway",
                ["gateway", "--config", str(config), "--on-stop", "release", *timing],
                self.work,
            )
        )
        assert self.broker_url is not None
        lights = ["lights-sim", "--broker", self.broker_url, "--site", SITE]
        lights += ["--groups", "ns-lamps-1,ns-lamps-2", "--programme-level", f"{PROGRAMME_LEVEL:g}"]
        lights += ["--client-id", f"hushlight-lights-demo-{uuid.uuid4().hex[:8]}", *timing]
        self.children.append(Child("lights-sim", lights, self.work))

    def feed(self, sensor: str, pcm: bytes, first_chunk: int = 0) -> None:
        """Write the sensor's audio to its stdin, each chunk when the night reaches its end.

        `first_chunk` > 0 feeds a restarted sensor from where the night is now.
        """
        assert self.start is not None
        child = self.sensors[sensor]
        stdin = child.proc.stdin
        assert stdin is not None
        step = int(CHUNK_S * RATE) * 2
        try:
            for k in range(first_chunk, (len(pcm) + step - 1) // step):
                due = self.start + (k + 1) * CHUNK_S / self.speed
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                stdin.write(pcm[k * step : (k + 1) * step])
                stdin.flush()
        except (OSError, ValueError) as exc:
            # ValueError: a restart closed this stdin under the feeder
            if child not in self.stopped:  # not stopped by a restart meanwhile
                self.feed_error.append(f"{sensor}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def start_feeder(self, sensor: str, first_chunk: int = 0) -> None:
        t = threading.Thread(
            target=self.feed,
            args=(sensor, self.pcm[sensor], first_chunk),
            name=f"feed-{sensor}",
            daemon=True,
        )
        t.start()
        self.feeders.append(t)

    async def restart_sensors(self, sensors: list[str]) -> None:
        """Start sensors again that did not come online, joining the night where it is.

        Their records then start from the current moment (the missed seconds of
        the lead-in are skipped); their state directories, and so their seqs,
        are kept.  The first firmwares stop (together) before the second ones
        start: one sensor, one client id, one state directory.  A clean stop
        writes the next seq, where the second goes on; a killed firmware leaves
        the block it had reserved (hushlight.store), and the second starts past
        that gap.
        """
        assert self.start is not None
        old = [self.sensors[s] for s in sensors]
        self.stopped += old
        clean = await asyncio.gather(*(asyncio.to_thread(c.stop, 5.0) for c in old))
        for sensor, child, stopped_clean in zip(sensors, old, clean, strict=True):
            self.children.remove(child)
            if not stopped_clean:
                self.sensor_killed(sensor)
            chunk = int((time.time() - self.start) * self.speed / CHUNK_S) + 1
            self.sensors[sensor] = self._sensor_child(sensor, self.first + chunk * CHUNK_S)
            self.children.append(self.sensors[sensor])
            self.start_feeder(sensor, chunk)

    def sensor_killed(self, sensor: str) -> None:
        """A restart had to kill the first firmware of `sensor`; called before the second
        starts."""

    # ---- waiting ------------------------------------------------------

    def _online_or_given_up(self, booted: dict[str, float]) -> bool:
        """Every sensor online, or up (its start-up over, noted in `booted`) for
        `ONLINE_S` without coming online."""
        now = time.monotonic()
        waiting = False
        for sensor, row in self.street.rows.items():
            if row.online:
                continue
            if sensor not in booted and self.sensors[sensor].started_up():
                booted[sensor] = now
            waiting = waiting or now - booted.get(sensor, now) < ONLINE_S
        return not waiting

    async def wait_for(
        self, what: str, done: Any, limit_s: float = BOOT_TIMEOUT_S, *, required: bool = True
    ) -> bool:
        """Wait until `done()`; past `limit_s` raise (or, if not `required`, return False)."""
        deadline = time.monotonic() + limit_s
        while not done():
            try:
                self._check_children()
            except ToolError as exc:
                raise ToolError(f"waiting for {what}: {exc}") from None
            if time.monotonic() > deadline:
                if not required:
                    return False
                raise ToolError(f"{what} did not happen within {limit_s:g} s; logs in {self.work}")
            await asyncio.sleep(0.1)
        return True

    def decisions(self) -> list[Any]:
        """The gateway's recent decisions (``GET /api/decisions``); [] if it does not answer."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/decisions?limit=100",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                rows = json.load(r).get("decisions")
        except (OSError, ValueError, AttributeError):
            return []
        return rows if isinstance(rows, list) else []

    async def fetch_evidence(self, *, force: bool = False) -> None:
        """Ask the gateway what triggered the nudges that have come in without it."""
        now = time.monotonic()
        for n in self.street.nudges:
            self.nudge_seen.setdefault(n.nudge_id, now)
        waiting = [
            n
            for n in self.street.nudges
            if not n.from_gateway and now - self.nudge_seen[n.nudge_id] < EVIDENCE_WAIT_S
        ]
        if self.http_port is None or not (waiting or force):
            return
        rows = await asyncio.to_thread(self.decisions)
        self.street.on_decisions([r for r in rows if isinstance(r, dict)])

    def gateway_up(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                return bool(json.load(r).get("mqtt_connected"))
        except (OSError, ValueError):
            return False

    # ---- the night ----------------------------------------------------

    async def listen(self, broker: str, stop: asyncio.Event) -> None:
        import aiomqtt

        from gateway.mqtt import parse_broker_url

        url = parse_broker_url(broker)
        async with aiomqtt.Client(
            url.host, url.port, identifier=f"hushlight-demo-{uuid.uuid4().hex[:8]}"
        ) as client:
            await client.subscribe(f"hushlight/v1/{SITE}/#", qos=1)
            self.listening.set()
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, (bytes, bytearray)):
                    self.on_message(str(message.topic), bytes(payload))
                if stop.is_set():
                    return

    def on_message(self, topic: str, payload: bytes) -> None:
        """One message the demo heard on the site's topics."""
        self.street.on_message(topic, payload, self.site_now())

    async def night(self, broker: str) -> None:
        self.listening = asyncio.Event()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            listener = group.create_task(self.listen(broker, stop), name="listen")
            try:
                await asyncio.wait_for(self.listening.wait(), 20)
                await self.run_night(broker)
            finally:
                stop.set()
                listener.cancel()

    async def run_night(self, broker: str) -> None:
        night = {s: pcm16(p) for s, p in night_wavs(self.seconds, self.say).items()}
        # The sensors read their audio from stdin and cannot reach the broker
        # before the first bytes come, so the night is preceded by a quiet
        # lead-in (the first quiet seconds of each sensor's own night, looped),
        # stamped before 23:00: outside the zones' schedule.  Everything boots
        # during it.
        quiet = 25 * RATE * 2
        lead = int(self.lead_s) * RATE * 2
        pcm = {s: (data[:quiet] * (lead // quiet + 1))[:lead] + data for s, data in night.items()}
        self.start = time.time() + 1.0
        self.say(
            f"starting {len(scenes.SENSORS)} virtual sensors (the firmware in MicroPython), "
            "the gateway and the simulated lights ..."
        )
        self.pcm = pcm
        await self.start_pieces(broker)
        await self.wait_for(
            "the lights reporting", lambda: all(g.heard for g in self.street.groups.values())
        )
        # A sensor whose firmware has run for 8 s (from the end of its start-up:
        # seven firmwares compiling their modules at once take a while to get
        # there on a busy machine) without coming online is started once more
        # (the embedded broker now and then stalls a session at connect under
        # load); if that fails too it is reported, and the night goes on without
        # it, as a street goes on when one lamp-post sensor fails.
        for attempt in (1, 2):
            await self.wait_for(
                "the sensors",
                functools.partial(self._online_or_given_up, {}),
                max(3 * ONLINE_S, (self.origin - self.site_now()) / self.speed / 2),
                required=False,
            )
            missing = [s for s, r in self.street.rows.items() if not r.online]
            if attempt == 1:
                for sensor in missing:
                    self.say(f"sensor {sensor} is slow to come online: starting it again")
                await self.restart_sensors(missing)
        for sensor in missing:
            self.say(f"warning: sensor {sensor} has not come online; its log says:")
            self.say(self.sensors[sensor].tail(5))
        now = self.site_now()
        if now > self.origin:
            self.say(
                f"warning: this machine is slow: all up {now - self.origin:.0f} s into the night"
            )
        else:
            self.say(f"all up at {clock(now)}; the night begins at {clock(self.origin)}")
        await self.show()
        # every sensor's last whole second of the night has come in
        end = self.origin + int(self.seconds)
        delivered = await self.wait_for(
            "the sensors delivering their last records",
            lambda: all(r.last_t1 >= end for r in self.street.rows.values() if r.online),
            limit_s=30.0,
            required=False,
        )
        if not delivered:
            stuck = [
                f"{s} (up to {clock(r.last_t1)})" if r.records else f"{s} (none)"
                for s, r in self.street.rows.items()
                if r.online and r.last_t1 < end
            ]
            self.say("warning: records missing from " + ", ".join(stuck))
        await asyncio.sleep(1.0)  # the gateway's last decisions reach the lights
        await self.fetch_evidence(force=True)
        self.street.finish(self.site_now())
        if not self.live:
            self._print_nudges(final=True)
            self._print_verdicts(final=True)

    async def start_pieces(self, broker: str) -> None:
        """Start the sensors (with their audio), the gateway and the lights; wait for the
        gateway."""
        self.start_sensors()
        for sensor in self.pcm:
            self.start_feeder(sensor)
        http_port = free_port()
        self.http_port = http_port
        self.start_gateway(self.write_config(broker, http_port))
        await self.wait_for("the gateway connecting", lambda: self.gateway_up(http_port))
        # the operator's dashboard shows the night live, from the gateway itself
        self.say(f"dashboard: http://127.0.0.1:{http_port}/")

    async def show(self) -> None:
        note = (
            f"compressed night: {self.seconds:g} s of street sound (quiet gaps cut) at "
            f"{self.speed:g}x real time; holds {30} s instead of 10 min"
        )
        end = self.origin + self.seconds
        if self.live:
            from rich.live import Live

            with Live(self._frame(note), refresh_per_second=4) as screen:
                while self.site_now() < end or any(t.is_alive() for t in self.feeders):
                    self._check_children()
                    await self.fetch_evidence()
                    screen.update(self._frame(note))
                    await asyncio.sleep(0.25)
                screen.update(self._frame(note))
            return
        self.say(note)
        why = "--plain" if self.plain_asked else "stdout is not a terminal"
        self.say(
            f"{why}: a progress line every {PROGRESS_EVERY_S:g} s instead of the live view "
            "(which needs a terminal)"
        )
        self.say(
            f"{'time':<8} | {'what is happening':<{LABEL_W}} | LAeq/LCeq dB(A)/dB(C) "
            f"at {scenes.SENSORS[0]} .. {scenes.SENSORS[-1]} | light levels"
        )
        last = 0.0
        while self.site_now() < end or any(t.is_alive() for t in self.feeders):
            self._check_children()
            await self.fetch_evidence()
            self._print_nudges()
            self._print_verdicts()
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                self.say(self._progress())
            await asyncio.sleep(0.2)
        self._print_nudges()

    def _frame(self, note: str) -> Any:
        now = self.site_now()
        return self.street.render(now, scenes.happening(now - self.origin), note)

    def _check_children(self) -> None:
        """Fail if the broker side stops; a sensor that stops is reported once."""
        sensors = list(self.sensors.values())
        for child in self.children:
            if child not in sensors:
                child.check()
            elif child.proc.poll() not in (None, 0) and child.name not in self.reported:
                self.reported.add(child.name)
                self.say(f"warning: sensor {child.name} stopped:\n{child.tail(5)}")
        for error in self.feed_error[len(self.reported_feed) :]:
            self.reported_feed.append(error)
            self.say(f"warning: a sensor stopped taking audio: {error}")

    def _print_nudges(self, *, final: bool = False) -> None:
        """Print each nudge once, with the gateway's evidence once it came (or its wait is up)."""
        now = time.monotonic()
        while self.shown_nudges < len(self.street.nudges):
            n = self.street.nudges[self.shown_nudges]
            waited = now - self.nudge_seen.setdefault(n.nudge_id, now)
            if not (n.from_gateway or final or waited >= EVIDENCE_WAIT_S):
                return
            self.say(f"NUDGE {self.street.nudge_line(n)}; told: {n.message!r}")
            self.shown_nudges += 1

    def _print_verdicts(self, *, final: bool = False) -> None:
        """Say what each part of the night did once its sound has left the zones' windows."""
        now = self.site_now()
        while self.shown_scenes < len(self.street.scenes):
            scene = self.street.scenes[self.shown_scenes]
            if not (final or self.street.settled(scene, now)):
                return
            for line in self.street.verdict(scene):
                self.say(f"ENDED {line}" if not line.startswith(" ") else f"      {line}")
            self.shown_scenes += 1

    def _progress(self) -> str:
        now = self.site_now()
        return self.street.progress(now, scenes.happening(now - self.origin))

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()


def configure(parser: argparse.ArgumentParser) -> None:
    upy.add_option(parser)
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="use this MQTT broker (mqtt://HOST:PORT) instead of the embedded one",
    )
    parser.add_argument(
        "--speed", type=float, default=SPEED, help=f"times real time (default {SPEED:g})"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=scenes.SECONDS,
        help=f"seconds of the scripted night to play (default {scenes.SECONDS:g})",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain progress lines even on a terminal"
    )
    parser.add_argument(
        "--lead-in",
        type=float,
        default=LEAD_WALL_S,
        metavar="S",
        help=f"real seconds of quiet before 23:00 while all starts (default {LEAD_WALL_S:g})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, database)")
    parser.add_argument(
        "--history-nights",
        type=int,
        default=HISTORY_NIGHTS,
        metavar="N",
        help="simulated nights of the same street to write into the gateway's database before "
        f"the live one, for `hushlight report` (default {HISTORY_NIGHTS}; 0: none)",
    )
    from tools import demo_cluster  # it builds on this module

    demo_cluster.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    upy.use(args.interpreter)
    try:
        upy.interpreter()  # built? say so before anything starts
    except ToolError as exc:
        raise UsageError(str(exc)) from None
    if not 0.5 <= args.speed <= 50:
        raise UsageError(
            f"--speed {args.speed:g} is out of range; give 0.5 to 50 "
            "(4.5 plays the night in a minute)"
        )
    if not 1 <= args.lead_in <= 120:
        raise UsageError(f"--lead-in {args.lead_in:g} is out of range; give 1 to 120 s")
    if not 10 <= args.seconds <= scenes.SECONDS:
        raise UsageError(
            f"--seconds {args.seconds:g} is out of range; give 10 to {scenes.SECONDS:g}"
        )
    if not 0 <= args.history_nights <= MAX_HISTORY_NIGHTS:
        raise UsageError(
            f"--history-nights {args.history_nights} is out of range; give 0 (none) to "
            f"{MAX_HISTORY_NIGHTS}"
        )
    if args.broker is not None:
        from gateway.mqtt import parse_broker_url

        try:
            parse_broker_url(args.broker)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not args.broker.startswith("mqtt://"):
            raise UsageError(
                f"--broker {args.broker!r}: the demo's virtual sensors need a plain mqtt:// broker"
            )
    if args.cluster:
        from tools import demo_cluster

        return demo_cluster.run(args)
    work = Path(tempfile.mkdtemp(prefix="hushlight-demo-"))
    demo = Demo(args, work)
    embedded: BrokerProcess | None = None
    history: pilot.History | None = None
    finished = False
    try:
        if args.broker is None:
            embedded = BrokerProcess()
            embedded.start()
            demo.broker_url = embedded.url
            demo.say(f"embedded MQTT broker (amqtt) on {embedded.url}")
        assert demo.broker_url is not None
        asyncio.run(demo.night(demo.broker_url))
        demo.stop_all()  # the gateway lets go of its database
        history = earlier_nights(args.history_nights, work / "gateway.db", demo.say)
        finished = True
    except (ToolError, BaseExceptionGroup) as exc:
        # the night's task group wraps what went wrong in an exception group
        found = _tool_errors(exc)
        if not found:
            raise
        for message in found:
            print(f"hushlight demo: {message}", file=sys.stderr)
        if not args.keep:
            print(f"(run with --keep to keep the logs in {work})", file=sys.stderr)
        return 1
    finally:
        demo.stop_all()
        if embedded is not None:
            embedded.stop()
        if not args.keep:
            _clear(work, keep="gateway.db" if finished else None)
    print()
    print("summary of the night")
    steps = next_steps(hushlight_command(), work, args.keep)
    if args.keep:
        print(f"logs and the gateway's database (gateway.db) are kept in {work}")
    else:
        print(f"the gateway's database is kept in {work} (the logs are not: --keep keeps them)")
    lines = demo.street.summary(steps)
    at = lines.index("next:")
    lines[at:at] = history_lines(history)
    for line in lines:
        print(line)
    return 0


def earlier_nights(nights: int, database: Path, say: Any) -> pilot.History | None:
    """Write the simulated nights before the live one into its database (None for 0 nights)."""
    if nights == 0:
        return None
    try:
        history = pilot.write_history(database, site_config(), NIGHT, nights, say=say)
    except StorageError as exc:
        raise ToolError(f"could not write the simulated earlier nights: {exc}") from exc
    say(f"wrote them in {history.seconds:.1f} s")
    return history


def history_lines(history: pilot.History | None) -> list[str]:
    """What the summary says of the earlier nights: simulated, and their true effects."""
    if history is None:
        return [
            "earlier nights: none (--history-nights 0); the night's own few nudges are too few "
            "for the report's intervals"
        ]
    lines = [
        f"earlier nights: {history.nights} nights ({history.first} to {history.last}) in the "
        "same database, SIMULATED, not measured (tools/pilot.py), so that the report has "
        "nudges and controls to compare; the true effect of a nudge there:"
    ]
    lines += [
        f"  {a.zone}, {a.kind}: {a.truth} ({a.nudges} nudges, {a.controls} controls)"
        for a in history.arms
    ]
    lines.append(
        "  compare the report's estimates and intervals with these; the night's own "
        "nudges are in the report too"
    )
    return lines


def _clear(work: Path, keep: str | None) -> None:
    """Remove the work folder, or all in it but the file named `keep`."""
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
        return
    for path in work.iterdir():
        if path.name != keep:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _tool_errors(exc: BaseException) -> list[str]:
    if isinstance(exc, ToolError):
        return [str(exc)]
    if isinstance(exc, BaseExceptionGroup):
        return [m for e in exc.exceptions for m in _tool_errors(e)]
    return []


def _descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively, deepest first (Linux /proc)."""
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
    return [d for k in kids for d in _descendants(k)] + kids
