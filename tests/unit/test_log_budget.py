"""Unit tests of the log forwarder under a backlog: it works in rounds, the
last flush ends by its deadline and says how many lines it could not show,
and the shutdown's deadline for it lies inside the grace period."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoint.board import ProgramBoard
from entrypoint.host import Host
from entrypoint.logs import CHUNK, LogForwarder, LogTail
from entrypoint.outcome import Outcome
from entrypoint.shutdown import Shutdown
from entrypoint.shutdown_plan import FULL_SIZE_GRACE, LOG_FLUSH, SLACK

from fakes import (
    FakeClock,
    FakeConfig,
    FakeProbes,
    FakeProcesses,
    FakeReaper,
    FakeSignals,
    FakeSupervisor,
    quiet_console,
    timing,
    unwritten_metrics,
)

LINE = "INFO entrypoint.inside.refusals: refused POST /v1/chat/completions from 10.0.0.7: wrong key\n"


def backlog(path: Path, lines: int) -> None:
    path.write_text(LINE * lines)


def test_the_last_flush_ends_by_its_deadline_and_counts_what_it_could_not_show(tmp_path: Path) -> None:
    screen, clock = quiet_console(), FakeClock()
    lines = 40 * CHUNK // len(LINE)
    backlog(tmp_path / "proxy.log", lines)
    (tmp_path / "engine.log").write_text("last words without a newline")
    # Each round costs a second: a deadline 3 s away leaves room for three.
    forwarder = LogForwarder([LogTail(name, tmp_path / f"{name}.log", screen.console) for name in ("engine", "proxy")],
                             before_pump=lambda: clock.advance(1.0), clock=clock)
    forwarder.stop(until=3.0)
    shown = screen.out.getvalue().splitlines()
    proxy_shown = sum(line.startswith("proxy     | INFO") for line in shown)
    assert 0 < proxy_shown < lines
    assert "engine    | last words without a newline" in shown
    assert shown[-1] == (f"llm-entry | {lines - proxy_shown} lines of the proxy's log were not shown "
                         "(shutdown time budget)")
    assert clock() <= 3.0 + 1.0, "a round past the deadline at most"


def test_a_backlog_that_fits_the_deadline_is_shown_whole_without_a_count(tmp_path: Path) -> None:
    screen, clock = quiet_console(), FakeClock()
    backlog(tmp_path / "proxy.log", 1000)
    forwarder = LogForwarder([LogTail("proxy", tmp_path / "proxy.log", screen.console)], clock=clock)
    forwarder.stop(until=1.0)
    assert screen.out.getvalue().count("proxy     | INFO") == 1000
    assert "not shown" not in screen.out.getvalue()


def test_a_flush_of_a_stopped_program_by_a_deadline_leaves_the_rest_to_the_next(tmp_path: Path) -> None:
    screen, clock = quiet_console(), FakeClock()
    lines = 10 * CHUNK // len(LINE)
    backlog(tmp_path / "proxy.log", lines)
    forwarder = LogForwarder([LogTail("proxy", tmp_path / "proxy.log", screen.console)],
                             before_pump=lambda: clock.advance(1.0), clock=clock)
    forwarder.finish("proxy", until=2.0)
    first = screen.out.getvalue().count("proxy     | INFO")
    assert 0 < first < lines
    forwarder.stop(until=100.0)
    assert screen.out.getvalue().count("proxy     | INFO") == lines


@pytest.mark.parametrize("grace", [2.0, 5.0, 12.0, 25.0, 120.0])
def test_the_last_flush_is_over_before_the_grace_period_ends(grace: float) -> None:
    clock = FakeClock(1000.0)
    processes = FakeProcesses(clock)
    host = Host(FakeSupervisor(clock, processes), FakeSignals(clock), FakeReaper(processes), processes=processes,
                clock=clock)
    board = ProgramBoard(("engine", "proxy"), started=0.0, metrics=unwritten_metrics(("engine", "proxy")))
    shutdown = Shutdown(FakeConfig(timing=timing(grace_period=grace)), host, board, FakeProbes(clock),
                        quiet_console().console)
    signalled = clock()
    shutdown.run(Outcome(0, "received SIGTERM", requested=True, since=signalled))
    assert clock() <= shutdown.end < shutdown.last_logs_by() < signalled + grace
    scale = min(grace / FULL_SIZE_GRACE, 1.0)
    assert shutdown.last_logs_by() - shutdown.end >= 0.7 * scale * LOG_FLUSH
    assert signalled + grace - shutdown.last_logs_by() >= 2 * scale * SLACK - 1e-9
