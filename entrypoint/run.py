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
from pathlib import Path
from typing import Mapping

from . import limiter_store, ports
from .demo import model as demo_model
from .inside import names
from .checks import Check, Checker, engine_check, proxy_check, redis_check
from .config import Config
from .console import Console
from .errors import EXIT_OK, EntryError
from .key_watch import RELOAD_MARKER, KeyWatch
from .keys import Secret, new_internal_key
from .logs import LogForwarder, LogTail
from .monitor import Monitor, Outcome
from .own_metrics import OwnMetrics
from .probe_files import ProbeFiles, on_the_way_out
from .processes import Reaper, become_subreaper
from .render import ENGINE, LIMITER, PROXY, render_run_files, supervised_programs
from .shutdown import Shutdown, proxy_drain_budget
from .signals import SignalQueue
from .supervision import Supervisor


def preflight(config: Config) -> None:
    """Everything that can be wrong with the input, checked before any start."""
    ports.check_free(config.host, config.port, "--port")
    ports.check_free("127.0.0.1", config.engine_port, "--engine-port")
    if not shutil.which(config.engine_cmd[0]):
        raise EntryError(
            f"engine command {config.engine_cmd[0]!r} was not found: install vLLM "
            "(pip install 'llm-entry[gpu]' or scripts/install-cpu-engine.sh) or fix --engine-cmd."
        )
    if config.engine_cmd[1:3] == ("-m", "vllm.entrypoints.openai.api_server") and not _has_module(config.engine_cmd[0], "vllm"):
        raise EntryError(
            "vLLM is not installed for " + config.engine_cmd[0] + ": install it with "
            "pip install 'llm-entry[gpu]' (CUDA) or scripts/install-cpu-engine.sh (CPU), "
            "or point --engine-cmd at another engine."
        )
    if config.limits.private and not shutil.which("redis-server"):
        raise EntryError(limiter_store.missing_redis_server(config.proxy_workers))
    if config.redis_url is not None:
        why = limiter_store.ping(config.redis_url)
        if why:
            raise EntryError(limiter_store.unreachable(config.redis_url, why))


def _has_module(python: str, module: str) -> bool:
    if os.path.realpath(shutil.which(python) or python) == os.path.realpath(sys.executable):
        import importlib.util
        return importlib.util.find_spec(module) is not None
    return True  # another interpreter: let the engine's own error speak


def child_environment(config: Config, env: Mapping[str, str], internal_key: Secret,
                      reload_marker: Path | None = None) -> dict[str, str]:
    """supervisord's environment, which both programs inherit (the engine's
    command drops the proxy's keys from it)."""
    child = dict(env)
    child.pop(names.LITELLM_MASTER_KEY_VARIABLE, None)
    # It may hold a password; the proxy gets the URL it needs from its launch spec.
    child.pop(names.REDIS_URL_VARIABLE, None)
    child.update({
        names.MASTER_KEY_VARIABLE: config.master_key.reveal(),
        names.ENGINE_KEY_VARIABLE: internal_key.reveal(),
        names.ENGINE_API_KEY_VARIABLE: internal_key.reveal(),
        # No fetches from the internet at start (the cost map): both spellings,
        # LiteLLM 1.103 reads the second.
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
        # The proxy's own drain must end before ours gives up on it.
        names.PROXY_DRAIN_VARIABLE: str(int(proxy_drain_budget(config))),
    })
    # A proxy variable meant for the container's outbound traffic must never
    # carry the proxy's calls to the engine (prompts and the internal key).
    exempt = loopback_exempt(env.get("NO_PROXY"), env.get("no_proxy"))
    child["NO_PROXY"] = child["no_proxy"] = exempt
    if config.api_keys_file is not None:
        # absolute(), not resolve(): a Kubernetes Secret volume swaps a symlink
        # on update, and the proxy must follow the name, not today's target.
        child[names.API_KEYS_FILE_VARIABLE] = str(config.api_keys_file.absolute())
        if reload_marker is not None:
            child[names.KEYS_RELOAD_MARKER_VARIABLE] = str(reload_marker)
    return child


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def loopback_exempt(*no_proxy: str | None) -> str:
    """The NO_PROXY list given (both spellings merged), plus loopback."""
    hosts: list[str] = []
    for value in no_proxy:
        for host in (value or "").split(","):
            if host.strip() and host.strip() not in hosts:
                hosts.append(host.strip())
    return ",".join(hosts + [host for host in LOOPBACK_HOSTS if host not in hosts])


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
    console.say(config.proxy_workers_reason)
    console.say(config.limits.reason)
    if config.demo:
        console.say(f"demo model: {config.model} (tiny, random weights: it answers gibberish)")


def program_check(config: Config, name: str, run_dir: Path) -> Check:
    if name == ENGINE:
        return engine_check(config.engine_port)
    if name == PROXY:
        return proxy_check(config.local_url, config.master_key, config.served_model_name)
    return redis_check(limiter_store.private_socket(run_dir))


def make_checkers(config: Config, monitor: Monitor, run_dir: Path) -> dict[str, Checker]:
    timing = config.timing
    return {name: Checker(name, program_check(config, name, run_dir), timing.check_interval,
                          timing.check_timeout, monitor.report, monitor.began)
            for name in monitor.programs}


def starting_line(config: Config) -> str:
    line = (f"starting engine (127.0.0.1:{config.engine_port}) and proxy "
            f"({config.host}:{config.port}) together")
    if LIMITER in supervised_programs(config):
        line += ", and a private redis-server for the keys' limits (limiter)"
    return line


def serve(config: Config, env: Mapping[str, str], console: Console) -> int:
    # First: as PID 1 a signal without a handler is ignored, and a SIGTERM
    # while the demo model builds must not wait for the pod's SIGKILL.
    signals = SignalQueue().install()
    if config.redis_url is not None:
        console.hide(*config.redis_url.secrets)
    preflight(config)
    probes = ProbeFiles(config.probe_dir, config.timing.heartbeat_ttl)
    probes.prepare()
    try:
        return serve_prepared(config, env, console, signals, probes)
    except EntryError as error:
        on_the_way_out(lambda: probes.expire(stopped_line(error.exit_code, error.message)))
        raise
    finally:
        # Whatever ended the run (finish() already did this on the usual way
        # out): nothing runs now, so the heartbeat stops vouching.
        on_the_way_out(lambda: probes.expire("stopped: llm-entry failed, see its last lines on stderr"))


def stopped_line(exit_code: int, summary: str) -> str:
    """llm-entry's last line, also what not-ready says once it has exited."""
    return f"stopped; exit code {exit_code}" + ("" if exit_code == EXIT_OK else f" ({summary})")


def serve_prepared(config: Config, env: Mapping[str, str], console: Console, signals: SignalQueue,
                   probes: ProbeFiles) -> int:
    probes.show("starting", None)
    announce(config, console)
    if config.demo:
        demo_model.ensure_demo_model(Path(config.model).parent)
    if signals.received:
        probes.expire("stopped before the start; exit code 0")
        console.say("stop requested before the start: nothing was started; exit code 0")
        return EXIT_OK

    internal_key = new_internal_key()
    console.hide(config.master_key.reveal(), internal_key.reveal())
    reaper = Reaper()
    become_subreaper()

    run_dir = Path(tempfile.mkdtemp(prefix="llm-entry-"))
    programs = supervised_programs(config)
    supervisor = Supervisor(run_dir)
    key_watch = KeyWatch(config, console, run_dir / RELOAD_MARKER, signals.take_reload).start()
    forwarder = LogForwarder([LogTail(name, run_dir / f"{name}.log", console) for name in programs],
                             before_pump=key_watch.poll)
    checkers: dict[str, Checker] = {}
    try:
        for file in render_run_files(config, sys.executable, run_dir):
            write_private(run_dir, file.name, file.content)
        (run_dir / names.METRICS_DIR).mkdir(mode=0o700)   # every proxy worker's metric files
        supervisor.start(sys.executable, child_environment(config, env, internal_key, key_watch.marker))
        forwarder.start()
        console.say(starting_line(config))
        metrics = OwnMetrics(run_dir / names.OWN_METRICS_FILE, programs)
        monitor = Monitor(config, supervisor, probes, console, forwarder, signals, reaper, programs=programs,
                          metrics=metrics)
        checkers = make_checkers(config, monitor, run_dir)
        monitor.attach(checkers)
        for checker in checkers.values():
            checker.start()
        outcome = monitor.run()
        return finish(outcome, config, supervisor, monitor, probes, console, signals, reaper, checkers, forwarder)
    finally:
        for checker in checkers.values():
            checker.stop()
        forwarder.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def finish(outcome: Outcome, config: Config, supervisor: Supervisor, monitor: Monitor,
           probes: ProbeFiles, console: Console, signals: SignalQueue, reaper: Reaper,
           checkers: dict[str, Checker], forwarder: LogForwarder) -> int:
    if outcome.requested:
        on_the_way_out(lambda: probes.show(f"shutting down: {outcome.summary}", None))
        console.say(f"{outcome.summary}: shutting down")
    else:
        console.error(outcome.summary)
        for line in outcome.details:
            console.error("  " + line)
    for checker in checkers.values():
        checker.stop()
    limiter = monitor.programs.get(LIMITER)
    Shutdown(config, supervisor, console, signals, reaper, probes, flush_logs=forwarder.finish).run(
        proxy_pgids=monitor.programs[PROXY].pgids,
        engine_pgids=monitor.programs[ENGINE].pgids,
        limiter_pgids=limiter.pgids if limiter is not None else (),
        drain=outcome.requested, was_ready=outcome.was_ready,
        since=outcome.since, kill_at_once=outcome.kill_at_once,
    )
    last_line = stopped_line(outcome.exit_code, outcome.summary)
    on_the_way_out(lambda: probes.expire(last_line))  # nothing runs any more
    forwarder.stop()  # the programs' last words come before our last line
    console.say(last_line)
    return outcome.exit_code
