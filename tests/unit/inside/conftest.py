"""Fixtures of the proxy's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import start_redis, stop_redis


@pytest.fixture
def redis_socket(tmp_path: Path):
    """A real redis-server on a unix socket in the test's folder, stopped after the test."""
    server = start_redis(tmp_path, unix_socket=tmp_path / "redis.sock")
    try:
        yield tmp_path / "redis.sock"
    finally:
        stop_redis(server)
