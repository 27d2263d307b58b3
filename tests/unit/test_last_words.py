"""Unit tests of the exit summary: which line of a program's output names the
cause, and what the one line says."""

from __future__ import annotations

import pytest

from entrypoint.last_words import HISTORY_LINES, MAX_LINE, TAIL_LINES, tell_exit, telling

from repo_paths import DATA

RECORDED = DATA / "exits"


def telling_line(lines: list[str]) -> str:
    """The line an exit's summary quotes, without its rank."""
    return telling(lines)[1]


def test_the_last_exception_line_is_the_telling_one() -> None:
    lines = ["INFO starting", "Traceback (most recent call last):", '  File "a.py", line 1, in <module>',
             "ValueError: Total number of attention heads (7) must be divisible by tensor parallel size (2).",
             "INFO cleaning up"]
    assert telling_line(lines) == lines[3]


def test_a_wrapper_that_points_above_loses_to_the_root_cause_above_it() -> None:
    lines = ["(EngineCore_DP0 pid=9) ERROR 05-02 10:00:01 [core.py:708] ValueError: head size 16 is not supported",
             "(APIServer pid=1) Traceback (most recent call last):",
             "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
             "Failed core proc(s): {}"]
    assert telling_line(lines) == "ValueError: head size 16 is not supported"


def test_an_exception_wins_over_a_later_log_line_at_error_level() -> None:
    lines = ["AssertionError", "ERROR 05-02 10:00:02 [launcher.py:1] shutting down"]
    assert telling_line(lines) == "AssertionError"


def test_an_error_level_line_is_telling_when_there_is_no_exception() -> None:
    lines = ["INFO ok", "ERROR engine-double: engine core died (ENGINE_DOUBLE_EXIT_FILE=x)", "INFO bye"]
    assert telling_line(lines) == lines[1]


def test_a_wrapper_alone_is_still_better_than_an_ordinary_line() -> None:
    lines = ["RuntimeError: Engine core initialization failed. See root cause above.", "INFO bye"]
    assert telling_line(lines) == lines[0]


def test_without_any_error_the_last_line_is_named() -> None:
    assert telling_line(["INFO a", "INFO b"]) == "INFO b"
    assert telling_line([]) == ""


def test_a_very_long_line_is_cut() -> None:
    line = telling_line(["ValueError: " + "x" * 1000])
    assert len(line) == MAX_LINE and line.endswith("...")


def test_the_summary_is_one_line_with_the_error_and_the_last_lines_come_separately() -> None:
    tail = [f"INFO line {n}" for n in range(30)] + ["KeyError: 'model_type'"]
    story = tell_exit("engine", "exit status 1", 12.4, False, tail)
    assert story.summary == ("engine exited (exit status 1) 12 s after start, while starting; vLLM exits even with "
                             "status 0 when its engine core dies; its error: KeyError: 'model_type'")
    assert story.last_lines == tuple(tail[-TAIL_LINES:])


def test_output_without_errors_is_named_as_last_output() -> None:
    story = tell_exit("proxy", "terminated by SIGKILL", 70, True, ["INFO: Uvicorn running"])
    assert story.summary == ("proxy exited (terminated by SIGKILL) 70 s after start, after it was ready; "
                             "last output: INFO: Uvicorn running")


# --- chosen by what a line says, not by a word in it ---------------------------------

def test_an_info_line_from_a_logger_named_error_is_not_an_error() -> None:
    lines = ["INFO uvicorn.error: Started server process [4907]",
             "INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)"]
    story = tell_exit("proxy", "terminated by SIGKILL", 70, True, lines)
    assert story.summary == ("proxy exited (terminated by SIGKILL) 70 s after start, after it was ready; "
                             "last output: INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 "
                             "(Press CTRL+C to quit)")


def test_exceptions_named_in_info_and_warning_lines_do_not_count() -> None:
    lines = ["ERROR:    Application startup failed. Exiting.",
             "(APIServer pid=1) WARNING 12-01 22:15:30 [system_utils.py:255] fd limit errors like "
             "`OSError: [Errno 24] Too many open files` may follow",
             "INFO 12-01 22:15:31 [utils.py:1] falling back (ImportError: no module named x)"]
    assert telling_line(lines) == "ERROR:    Application startup failed. Exiting."


def test_the_first_exception_of_a_chain_is_the_cause() -> None:
    lines = ["Traceback (most recent call last):", '  File "server.py", line 182, in startup',
             "OSError: [Errno 98] address already in use", "",
             "During handling of the above exception, another exception occurred:", "",
             "Traceback (most recent call last):", '  File "server.py", line 192, in startup',
             "SystemExit: 3"]
    assert telling_line(lines) == "OSError: [Errno 98] address already in use"


def test_a_traceback_ends_with_its_exception_whatever_its_name() -> None:
    lines = ["Traceback (most recent call last):", '  File "a.py", line 1, in <module>', "KeyboardInterrupt",
             "INFO bye"]
    assert telling_line(lines) == "KeyboardInterrupt"


def test_each_process_has_its_own_traceback_when_vllm_interleaves_them() -> None:
    prefix = "(VllmWorker rank=0 pid=5) ERROR 12-01 22:15:49 [multiproc_executor.py:953]"
    lines = [f"{prefix} Traceback (most recent call last):",
             f'{prefix}   File "worker.py", line 9, in main',
             "(APIServer pid=1) INFO 12-01 22:15:49 [api_server.py:1] waiting for the engine",
             f"{prefix} torch.cuda.OutOfMemory: tried to allocate 2.00 GiB",
             "(APIServer pid=1) INFO 12-01 22:15:50 [api_server.py:1] shutting down"]
    assert telling_line(lines) == "torch.cuda.OutOfMemory: tried to allocate 2.00 GiB"


def test_colour_codes_do_not_hide_a_level() -> None:
    assert telling_line(["\x1b[31mERROR\x1b[0m: worker died", "\x1b[32mINFO\x1b[0m: done"]) == "ERROR: worker died"


def test_the_choice_reads_further_back_than_the_lines_printed() -> None:
    history = ["ValueError: bad weights"] + [f"nanobind: leaked function {n}" for n in range(60)]
    story = tell_exit("engine", "exit status 1", 3, False, history)
    assert story.summary.endswith("; its error: ValueError: bad weights")
    assert story.last_lines == tuple(history[-TAIL_LINES:])


# --- recorded output of the real programs (tests/data/exits/README.md) ---------------

def recorded(name: str) -> list[str]:
    """The lines as llm-entry keeps them: blank lines dropped, the last HISTORY_LINES."""
    text = (RECORDED / name).read_text()
    return [line for line in text.splitlines() if line.strip()][-HISTORY_LINES:]


@pytest.mark.parametrize("log,program,reason,seconds,ready,summary", [
    pytest.param(
        "vllm-weights-truncated.log", "engine", "exit status 1", 43, False,
        "engine exited (exit status 1) 43 s after start, while starting; vLLM exits even with status 0 when its "
        "engine core dies; its error: safetensors._safetensors_rust.SafetensorError: Error while deserializing "
        "header: incomplete metadata, file not fully covered",
        id="vllm with truncated weights: the workers' error, not the wrapper"),
    pytest.param(
        "vllm-engine-core-killed.log", "engine", "exit status 0", 51, True,
        "engine exited (exit status 0) 51 s after start, after it was ready; vLLM exits even with status 0 when "
        "its engine core dies; its error: vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an "
        "issue. See stack trace (above) for the root cause.",
        id="vllm whose engine core was killed: its engine-dead error, not the leak report"),
    pytest.param(
        "litellm-port-taken.log", "proxy", "exit status 3", 13, False,
        "proxy exited (exit status 3) 13 s after start, while starting; its error: OSError: [Errno 98] error while "
        "attempting to bind on address ('127.0.0.1', 23440): address already in use",
        id="litellm that cannot bind its port: the bind error, not the cancelled job"),
    pytest.param(
        "litellm-started.log", "proxy", "terminated by SIGKILL", 70, True,
        "proxy exited (terminated by SIGKILL) 70 s after start, after it was ready; last output: "
        "INFO uvicorn.error: Uvicorn running on http://127.0.0.1:24543 (Press CTRL+C to quit)",
        id="litellm killed after its start: its last line, not as an error"),
])
def test_a_real_programs_recorded_exit_is_told_by_its_cause(log: str, program: str, reason: str, seconds: int,
                                                            ready: bool, summary: str) -> None:
    assert tell_exit(program, reason, seconds, ready, recorded(log)).summary == summary
