"""The engine's and the proxy's own log lines reach the container's output
with the master key and the internal engine key replaced by `***`: as they
are forwarded to stdout, and as the engine's last lines quoted on stderr
when it dies.

Neither the engine nor LiteLLM writes a key into its log by itself, so this
module makes them: the engine double logs the path of every request (query
string included), and LiteLLM logs the model name of a request it refuses.
The internal key is read from the engine's environment, as any process of the
same user could. The children's own log files hold the raw keys; llm-entry's
stdout and stderr must not (issue: keys and exposure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bench.procs import wait_for
from entrypoint.errors import EXIT_ENGINE_FAILED, EXIT_OK

from harness import Entry

# LiteLLM masks anything shaped like "sk-..." in its own log lines before
# llm-entry sees them (so the harness's master key and the internal key never
# reach llm-entry raw from the proxy). A master key of any other shape does:
# llm-entry's redaction is then the only thing between it and the log.
MASTER_KEY = "mk-" + "4e9b2d7a1c6f3e8b0d5a9c2e7f1b"
LINE_DEADLINE = 30.0   # from a request to its line in llm-entry's output


@dataclass(frozen=True)
class Leak:
    """One key put into one child's log, and how to find the line it makes."""

    source: str     # "engine" or "proxy"
    key_name: str   # "master" or "internal"
    marker: str     # sent just before the key, so the line can be found, hidden or not

    @property
    def hidden(self) -> str:
        return self.marker + "***"


ENGINE_LEAKS = [Leak("engine", "master", "?leak-master="), Leak("engine", "internal", "?leak-internal=")]
PROXY_LEAKS = [Leak("proxy", "master", "leak-master-")]


@dataclass
class Run:
    """A finished llm-entry whose children were made to log the keys."""

    entry: Entry
    keys: dict[str, str]
    child_logs: str   # what the engine and the proxy wrote, unfiltered, while they ran
    exit_code: int | None = None   # set once the run has ended


def forwarded(text: str, source: str) -> list[str]:
    """The lines of llm-entry's output that forward what `source` wrote:
    `engine    | ...` on stdout, `llm-entry:   engine | ...` in a summary on stderr."""
    return [line for line in text.splitlines()
            if line.startswith(f"{source:<9} | ") or line.startswith(f"llm-entry:   {source} | ")]


def make_leak(entry: Entry, leak: Leak, key: str) -> None:
    if leak.source == "engine":
        # Straight to the engine, without its key: it answers 401 and logs the path.
        response = requests.get(f"http://127.0.0.1:{entry.engine_port}/v1/models{leak.marker}{key}", timeout=10)
        assert response.status_code == 401, response.text
    else:
        # No such model on a route LiteLLM serves itself (the model routes go
        # to the engine): LiteLLM refuses it and logs the name it was given.
        response = requests.post(entry.url("/v1/images/generations"),
                                 json={"model": leak.marker + key, "prompt": "hi"},
                                 headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
        assert 400 <= response.status_code < 500, response.text
    wait_for(lambda: any(leak.marker in line for line in forwarded(entry.output(), leak.source)), LINE_DEADLINE,
             f"the {leak.source} to log the request that holds the {leak.key_name} key", poll=0.1)


def new_entry(tmp: Path, env: dict[str, str] | None = None) -> Entry:
    return Entry(tmp, env={"LLM_ENTRY_MASTER_KEY": MASTER_KEY, "ENGINE_DOUBLE_LOG_REQUESTS": "1", **(env or {})})


def start_and_leak(entry: Entry, leaks: list[Leak]) -> Run:
    """Starts llm-entry and has its children log the keys (the caller ends the run)."""
    entry.start().wait_ready()
    internal_key = entry.engine_key()
    assert internal_key.startswith("sk-internal-"), "the engine's environment holds no internal key"
    keys = {"master": MASTER_KEY, "internal": internal_key}
    for leak in leaks:
        make_leak(entry, leak, keys[leak.key_name])
    # The run folder goes with llm-entry: read what the children wrote now.
    child_logs = "".join(path.read_text(errors="replace") for path in sorted(entry.run_dir().glob("*.log")))
    return Run(entry, keys, child_logs)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The engine logs both keys and the proxy the master key; then SIGTERM."""
    entry = new_entry(tmp_path_factory.mktemp("redaction-stopped"))
    try:
        run = start_and_leak(entry, ENGINE_LEAKS + PROXY_LEAKS)
        run.exit_code = entry.stop()
        yield run
    finally:
        entry.kill_everything()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """The engine logs both keys and dies: llm-entry quotes its last lines on stderr."""
    tmp = tmp_path_factory.mktemp("redaction-crashed")
    exit_file = tmp / "engine-exit-now"
    entry = new_entry(tmp, env={"ENGINE_DOUBLE_EXIT_FILE": str(exit_file), "ENGINE_DOUBLE_EXIT_CODE": "1"})
    try:
        run = start_and_leak(entry, ENGINE_LEAKS)
        exit_file.touch()
        run.exit_code = entry.wait_exit()
        yield run
    finally:
        entry.kill_everything()


def test_the_engine_and_the_proxy_really_wrote_the_keys_into_their_own_logs(stopped, crashed):
    # Without this the tests below could pass because no key was ever written.
    for run, leaks in ((stopped, ENGINE_LEAKS + PROXY_LEAKS), (crashed, ENGINE_LEAKS)):
        for leak in leaks:
            assert leak.marker + run.keys[leak.key_name] in run.child_logs, leak


@pytest.mark.parametrize("leak", ENGINE_LEAKS + PROXY_LEAKS,
                         ids=lambda leak: f"{leak.key_name}-key-from-the-{leak.source}")
def test_a_key_that_a_child_logs_is_shown_as_stars_on_its_forwarded_line(stopped, leak):
    lines = [line for line in forwarded(stopped.entry.out_path.read_text(), leak.source) if leak.marker in line]
    assert lines, f"no forwarded {leak.source} line on stdout holds {leak.marker!r}"
    for line in lines:
        assert leak.hidden in line, line
        assert stopped.keys[leak.key_name] not in line, line


@pytest.mark.parametrize("leak", ENGINE_LEAKS, ids=lambda leak: f"{leak.key_name}-key")
def test_the_engines_last_lines_quoted_on_stderr_after_it_died_show_the_key_as_stars(crashed, leak):
    assert crashed.exit_code == EXIT_ENGINE_FAILED, crashed.entry.output()
    lines = [line for line in forwarded(crashed.entry.stderr(), "engine") if leak.marker in line]
    assert lines, f"the summary on stderr quotes no engine line that holds {leak.marker!r}:\n{crashed.entry.stderr()}"
    for line in lines:
        assert leak.hidden in line, line
        assert crashed.keys[leak.key_name] not in line, line


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("key_name", ["master", "internal"])
@pytest.mark.parametrize("run_name", ["stopped", "crashed"])
def test_no_key_appears_anywhere_in_llm_entrys_output(request, run_name, key_name, stream):
    run = request.getfixturevalue(run_name)
    path = run.entry.out_path if stream == "stdout" else run.entry.err_path
    assert run.keys[key_name].encode() not in path.read_bytes()


def test_the_stopped_run_exits_0_and_leaves_no_process(stopped):
    assert stopped.exit_code == EXIT_OK, stopped.entry.output()
    stopped.entry.assert_nothing_left()


def test_the_crashed_run_exits_3_and_leaves_no_process(crashed):
    assert crashed.exit_code == EXIT_ENGINE_FAILED, crashed.entry.output()
    crashed.entry.assert_nothing_left()
