"""One run of llm-entry, from pre-flight checks to the last reaped child.

Order matters: every check that can fail on bad input runs before the first
process starts; once supervisord runs, every way out goes through the one
shutdown routine and the private run folder is removed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from . import limiter_store
from .board import ProgramBoard
from .checks import Check, Checker, engine_check, headless_engine_check, leader_check, proxy_check, redis_check
from .config import Config
from .console import Console
from .demo import model as demo_model
from .environment import child_environment
from .errors import EXIT_OK, EntryError
from .host import Host
from .inside import names
from .inside.names import ENGINE, LIMITER, PROXY
from .key_watch import RELOAD_MARKER, KeyWatch
from .keys import Secret, new_internal_key
from .logs import LogForwarder, LogTail
from .monitor import Monitor
from .node_group import LEADER
from .outcome import Outcome
from .own_metrics import OwnMetrics
from .preflight import preflight
from .probe_files import ProbeFiles, on_the_way_out
from .processes import Reaper, become_subreaper
from .readiness import Readiness
from .render import render_run_files, supervised_programs
from .restarts import RestartPolicy
from .shutdown import Shutdown
from .signals import SignalQueue
from .supervision import Supervisor


def write_private(folder: Path, name: str, content: str) -> None:
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(content)


def announce(config: Config, console: Console) -> None:
    """What llm-entry decided, said once before anything starts."""
    for warning in config.warnings:
        console.say("warning: " + warning)
    console.say(config.gpus_reason)
    if config.gpus.warning:
        console.say(config.gpus.warning)
    console.say(config.parallel.reason)
    if config.group.multi_node:
        console.say(config.group.reason)
    if not config.group.is_worker:   # a worker runs no proxy: nothing of it to tell
        console.say(config.proxy_workers_reason)
        console.say(config.limits.reason)
    if config.demo:
        console.say(f"demo model: {config.model} (tiny, random weights: it answers gibberish)")


def program_check(config: Config, name: str, run_dir: Path, internal_key: Secret) -> Check:
    group = config.group
    if name == LEADER:
        return leader_check(str(group.leader_address), group.rendezvous_port, group.leader)
    if name == ENGINE and group.is_worker:
        return headless_engine_check()
    if name == ENGINE:
        return engine_check(config.engine_port, internal_key, config.served_model_name)
    if name == PROXY:
        return proxy_check(config.local_url, config.master_key, config.served_model_name)
    return redis_check(limiter_store.private_socket(run_dir))


def make_checkers(config: Config, board: ProgramBoard, run_dir: Path, internal_key: Secret) -> dict[str, Checker]:
    timing = config.timing
    return {name: Checker(name, program_check(config, name, run_dir, internal_key), timing.check_interval,
                          timing.check_timeout, board.report, board.began)
            for name in board.names}


def watched(config: Config) -> tuple[str, ...]:
    """What the board follows: the supervised programs, and a worker's leader."""
    return supervised_programs(config) + ((LEADER,) if config.group.is_worker else ())


def starting_line(config: Config) -> str:
    group = config.group
    if group.is_worker:
        return (f"starting the engine headless, node rank {group.rank} of {group.nodes}, "
                f"for {group.leader} (no proxy, no public port on this node)")
    line = (f"starting engine (127.0.0.1:{config.engine_port}) and proxy "
            f"({config.host}:{config.port}) together")
    if LIMITER in supervised_programs(config):
        line += ", and a private redis-server for the keys' limits (limiter)"
    return line


def stopped_line(exit_code: int, summary: str) -> str:
    """llm-entry's last line, also what not-ready says once it has exited."""
    return f"stopped; exit code {exit_code}" + ("" if exit_code == EXIT_OK else f" ({summary})")


def serve(config: Config, env: Mapping[str, str], console: Console) -> int:
    with Run(config, env, console) as run:
        if not run.started:
            return run.stopped_before_start()
        return run.stop(run.watch())


class Run:
    """Owns one run and everything it started.

    Entering it checks the input, then creates the helpers (signals, probe
    files, reaper, supervisord, key watch, log forwarder, program board,
    checkers, monitor), hands them to each other and starts the programs.
    watch() returns how the run ended; stop() shuts everything down and says
    the last line. Leaving it stops the checkers and the log forwarder once
    each, removes the private run folder, and expires the heartbeat, however
    the run ended.
    """

    def __init__(self, config: Config, env: Mapping[str, str], console: Console):
        self.config = config
        self.env = env
        self.console = console
        self.signals = SignalQueue()
        self.probes = ProbeFiles(config.probe_dir, config.timing.heartbeat_ttl, say=console.say)
        self.started = False
        # Stopped before the shutdown (no check may race it), and after it.
        self._checking = ExitStack()
        self._running = ExitStack()
        self._last_logs_by: float | None = None   # the shutdown's deadline for the last log lines

    def __enter__(self) -> Run:
        # First: as PID 1 a signal without a handler is ignored, and a SIGTERM
        # while the demo model builds must not wait for the pod's SIGKILL. The
        # package has recorded signals since it was imported: they count here.
        self.signals.install()
        if self.config.redis_url is not None:
            self.console.hide(*self.config.redis_url.secrets)
        preflight(self.config)
        self.probes.prepare()
        try:
            self._prepare()
            if not self.signals.received:
                self._start()
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._checking.close()
        self._running.close()
        if isinstance(error, EntryError):
            message, code = error.message, error.exit_code
            on_the_way_out(lambda: self.probes.expire(stopped_line(code, message)))
        # Whatever ended the run (stop() already did this on the usual way
        # out): nothing runs now, so the heartbeat stops vouching.
        on_the_way_out(lambda: self.probes.expire("stopped: llm-entry failed, see its last lines on stderr"))

    def _prepare(self) -> None:
        self.probes.show("starting", None)
        announce(self.config, self.console)
        if self.config.demo and not self.signals.received:   # a stop came first: nothing to build for
            demo_model.ensure_demo_model(Path(self.config.model).parent)

    def _start(self) -> None:
        config, console = self.config, self.console
        internal_key = new_internal_key()
        console.hide(config.master_key.reveal(), internal_key.reveal())
        reaper = Reaper()
        become_subreaper()
        run_dir = Path(tempfile.mkdtemp(prefix="llm-entry-"))
        self._running.callback(shutil.rmtree, run_dir, ignore_errors=True)
        programs = supervised_programs(config)
        supervisor = Supervisor(run_dir)
        self.metrics = OwnMetrics(run_dir / names.OWN_METRICS_FILE, watched(config))
        key_watch = KeyWatch(config, console, run_dir / RELOAD_MARKER, self.signals.take_reload,
                             self.metrics).start()
        self._running.callback(key_watch.stop)
        self.forwarder = LogForwarder([LogTail(name, run_dir / f"{name}.log", console) for name in programs],
                                      before_pump=key_watch.look)
        self._running.callback(lambda: self.forwarder.stop(until=self._last_logs_by))
        for file in render_run_files(config, sys.executable, run_dir):
            write_private(run_dir, file.name, file.content)
        (run_dir / names.METRICS_DIR).mkdir(mode=0o700)   # every proxy worker's metric files
        supervisor.start(sys.executable, child_environment(config, self.env, internal_key, key_watch.marker))
        self.forwarder.start()
        key_watch.take_signals()
        console.say(starting_line(config))
        self.host = Host(supervisor, self.signals, reaper)
        self._watch_programs(run_dir, programs, internal_key)

    def _watch_programs(self, run_dir: Path, programs: tuple[str, ...], internal_key: Secret) -> None:
        config, clock = self.config, self.host.clock
        metrics = self.metrics
        self.board = ProgramBoard(watched(config), clock(), metrics)
        checkers = make_checkers(config, self.board, run_dir, internal_key)
        for checker in checkers.values():
            self._checking.callback(checker.stop)
            checker.start()
        readiness = Readiness(config, self.probes, self.console, metrics, self.board.started)
        restart_policy = RestartPolicy(config, self.host, self.board, self.forwarder, self.console)
        self.monitor = Monitor(config, self.board, self.host, readiness, restart_policy, checkers)
        self.started = True

    def watch(self) -> Outcome:
        return self.monitor.run()

    def stop(self, outcome: Outcome) -> int:
        if outcome.requested:
            on_the_way_out(lambda: self.probes.show(f"shutting down: {outcome.summary}", None))
            self.console.say(f"{outcome.summary}: shutting down")
        else:
            self.console.error(outcome.summary)
            for line in outcome.details:
                self.console.error("  " + line)
        self._checking.close()
        shutdown = Shutdown(self.config, self.host, self.board, self.probes, self.console,
                            flush_logs=lambda name: self.forwarder.finish(name, until=shutdown.end))
        shutdown.run(outcome)
        self._last_logs_by = shutdown.last_logs_by()
        last_line = stopped_line(outcome.exit_code, outcome.summary)
        on_the_way_out(lambda: self.probes.expire(last_line))  # nothing runs any more
        self._running.close()  # the programs' last words come before our last line
        self.console.say(last_line)
        return outcome.exit_code

    def stopped_before_start(self) -> int:
        self.probes.expire("stopped before the start; exit code 0")
        self.console.say("stop requested before the start: nothing was started; exit code 0")
        return EXIT_OK
