"""Every default is Options' (entrypoint.config): the command line, given no
flags, parses to exactly those defaults."""

from __future__ import annotations

import dataclasses
import os

import click
import pytest

from entrypoint.cli import command
from entrypoint.config import Options

FIELDS = {field.name: field for field in dataclasses.fields(Options)}
GIVEN = {"model": "m"}    # the one option without a default


def exposed_parameters() -> list[click.Parameter]:
    """The parameters that reach Options (not --help, not --version)."""
    return [param for param in command.params if param.expose_value]


@pytest.fixture
def parsed(monkeypatch) -> dict:
    # Variables would stand in for flags (LLM_ENTRY_*, LITELLM_MASTER_KEY).
    for name in list(os.environ):
        if name.startswith("LLM_ENTRY_") or name == "LITELLM_MASTER_KEY":
            monkeypatch.delenv(name)
    with command.make_context("llm-entry", ["--model", GIVEN["model"]], resilient_parsing=False) as ctx:
        return dict(ctx.params)


def test_every_parameter_of_the_command_line_is_a_field_of_options() -> None:
    assert [param.name for param in exposed_parameters() if param.name not in FIELDS] == []


@pytest.mark.parametrize("name", [param.name for param in exposed_parameters() if param.name not in GIVEN])
def test_no_flag_parses_to_the_default_options_has(parsed: dict, name: str) -> None:
    assert FIELDS[name].default is not dataclasses.MISSING, f"Options.{name} has no default"
    assert parsed[name] == FIELDS[name].default
    assert type(parsed[name]) is type(FIELDS[name].default)


def test_options_built_from_no_flags_are_the_default_options(parsed: dict) -> None:
    assert Options(**parsed) == Options(**GIVEN)
