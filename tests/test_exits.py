"""hookkit._core.exits: why a worker exited, from the worker's shared record, the
master's context and the reaped exit status (see the module docstring)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hookkit._core.exits import (
    APP_LOAD_ERROR,
    EXIT_ABORTED,
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_ERROR,
    EXIT_MAX_REQUESTS,
    EXIT_NONE,
    EXIT_NORMAL,
    REASONS,
    WORKER_BOOT_ERROR,
    ExitReason,
    ExitStatus,
    MasterContext,
    WorkerRecord,
    classify,
    signal_name,
)

pytestmark = pytest.mark.compat

SIGKILL, SIGTERM, SIGQUIT = int(signal.SIGKILL), int(signal.SIGTERM), int(signal.SIGQUIT)


def context(
    aborted: bool = False,
    stopping: bool = False,
    from_before_reload: bool = False,
    scale_down_pending: bool = False,
) -> MasterContext:
    """The master's knowledge; nothing special unless said."""
    return MasterContext(aborted, stopping, from_before_reload, scale_down_pending)


def test_exit_codes_are_gunicorns() -> None:
    """The boot and app-load exit codes are gunicorn's Arbiter constants."""
    from gunicorn.arbiter import Arbiter

    expected = (Arbiter.WORKER_BOOT_ERROR, Arbiter.APP_LOAD_ERROR)
    assert expected == (WORKER_BOOT_ERROR, APP_LOAD_ERROR)


# -- max_requests ------------------------------------------------------------


def test_max_requests() -> None:
    """A worker that wrote EXIT_MAX_REQUESTS left because it reached
    max_requests; its clean exit is not logged by gunicorn (no status)."""
    expected = ExitReason("max_requests", exit_code=0)
    assert expected == classify(EXIT_MAX_REQUESTS, 0, 0, None, context())


def test_max_requests_wins_over_the_signal_it_got_while_leaving() -> None:
    """max_requests stays the reason even if a stop signal arrived meanwhile."""
    expected = ExitReason("max_requests", exit_code=0)
    assert expected == classify(EXIT_MAX_REQUESTS, 0, SIGTERM, None, context())


# -- timeout -----------------------------------------------------------------


def test_timeout_worker_ran_its_abort_handler() -> None:
    """The master timed the worker out (``worker.aborted``); the worker's
    SIGABRT handler exited with 1, which gunicorn logged."""
    reason = classify(EXIT_ABORTED, 1, 0, ExitStatus(exit_code=1), context(aborted=True))

    assert ExitReason("timeout", exit_code=1) == reason


def test_timeout_then_sigkill_from_the_master() -> None:
    """A timed-out worker the master then SIGKILLed: timeout, SIGKILL, sent by the master."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(signal=SIGKILL), context(aborted=True))

    assert ExitReason("timeout", None, "SIGKILL", signal_sent_by_master=True) == reason


def test_timeout_known_from_the_worker_alone() -> None:
    """The worker's own record (EXIT_ABORTED) says timeout even when the
    master's context does not (the worker vanished before the kill)."""
    reason = classify(EXIT_ABORTED, 1, 0, None, context())

    assert ExitReason("timeout", exit_code=1) == reason


# -- killed ------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_killed_by_a_signal_not_from_the_master(signum: signal.Signals) -> None:
    """A worker that died of a signal without running its exit path, while
    the master was not stopping it: killed (the OOM killer, a user's kill)."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(signal=int(signum)), context())

    assert ExitReason("killed", None, signum.name, signal_sent_by_master=False) == reason


def test_killed_by_a_stop_signal_the_master_did_not_send() -> None:
    """A clean exit after a stop signal while the master asked nothing of
    the worker: someone else killed it."""
    reason = classify(EXIT_NORMAL, 0, SIGTERM, None, context())

    assert ExitReason("killed", 0, "SIGTERM", signal_sent_by_master=False) == reason


def test_killed_by_a_signal_without_a_name() -> None:
    """A signal with no name is reported by number."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(signal=77), context())

    assert ExitReason("killed", None, "signal 77", signal_sent_by_master=False) == reason


# -- crashed -----------------------------------------------------------------


def test_crashed_with_an_exception_after_boot() -> None:
    """An exception ended the booted worker: crashed, with the exit code."""
    reason = classify(EXIT_ERROR, 1, 0, ExitStatus(exit_code=1), context())

    assert ExitReason("crashed", exit_code=1) == reason


def test_crashed_without_running_its_exit_path() -> None:
    """``os._exit(7)`` skips the exit path: the logged status says crashed, 7."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(exit_code=7), context())

    assert ExitReason("crashed", exit_code=7) == reason


def test_crashed_known_from_the_record_without_the_logger() -> None:
    """Without hookkit's logger (no status) the worker's own code stands for it."""
    reason = classify(EXIT_ERROR, 2, 0, None, context())

    assert ExitReason("crashed", exit_code=2) == reason


# -- boot_error and app_load_error --------------------------------------------


def test_boot_error_from_the_record() -> None:
    """A worker that failed to boot wrote EXIT_BOOT_ERROR with code 3; the
    master halts before child_exit, so no status is seen."""
    reason = classify(EXIT_BOOT_ERROR, WORKER_BOOT_ERROR, 0, None, context(stopping=True))

    assert ExitReason("boot_error", exit_code=3) == reason


def test_boot_error_from_the_status() -> None:
    """Exit code 3 in the reaped status is gunicorn's WORKER_BOOT_ERROR."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(exit_code=3), context())

    assert ExitReason("boot_error", exit_code=3) == reason


def test_app_load_error_from_the_record() -> None:
    """A worker whose app failed to load wrote EXIT_APP_LOAD_ERROR with code 4."""
    reason = classify(EXIT_APP_LOAD_ERROR, APP_LOAD_ERROR, 0, None, context(stopping=True))

    assert ExitReason("app_load_error", exit_code=4) == reason


def test_app_load_error_from_the_status() -> None:
    """Exit code 4 in the reaped status is gunicorn's APP_LOAD_ERROR."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(exit_code=4), context())

    assert ExitReason("app_load_error", exit_code=4) == reason


# -- shutdown, reload, scaled_down --------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
def test_shutdown(signum: signal.Signals) -> None:
    """The master was stopping and the worker left cleanly on its stop
    signal: shutdown, signal sent by the master."""
    reason = classify(EXIT_NORMAL, 0, int(signum), None, context(stopping=True))

    assert ExitReason("shutdown", 0, signum.name, signal_sent_by_master=True) == reason


def test_shutdown_sigkill_at_the_end_of_stop() -> None:
    """The master SIGKILLs workers still there at the end of stop(): shutdown."""
    reason = classify(EXIT_NONE, 0, 0, ExitStatus(signal=SIGKILL), context(stopping=True))

    assert ExitReason("shutdown", None, "SIGKILL", signal_sent_by_master=True) == reason


def test_shutdown_without_a_recorded_signal() -> None:
    """A clean exit while stopping with no signal recorded is still shutdown,
    with no signal fields."""
    reason = classify(EXIT_NORMAL, 0, 0, None, context(stopping=True))

    assert ExitReason("shutdown", exit_code=0) == reason


def test_reload() -> None:
    """A worker of a generation a SIGHUP replaced left cleanly on SIGTERM: reload."""
    reason = classify(EXIT_NORMAL, 0, SIGTERM, None, context(from_before_reload=True))

    assert ExitReason("reload", 0, "SIGTERM", signal_sent_by_master=True) == reason


def test_scaled_down() -> None:
    """A worker stopped after nworkers_changed lowered the count: scaled_down."""
    reason = classify(EXIT_NORMAL, 0, SIGTERM, None, context(scale_down_pending=True))

    assert ExitReason("scaled_down", 0, "SIGTERM", signal_sent_by_master=True) == reason


def test_shutdown_wins_over_reload_and_scale_down() -> None:
    """While the master stops, every clean exit is shutdown."""
    everything = context(stopping=True, from_before_reload=True, scale_down_pending=True)

    reason = classify(EXIT_NORMAL, 0, SIGTERM, None, everything)

    expected = "shutdown"
    assert expected == reason.reason


def test_reload_wins_over_scale_down() -> None:
    """An old generation's worker stopped after a reload is reload, not scaled_down."""
    after_reload = context(from_before_reload=True, scale_down_pending=True)

    reason = classify(EXIT_NORMAL, 0, SIGTERM, None, after_reload)

    expected = "reload"
    assert expected == reason.reason


# -- unknown -----------------------------------------------------------------


def test_unknown_without_record_or_status() -> None:
    """No record written and no status seen (another logger class): unknown,
    whatever the master was doing. hookkit does not guess."""
    for ctx in (context(), context(stopping=True), context(from_before_reload=True)):
        assert ExitReason("unknown") == classify(EXIT_NONE, 0, 0, None, ctx)


def test_unknown_clean_exit_nobody_asked_for() -> None:
    """A clean exit with no stop signal and nothing from the master: unknown."""
    assert ExitReason("unknown", exit_code=0) == classify(EXIT_NORMAL, 0, 0, None, context())


@pytest.mark.parametrize(
    ("kind", "code", "received", "status", "ctx"),
    [
        (EXIT_MAX_REQUESTS, 0, 0, None, context()),
        (EXIT_NONE, 0, 0, ExitStatus(signal=SIGKILL), context(aborted=True)),
        (EXIT_NONE, 0, 0, ExitStatus(signal=SIGKILL), context()),
        (EXIT_ERROR, 1, 0, None, context()),
        (EXIT_BOOT_ERROR, 3, 0, None, context()),
        (EXIT_APP_LOAD_ERROR, 4, 0, None, context()),
        (EXIT_NORMAL, 0, SIGQUIT, None, context(stopping=True)),
        (EXIT_NORMAL, 0, SIGTERM, None, context(from_before_reload=True)),
        (EXIT_NORMAL, 0, SIGTERM, None, context(scale_down_pending=True)),
        (EXIT_NONE, 0, 0, None, context()),
    ],
)
def test_each_reason_is_one_of_reasons(
    kind: int, code: int, received: int, status: ExitStatus | None, ctx: MasterContext
) -> None:
    """Every classification is one of the documented ``REASONS``."""
    assert classify(kind, code, received, status, ctx).reason in REASONS


def test_reasons_are_the_documented_ten() -> None:
    """The reasons are the ten hookkit documents, in a stable order."""
    expected = (
        "max_requests",
        "timeout",
        "killed",
        "crashed",
        "boot_error",
        "app_load_error",
        "shutdown",
        "reload",
        "scaled_down",
        "unknown",
    )
    assert expected == REASONS


# -- ExitReason.fields and signal_name ---------------------------------------


def test_fields_leave_out_unknowns() -> None:
    """Only the reason when nothing else is known."""
    expected = {"reason": "unknown"}
    assert expected == ExitReason("unknown").fields()


def test_fields_keep_a_zero_exit_code() -> None:
    """An exit code of 0 is known, so it is kept."""
    expected = {"reason": "shutdown", "exit_code": 0}
    assert expected == ExitReason("shutdown", exit_code=0).fields()


def test_fields_with_a_signal_say_who_sent_it() -> None:
    """A known signal comes with whether the master sent it."""
    expected = {"reason": "killed", "signal": "SIGKILL", "signal_sent_by_master": False}
    assert expected == ExitReason("killed", None, "SIGKILL", False).fields()


def test_fields_with_everything_known() -> None:
    """Exit code and signal together."""
    expected = {
        "reason": "timeout",
        "exit_code": 1,
        "signal": "SIGABRT",
        "signal_sent_by_master": True,
    }
    assert expected == ExitReason("timeout", 1, "SIGABRT", True).fields()


@pytest.mark.parametrize(
    ("signum", "expected"),
    [(9, "SIGKILL"), (15, "SIGTERM"), (6, "SIGABRT"), (77, "signal 77")],
)
def test_signal_name(signum: int, expected: str) -> None:
    """Signals by name, or by number where they have no name."""
    assert expected == signal_name(signum)


# -- WorkerRecord --------------------------------------------------------------


def test_new_record_is_empty() -> None:
    """A new record holds zeros: no requests, no times, no exit."""
    record = WorkerRecord(age=5)
    try:
        expected = (5, 0, 0.0, 0.0, 0, EXIT_NONE, 0, 0)
        actual = (
            record.age,
            record.requests,
            record.forked_at,
            record.booted_at,
            record.pid,
            record.exit_kind,
            record.exit_code,
            record.signal_received,
        )
        assert expected == actual
    finally:
        record.close()


def test_record_fields_are_independent() -> None:
    """Writing one field leaves the others as they were."""
    record = WorkerRecord(age=1)
    try:
        record.pid = 4242
        record.add_request()
        record.add_request()
        record.forked_at = 10.5
        record.booted_at = 11.25
        record.set_exit(EXIT_MAX_REQUESTS, 0)
        record.signal_received = SIGTERM

        expected = (2, 10.5, 11.25, 4242, EXIT_MAX_REQUESTS, 0, SIGTERM)
        actual = (
            record.requests,
            record.forked_at,
            record.booted_at,
            record.pid,
            record.exit_kind,
            record.exit_code,
            record.signal_received,
        )
        assert expected == actual
    finally:
        record.close()


def run_child(record: WorkerRecord, then_kill: bool) -> tuple[int, int]:
    """Fork a real child that writes its facts into ``record`` as a worker
    does, then exits (or SIGKILLs itself); returns (child pid, wait status)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            record.pid = os.getpid()
            record.forked_at = time.monotonic()
            record.booted_at = time.monotonic()
            for _ in range(3):
                record.add_request()
            record.signal_received = SIGTERM
            record.set_exit(EXIT_MAX_REQUESTS, 0)
            if then_kill:
                os.kill(os.getpid(), signal.SIGKILL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return pid, status


def test_record_is_shared_across_fork() -> None:
    """What a forked child writes into the record, the parent reads after
    the child is gone: the mapping is MAP_SHARED."""
    record = WorkerRecord(age=7)
    try:
        child, status = run_child(record, then_kill=False)

        expected = (0, child, 3, EXIT_MAX_REQUESTS, 0, SIGTERM)
        actual = (
            os.waitstatus_to_exitcode(status),
            record.pid,
            record.requests,
            record.exit_kind,
            record.exit_code,
            record.signal_received,
        )
        assert expected == actual
        assert 0 < record.forked_at <= record.booted_at <= time.monotonic()
    finally:
        record.close()


def test_record_survives_a_sigkill() -> None:
    """A child SIGKILLed after writing leaves its facts for the parent."""
    record = WorkerRecord(age=8)
    try:
        child, status = run_child(record, then_kill=True)

        expected = (-SIGKILL, child, 3, EXIT_MAX_REQUESTS)
        actual = (os.waitstatus_to_exitcode(status), record.pid, record.requests, record.exit_kind)
        assert expected == actual
    finally:
        record.close()


def test_each_record_is_its_own() -> None:
    """Two workers' records do not share memory."""
    first, second = WorkerRecord(age=1), WorkerRecord(age=2)
    try:
        first.add_request()
        first.set_exit(EXIT_ERROR, 1)

        expected = (0, EXIT_NONE, 0)
        assert expected == (second.requests, second.exit_kind, second.exit_code)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("context", "reason", "by_master"),
    [
        (MasterContext(False, True, False, False), "shutdown", True),
        (MasterContext(False, False, True, False), "reload", True),
        (MasterContext(False, False, False, True), "scaled_down", True),
        (MasterContext(False, False, False, False), "killed", False),
    ],
)
def test_death_by_a_stop_signal_is_judged_by_who_would_have_sent_it(context, reason, by_master):
    """A worker killed outright by SIGTERM (before it installed its handler)
    is a shutdown, a reload or a scale-down when the master was doing that,
    and otherwise killed by someone else."""
    status = ExitStatus(signal=signal.SIGTERM)
    expected = ExitReason(reason, None, "SIGTERM", by_master)
    assert expected == classify(EXIT_NONE, 0, 0, status, context)
