"""The log forwarder prints every line a program writes, once, in order,
across supervisord's rotation (rename, then a new file) and in-place truncation."""

import io
import os
from pathlib import Path

from entrypoint.logs import LogForwarder, LogTail

from fakes import quiet_console


def forwarder_for(path: Path) -> tuple[LogForwarder, io.StringIO]:
    console, out, _ = quiet_console()
    return LogForwarder([LogTail("engine", path, console)]), out


def printed(out: io.StringIO) -> list[str]:
    return [line.split("| ", 1)[1] for line in out.getvalue().splitlines()]


def test_lines_written_just_before_a_rotation_are_not_lost(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    writer = log.open("w")
    writer.write("one\n")
    writer.flush()
    forwarder, out = forwarder_for(log)
    forwarder.pump()
    writer.write("two\n")                         # written, not yet read...
    writer.flush()
    os.rename(log, tmp_path / "engine.log.1")      # ...when supervisord rotates
    writer.write("three\n")                       # its last write to the old file
    writer.close()
    log.write_text("four\n")
    forwarder.pump()
    assert printed(out) == ["one", "two", "three", "four"]


def test_a_file_truncated_in_place_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("a long first line\n")
    forwarder, out = forwarder_for(log)
    forwarder.pump()
    with log.open("r+") as file:
        file.truncate(0)
        file.write("b\n")
    forwarder.pump()
    assert printed(out) == ["a long first line", "b"]


def test_stopping_twice_prints_nothing_twice_and_a_last_partial_line_once(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("done\nno newline at the end")
    forwarder, out = forwarder_for(log)
    forwarder.stop()
    forwarder.stop()
    assert printed(out) == ["done", "no newline at the end"]


def test_a_file_that_appears_later_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    forwarder, out = forwarder_for(log)
    forwarder.pump()
    log.write_text("late\n")
    forwarder.pump()
    assert printed(out) == ["late"]


def test_a_finished_programs_last_line_without_a_newline_is_printed_and_no_other_programs(tmp_path: Path) -> None:
    console, out, _ = quiet_console()
    (tmp_path / "engine.log").write_text("nanobind: leaked 4 instances!\nSee https://nanobind.readthedocs.io/")
    (tmp_path / "proxy.log").write_text("INFO uvicorn.error: Shutting down\nhalf a li")
    forwarder = LogForwarder([LogTail(name, tmp_path / f"{name}.log", console) for name in ("engine", "proxy")])
    forwarder.finish("engine")
    assert out.getvalue().splitlines() == ["engine    | nanobind: leaked 4 instances!",
                                           "engine    | See https://nanobind.readthedocs.io/",
                                           "proxy     | INFO uvicorn.error: Shutting down"]
    forwarder.stop()
    assert out.getvalue().splitlines()[-1] == "proxy     | half a li"


def test_after_a_restart_the_last_lines_are_the_new_runs_only(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("OSError: [Errno 98] address already in use\n")
    tail = LogTail("engine", log, quiet_console().console)
    tail.pump()
    tail.begin_run()
    assert tail.last_lines(20) == []
    with log.open("a") as file:
        file.write("INFO uvicorn.error: Started server process [2]\n\n")
    tail.pump()
    assert tail.last_lines(20) == ["INFO uvicorn.error: Started server process [2]"]


def test_colour_codes_and_empty_lines_do_not_reach_the_container_log(tmp_path: Path) -> None:
    # What LiteLLM 1.103 prints at start (recorded), framed in empty lines.
    log = tmp_path / "engine.log"
    log.write_text("\n   ██╗     ██╗\n\n\x1b[32mLiteLLM: Proxy initialized with Config, Set models:\x1b[0m\n"
                   "\x1b[32m    model\x1b[0m\n  \n\x1b[1;37m#---#\x1b[0m\nINFO uvicorn.error: Started\n")
    forwarder, out = forwarder_for(log)
    forwarder.pump()
    assert printed(out) == ["   ██╗     ██╗", "LiteLLM: Proxy initialized with Config, Set models:", "    model",
                            "#---#", "INFO uvicorn.error: Started"]
    assert "\n\n" not in out.getvalue() and "\x1b" not in out.getvalue()
