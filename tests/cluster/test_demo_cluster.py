"""`hushlight demo --cluster`: a short night on three RabbitMQ nodes with two gateways sharing
the zones; half way through, a node and a gateway are killed.  The summary's figures are
read from the demo's output and checked against what the leases allow."""

from __future__ import annotations

import collections
import re
import subprocess
import sys

import pytest

from tools import demo_cluster, scenes
from tools.cli import main
from tools.upy import REPO_ROOT

LEASE_S = demo_cluster.LEASE_S
# The survivor renews every third of the lease and takes a free zone at that renewal: a
# zone is without an owner in force at most that long, plus one reading of the leases
# and a second and a half for a busy machine's scheduling.
OWNERLESS_MAX_S = LEASE_S / 3 + demo_cluster.POLL_S + 1.5
# The killed gateway's lease runs out at most a lease after the kill, then the renewal.
TAKEOVER_MAX_S = LEASE_S + LEASE_S / 3 + demo_cluster.POLL_S + 1.5
# two minutes at 6x (20 s): the shouting group draws a nudge in collegeberg at 23:00:46,
# and the kill comes while it is in force, before half way (23:01:00)
NIGHT = ("--cluster", "--plain", "--seconds", "120", "--speed", "6")


@pytest.fixture(scope="module")
def night() -> subprocess.CompletedProcess[str]:
    """One shortened night (`NIGHT`), run once for the tests of its summary."""
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", *NIGHT],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
    )


def figure(out: str, label: str) -> float:
    """The number after ``label:`` at the start of a summary line (indented or not)."""
    found = re.search(rf"^ *{re.escape(label)}: ([0-9.]+)", out, re.MULTILINE)
    assert found is not None, f"no {label!r} line in the demo's output:\n{out}"
    return float(found.group(1))


def test_a_node_and_a_gateway_die_and_the_zones_are_taken_over_without_a_double_nudge(
    night: subprocess.CompletedProcess[str],
) -> None:
    out = night.stdout
    assert "Traceback" not in night.stderr, night.stderr
    kill = re.search(
        r"KILLED gateway (\w) \(SIGKILL; it held (.+?)\) and broker node (\d) \((\d) of", out
    )
    assert kill is not None, out + night.stderr
    victim, held, node, sensors_on_node = kill.groups()
    # the node that dies is the one most sensors start on
    assert int(sensors_on_node) == max(collections.Counter(demo_cluster.SENSOR_SPREAD).values())
    # the zone is taken over with its lights overridden: the case a second nudge would come from
    assert re.fullmatch(r"(\S+)(, \S+)* and (\S+)'s nudge in force", held), held
    # the victim is connected to the node that dies with it
    assert int(node) == demo_cluster.GATEWAYS[victim] + 1
    survivor = next(g for g in demo_cluster.GATEWAYS if g != victim)
    assert re.search(rf"gateway {survivor} holds collegeberg, stuk: taken over", out), out
    assert figure(out, "nudges sent twice") == 0
    assert figure(out, "longest time a zone had no owner") <= OWNERLESS_MAX_S
    assert figure(out, "zones taken over after the gateway was killed") <= TAKEOVER_MAX_S
    # every sensor ran: a count of what is lost means something
    assert "did not run" not in out
    assert figure(out, "records made by the sensors") > 0
    # the gateway holding each sensor's zone sent it its config, through the cluster
    rev = demo_cluster.CONFIG_REV
    configured = f"sensors running config rev {rev} from the gateway holding their zone"
    assert figure(out, configured) == len(scenes.SENSORS)
    # the exit status follows the figures (the records' own test is below)
    assert figure(out, "records stored twice") >= 0
    bad = figure(out, "records lost") > 0 or figure(out, "nudges sent twice") > 0
    assert night.returncode == (1 if bad else 0), out + night.stderr


def test_no_record_is_lost_or_stored_twice_when_a_gateway_dies(
    night: subprocess.CompletedProcess[str],
) -> None:
    out = night.stdout
    assert figure(out, "records made by the sensors") > 0
    assert figure(out, "records lost") == 0, out
    assert figure(out, "records stored twice") == 0, out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--cluster", "--broker", "mqtt://127.0.0.1:1883"), "--broker"),
        (("--cluster", "--postgres", "127.0.0.1:5432"), "127.0.0.1:5432"),
    ],
)
def test_cluster_demo_mistakes_are_one_line(
    args: tuple[str, ...], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err


def test_an_unreachable_postgresql_is_named_with_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a port nobody listens on
    from tools.broker import free_port

    server = f"postgresql://127.0.0.1:{free_port()}/postgres"
    assert main(["demo", "--cluster", "--postgres", server]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{server.split(':')[2].split('/')[0]}" in err
    assert "not reachable" in err and "--postgres" in err
