"""The command line: parse, hand over, turn EntryError into one line and a code.

Every option can also come from an environment variable LLM_ENTRY_<OPTION>
(shown in --help); the master key also from LITELLM_MASTER_KEY.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__
from .config import MASTER_KEY_VARIABLES, RESTART_POLICIES, Options, build_config
from .console import Console
from .engine_options import ENGINE_CLI_MODULE
from .errors import EXIT_BAD_CONFIG, EntryError
from .gpus import query_node_gpus
from .inside.client_limits import parse_size, spell_size
from .node_group import NODE_PARALLELISMS
from .render import dry_run_text

PATH = click.Path(path_type=Path)


# Every default is written once, in Options; option() reads it from there.
# Those whose default is None (--port, --drain-delay, ...) are decided by build_config from
# the environment or the machine, and their help says how.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Options) if f.default is not dataclasses.MISSING}


def default_of(name: str):
    """The default of an option, as Options has it."""
    return _DEFAULTS[name]


def option(*names, **kwargs):
    """click.option that shows its LLM_ENTRY_* variable in --help and takes its
    default from the Options field of its name (--grace-period: grace_period).
    A default of None stays unset: build_config decides it, and the help says how."""
    kwargs.setdefault("show_envvar", True)
    field_name = names[0].split("/")[0].lstrip("-").replace("-", "_")   # --ui/--no-ui: ui
    if _DEFAULTS.get(field_name) is not None and not kwargs.get("is_flag"):
        kwargs.setdefault("default", _DEFAULTS[field_name])
    return click.option(*names, **kwargs)

SECONDS = click.FLOAT


class WorkerCount(click.ParamType):
    """A number of processes, or "auto" (None: config decides from the machine)."""

    AUTO = "auto"
    name = "N|auto"

    def convert(self, value, param, ctx):
        if value is None or value == self.AUTO:
            return None
        if isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor auto.", param, ctx)

    def spell(self, value: int | None) -> str:
        """What `convert` reads back as `value`: how --help shows a default of None."""
        return self.AUTO if value is None else str(value)


WORKERS = WorkerCount()


class ByteSize(click.ParamType):
    """A size in bytes: 65536, 64KiB, 64MiB, 1GiB (or 64MB, decimal)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)

    def spell(self, value: int) -> str:
        return spell_size(value)


SIZE = ByteSize()


@click.command(context_settings={"auto_envvar_prefix": "LLM_ENTRY", "show_default": True,
                                 "help_option_names": ["-h", "--help"], "max_content_width": 100})
@option("--model", required=True,
              help="Model folder (holds config.json), a hub id (org/name, passed to vLLM as is), "
                   "or 'demo' for a tiny built-in model.")
@option("--master-key", envvar=list(MASTER_KEY_VARIABLES),
              help="Key clients must present. Prefer the variable or --master-key-file: "
                   "a flag shows in `ps`.")
@option("--master-key-file", type=PATH, help="File holding the master key (a mounted secret).")
@option("--api-keys-file", type=PATH,
              help="More keys, one a line: KEY [name=NAME] [rpm=N] [tpm=N] [max_parallel=N] "
                   "(# comments allowed); edits apply without a restart.")
@option("--served-model-name", help="Model name clients ask for.  [default: the model folder's name]")
@option("--host", help="Address the public proxy listens on.")
@option("--port", type=click.INT,
              help="Public port of the proxy.  [default: 8080, or 80 when OPENBAYES_SERVING_PRODUCTION is set]")
@option("--engine-port", type=click.INT,
              help="Internal engine port, on 127.0.0.1 only.")
@option("--probe-dir", type=PATH, help="Folder of the probe files.")
@option("--tensor-parallel-size", type=click.INT,
              help="GPUs to split the model over.  [default: the largest size the GPUs and heads allow]")
@option("--max-model-len", type=click.INT, help="Context length passed to vLLM.")
@option("--gpu-memory-utilization", type=click.FLOAT, help="Fraction of GPU memory vLLM may use.")
@option("--engine-cmd",
              help="Command that starts the engine, split like a shell line; llm-entry appends the vLLM "
                   f"arguments.  [default: this Python -m {ENGINE_CLI_MODULE} serve, which runs `vllm serve`]")
@option("--engine-python",
              help="The Python that runs vLLM (the default --engine-cmd) when it is not this one, as in the GPU "
                   "image; it needs llm-entry installed too (pip install --no-deps), for the launcher and the "
                   "guard vLLM imports.  [default: this Python]")
@option("--proxy-workers", type=WORKERS, default=WORKERS.spell(default_of("proxy_workers")),
              help="LiteLLM worker processes, or auto: one per usable CPU up to 2 on a GPU node, "
                   "1 when the engine runs on the CPU.")
@option("--cache-dir", type=PATH, help="Where the demo model is built.  [default: ~/.cache/llm-entry]")
@option("--startup-timeout", type=SECONDS,
              help="Seconds to become ready before giving up.")
@option("--check-interval", type=SECONDS,
              help="Seconds between health checks of each process.")
@option("--check-timeout", type=SECONDS,
              help="Seconds one health check may take.")
@option("--unready-after", type=click.INT,
              help="Failed checks in a row that make the container not ready.")
@option("--hang-timeout", type=SECONDS,
              help="Seconds without a passing check, once ready, before the container is declared not healthy.")
@option("--heartbeat-ttl", type=SECONDS,
              help="Seconds the probe scripts trust the probe files without a new heartbeat.")
@option("--grace-period", type=SECONDS,
              help="Seconds the whole shutdown may take (keep it below terminationGracePeriodSeconds).")
@option("--drain-delay", type=SECONDS,
              help="Seconds to stay up, not ready, after SIGTERM before stopping.  "
                   "[default: 2 in Kubernetes, else 0]")
@option("--engine-restart", type=click.Choice(RESTART_POLICIES),
              help="Restart the engine in place when it exits (a fresh container frees GPU memory best).")
@option("--max-restarts", type=click.INT,
              help="Restarts of a process allowed within --restart-window before giving up.")
@option("--restart-window", type=SECONDS,
              help="Seconds over which restarts are counted.")
@option("--redis-url",
              help="Redis that keeps the keys' limit counters, shared by every replica that names it: "
                   "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path.sock[?db=N].  "
                   "[default: a private redis-server when --api-keys-file meets several proxy workers "
                   "or --state-dir]")
@option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder (a volume) where the private redis-server keeps the keys' counts, so that they "
                   "survive a restart: needed for quota= in --api-keys-file unless --redis-url is given; "
                   "at most about a second of counts is lost in a crash.")
@option("--max-body-size", type=SIZE, default=SIZE.spell(default_of("max_body_size")),
              help="Largest request body the public port accepts, for every route and key (413 beyond it, "
                   "judged on Content-Length before the body is read).")
@option("--max-header-size", type=SIZE, default=SIZE.spell(default_of("max_header_size")),
              help="Largest request head (request line and headers) the public port accepts (431 beyond it).")
@option("--header-timeout", type=SECONDS,
              help="Seconds a client has to send a request's head, from its connection or the request's "
                   "first byte (408, then the connection is closed).")
@option("--body-timeout", type=SECONDS,
              help="Seconds a request body may go without a new byte (408).")
@option("--keep-alive-timeout", type=SECONDS,
              help="Seconds an idle keep-alive connection stays open; keep it above a load balancer's idle timeout.")
@option("--ui/--no-ui", show_default=False,
              help="Serve a chat page at / for trying the model in a browser (the page needs no key; it asks "
                   "for one to talk to the model). With --no-ui, / answers 404.  [default: --ui]")
@option("--nodes", type=click.INT,
              help="Nodes one model spans, one llm-entry each (vLLM's multi-node mode, no Ray); 1 is a single "
                   "node.  [default: LWS_GROUP_SIZE, else 1]")
@option("--node-rank", type=click.INT,
              help="This node's rank in the group: 0 is the leader (engine, proxy, probes), 1 and up are "
                   "workers (engine headless, no proxy).  [default: LWS_WORKER_INDEX, else 0]")
@option("--leader-address",
              help="Address at which every node of the group reaches the leader.  [default: LWS_LEADER_ADDRESS]")
@option("--rendezvous-port", type=click.INT,
              help="The leader's port where the workers' engines join the group (vLLM's --master-port).")
@option("--node-parallelism", type=click.Choice(NODE_PARALLELISMS),
              help="How the model is split across nodes: pipeline (a stage per node, tensor parallel within "
                   "each) or tensor (tensor parallel over every GPU of the group).")
@option("--dry-run", is_flag=True, help="Print the engine command and the rendered configs; start nothing.")
@click.version_option(__version__, prog_name="llm-entry")
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, engine_args: tuple[str, ...], **options) -> None:
    """Serve a model with vLLM behind a LiteLLM proxy that requires a key.

    Arguments after `--` are passed to the engine unchanged, except the flags
    llm-entry sets itself (--host, --port, --api-key, --model,
    --served-model-name, --tensor-parallel-size, and across nodes --nnodes,
    --node-rank, --master-addr, --master-port, --headless), which are refused.
    """
    console = Console()
    from_argv = ctx.get_parameter_source("master_key") is ParameterSource.COMMANDLINE
    opts = Options(engine_args=tuple(engine_args), master_key_on_command_line=from_argv, **options)
    try:
        config = build_config(opts, os.environ, query_node_gpus)
        if config.dry_run:
            for warning in config.warnings:
                console.error("warning: " + warning)  # stderr: stdout is the plan
            click.echo(dry_run_text(config, sys.executable, Path("<run-dir>")), nl=False)
            return
        from .run import serve  # heavy imports only when serving
        code = serve(config, os.environ, console)
    except EntryError as error:
        console.error(error.message)
        sys.exit(error.exit_code)
    sys.exit(code)


def main() -> None:
    try:
        command.main(prog_name="llm-entry", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        # click's own usage errors: one line, the same exit code as ours.
        Console().error(error.format_message() + " (see llm-entry --help)")
        sys.exit(EXIT_BAD_CONFIG)
    except click.exceptions.Abort:
        sys.exit(EXIT_BAD_CONFIG)


if __name__ == "__main__":
    main()
