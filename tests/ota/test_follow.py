"""How `hushlight ota` reads a sensor's statuses during a roll-out (tools.ota.follow, overdue)."""

from __future__ import annotations

from tools.ota import Track, follow, overdue

V = "0.2.0"


def _offered(initial: tuple[str | None, str | None] = ("idle", None)) -> Track:
    t = Track("ns-01", "canary", initial)
    t.offered_at = t.changed_at = t.last_offer = 100.0
    t.state = "offered"
    return t


def _status(ota: str, version: str | None = V, fw: str = "0.1.0", **more: str) -> dict[str, str]:
    out = {"state": "online", "fw": fw, "ota": ota, **more}
    if version is not None:
        out["ota_version"] = version
    return out


def test_the_states_of_an_update_in_order() -> None:
    t = _offered()
    seen = []
    for at, status in enumerate(
        [
            _status("staging"),
            _status("staging"),  # a heartbeat: no change
            _status("staged"),
            {"state": "offline"},  # the reboot
            _status("trial", fw=V),
            _status("confirmed", fw=V),
        ],
        start=101,
    ):
        new = follow(t, status, V, float(at))
        if new is not None:
            seen.append(new)
    assert seen == ["staging", "staged", "offline", "trial", "confirmed"]
    assert t.outcome == "confirmed" and t.fw == V
    assert t.trial_at == 105.0 and t.ended_at == 106.0


def test_a_refusal_carries_its_reason() -> None:
    t = _offered()
    follow(t, _status("staging"), V, 101.0)
    assert follow(t, _status("refused", ota_reason="needs 0.1.5 or later"), V, 102.0) == "refused"
    assert (t.outcome, t.reason) == ("refused", "needs 0.1.5 or later")
    # nothing changes a verdict
    assert follow(t, _status("confirmed", fw=V), V, 103.0) is None


def test_statuses_about_another_release_or_none_are_no_answer() -> None:
    t = _offered()
    assert follow(t, _status("refused", version="0.1.9"), V, 101.0) is None
    assert follow(t, _status("idle", version=None), V, 101.0) is None
    assert follow(t, {"state": "online", "fw": "0.1.0"}, V, 101.0) is None
    assert t.state == "offered"


def test_an_old_verdict_on_this_release_counts_only_after_a_new_start() -> None:
    # the sensor refused 0.2.0 in an earlier roll-out; its heartbeat still says so
    t = _offered(initial=("refused", V))
    assert follow(t, _status("refused", ota_reason="flash full while staging"), V, 101.0) is None
    assert follow(t, _status("staging"), V, 102.0) == "staging"
    assert follow(t, _status("refused", ota_reason="flash full while staging"), V, 103.0)
    assert t.outcome == "refused"


def test_a_refusal_before_any_staging_is_an_answer() -> None:
    t = _offered()
    new = follow(t, _status("refused", ota_reason="no release key on this sensor"), V, 101.0)
    assert new == "refused"


def test_confirmed_needs_the_new_firmware_running() -> None:
    t = _offered()
    follow(t, _status("trial", fw=V), V, 101.0)
    assert follow(t, _status("confirmed", fw="0.1.0"), V, 102.0) is None
    assert follow(t, _status("confirmed", fw=V), V, 103.0) == "confirmed"


def test_not_offered_yet_nothing_counts() -> None:
    t = Track("ns-02", "wave 1", ("idle", None))
    assert follow(t, _status("staging"), V, 101.0) is None
    assert overdue(t, 10_000.0, 60.0, 180.0) is None


def test_a_silent_sensor_is_given_up_after_the_stall_time() -> None:
    t = _offered()
    assert overdue(t, 150.0, 60.0, 180.0) is None
    why = overdue(t, 161.0, 60.0, 180.0)
    assert why is not None and why.startswith("did not answer the offer")
    t.state, t.served, t.changed_at = "staging", 8192, 150.0
    why = overdue(t, 211.0, 60.0, 180.0)
    assert why is not None and "stuck in staging" in why and "8,192 bytes" in why


def test_a_trial_has_its_own_timeout() -> None:
    t = _offered()
    follow(t, _status("trial", fw=V), V, 110.0)
    # the stall time does not apply while the new version proves itself
    assert overdue(t, 110.0 + 170.0, 60.0, 180.0) is None
    follow(t, {"state": "offline"}, V, 200.0)  # rebooting in its trial
    why = overdue(t, 110.0 + 181.0, 60.0, 180.0)
    assert why == "not confirmed within 180 s of starting its trial"
