"""Unit tests of the exit summary: which line of a program's output names the
cause, and what the one line says."""

from __future__ import annotations

from entrypoint.exits import MAX_LINE, TAIL_LINES, tell_exit, telling_line


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
