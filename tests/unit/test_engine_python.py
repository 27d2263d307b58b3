"""--engine-python: the GPU image runs vLLM with the image's own Python and
llm-entry with the proxy's virtualenv (see the Dockerfile); the engine keeps
its guard, and an explicit --engine-cmd still names its own Python."""

from __future__ import annotations

import sys
from pathlib import Path

from entrypoint.engine_options import ENGINE_CLI_MODULE
from entrypoint.render import engine_command

from fakes import make_config, model_folder

ENGINE_PYTHON = "/usr/bin/python3"


def test_the_default_engine_runs_in_the_engine_python_and_keeps_its_guard(tmp_path: Path) -> None:
    config = make_config(model_folder(tmp_path), engine_python=ENGINE_PYTHON)
    assert config.engine_cmd == (ENGINE_PYTHON, "-m", ENGINE_CLI_MODULE, "serve")
    assert config.engine_guarded
    command = engine_command(config)
    assert command[command.index("--middleware") + 1] == "entrypoint.inside.engine_guard.RequireInternalKey"


def test_without_it_the_engine_runs_in_this_python(tmp_path: Path) -> None:
    config = make_config(model_folder(tmp_path))
    assert config.engine_cmd[0] == sys.executable and config.engine_guarded


def test_an_engine_command_wins_over_the_engine_python(tmp_path: Path) -> None:
    config = make_config(model_folder(tmp_path), engine_python=ENGINE_PYTHON, engine_cmd="my-engine --flag")
    assert config.engine_cmd == ("my-engine", "--flag") and not config.engine_guarded
