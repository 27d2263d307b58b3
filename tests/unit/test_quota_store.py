"""Unit tests of where quota counts live: a quota needs --state-dir or
--redis-url (exit 2 and one sentence otherwise), --state-dir makes the
private redis-server run with its append-only file there (also with one
proxy worker), the proxy learns that its store is durable, and a reload
that brings a quota to a container without one sets that line aside."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from entrypoint import render
from entrypoint.errors import EXIT_BAD_CONFIG, EntryError
from entrypoint.inside import names
from entrypoint.inside.key_ring import KeyRing

from fakes import MASTER_KEY, make_config, model_folder

KEY = "sk-" + "5d1c9e7b3a8f2c6e4b0d5d1c9e7b3a8f"
RUN_DIR = Path("/run/llm-entry-abc")


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# teams\n{KEY} name=team-a quota=2000000/month\n")
    return path


def refused(tmp_path: Path, **options) -> str:
    with pytest.raises(EntryError) as raised:
        make_config(model_folder(tmp_path), **options)
    assert raised.value.exit_code == EXIT_BAD_CONFIG
    assert "\n" not in raised.value.message
    return raised.value.message


def test_a_quota_without_state_dir_or_redis_url_is_refused_in_one_sentence(tmp_path: Path, keys_file: Path) -> None:
    message = refused(tmp_path, api_keys_file=keys_file)
    assert message == (f"the key on line 2 of --api-keys-file {keys_file} has a quota, whose count must survive a "
                       "restart: add --state-dir DIR (a volume for the private redis-server's files) or --redis-url "
                       "(a Redis shared by the replicas).")
    assert refused(tmp_path, api_keys_file=keys_file, dry_run=True) == message
    assert refused(tmp_path, api_keys_file=keys_file, proxy_workers=2) == message   # a private Redis forgets


def test_state_dir_and_redis_url_together_are_refused(tmp_path: Path, keys_file: Path) -> None:
    assert "leave --state-dir out" in refused(tmp_path, api_keys_file=keys_file, state_dir=tmp_path / "state",
                                              redis_url="redis://127.0.0.1:6379/0")


def test_with_state_dir_the_private_redis_server_runs_even_with_one_worker_and_keeps_its_file_there(
        tmp_path: Path, keys_file: Path) -> None:
    state = tmp_path / "state"
    config = make_config(model_folder(tmp_path), api_keys_file=keys_file, state_dir=state, proxy_workers=1)
    assert config.limits.private and config.limits.durable
    assert "--state-dir" in config.limits.reason and "survive a restart" in config.limits.reason
    assert render.supervised_programs(config) == ("engine", "proxy", "limiter")
    conf = {file.name: file.content for file in render.render_run_files(config, "python", RUN_DIR)}["redis.conf"]
    assert f'dir "{state}"\n' in conf
    assert "appendonly yes\nappendfsync everysec\nappendfilename \"llm-entry.aof\"\n" in conf
    assert f'unixsocket "{RUN_DIR}/redis.sock"' in conf
    launch = json.loads(render.proxy_launch(config, "python", RUN_DIR).to_json())
    assert launch["set"][names.QUOTAS_DURABLE_VARIABLE] == "1"


def test_a_redis_url_is_durable_and_a_private_redis_without_state_dir_is_not(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text(f"{KEY} name=team-a rpm=5\n")
    two_workers = make_config(model_folder(tmp_path), api_keys_file=plain, proxy_workers=2)
    assert two_workers.limits.private and not two_workers.limits.durable
    assert "appendonly no\n" in render.render_redis_config(RUN_DIR)
    launch = json.loads(render.proxy_launch(two_workers, "python", RUN_DIR).to_json())
    assert names.QUOTAS_DURABLE_VARIABLE not in launch["set"]
    shared = make_config(model_folder(tmp_path), api_keys_file=plain, redis_url="redis://127.0.0.1:6379/0")
    assert shared.limits.durable and not shared.limits.private


def test_state_dir_without_a_keys_file_is_said_to_be_unused(tmp_path: Path) -> None:
    config = make_config(model_folder(tmp_path), state_dir=tmp_path / "state")
    assert any("--state-dir" in warning and "not used" in warning for warning in config.warnings)


def test_a_reload_that_brings_a_quota_without_a_durable_store_sets_that_line_aside(tmp_path: Path, caplog) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{KEY} name=team-a rpm=5\n")
    caplog.set_level(logging.WARNING, logger="entrypoint.inside.key_ring")
    ring = KeyRing.from_environment({names.MASTER_KEY_VARIABLE: MASTER_KEY,
                                     names.API_KEYS_FILE_VARIABLE: str(keys_file)})
    assert ring.holder_of(KEY) is not None
    keys_file.write_text(f"{KEY} name=team-a rpm=5 quota=100/day\n# changed\n")
    ring.refuse_quotas()      # forces a read, as a reload does
    assert ring.holder_of(KEY) is None
    warning = caplog.records[-1].getMessage()
    assert "line 1" in warning and "has a quota" in warning and "--state-dir or --redis-url" in warning
    assert KEY not in warning
    durable = KeyRing.from_environment({names.MASTER_KEY_VARIABLE: MASTER_KEY,
                                        names.API_KEYS_FILE_VARIABLE: str(keys_file),
                                        names.QUOTAS_DURABLE_VARIABLE: "1"})
    holder = durable.holder_of(KEY)
    assert holder is not None and str(holder.limits.quotas[0]) == "100/day"
    assert durable.limited_names() == [("team-a", holder.limits)]


def test_a_relative_state_dir_is_taken_from_where_llm_entry_starts(tmp_path: Path, keys_file: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = make_config(model_folder(tmp_path), api_keys_file=keys_file, state_dir=Path(".llm-entry-state"))
    assert config.limits.state_dir == tmp_path / ".llm-entry-state"
    assert f'dir "{tmp_path}/.llm-entry-state"' in render.render_redis_config(RUN_DIR, config.limits.state_dir)
