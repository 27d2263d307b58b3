"""Unit tests of llm-entry's first signal handlers: which interpreters get
them when the package is imported, and SignalQueue taking over what they
recorded."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

import entrypoint
from entrypoint import is_llm_entry
from entrypoint.signals import SignalQueue


def test_only_llm_entrys_own_command_line_takes_signals_at_import() -> None:
    assert is_llm_entry(["/usr/local/bin/llm-entry"], ["python3", "/usr/local/bin/llm-entry", "--model", "m"])
    assert is_llm_entry(["-m"], ["python3", "-m", "entrypoint.cli", "--model", "m"])
    assert is_llm_entry(["-m"], ["python3", "-X", "dev", "-mentrypoint.cli"])
    assert not is_llm_entry(["-m"], ["python3", "-m", "entrypoint.inside.launch", "spec"])
    assert not is_llm_entry(["-m"], ["python3", "-m", "pytest"])
    assert not is_llm_entry(["-c"], ["python3", "-c", "import entrypoint"])
    assert not is_llm_entry(["engine.py"], ["python3", "engine.py", "-m", "entrypoint.cli"])


def test_importing_the_package_elsewhere_leaves_the_signal_handlers_alone() -> None:
    """As the proxy's and the engine's interpreters import it: theirs stay theirs."""
    code = ("import signal, entrypoint.inside.names; "
            "print([signal.getsignal(s) == signal.SIG_DFL for s in (signal.SIGHUP, signal.SIGTERM)])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[True, True]"


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in entrypoint.EARLY_SIGNALS}
    yield
    entrypoint.early_signals.clear()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_signal_queue_takes_over_what_came_before_it(restore_signals) -> None:
    entrypoint.early_signals.extend([signal.SIGHUP, signal.SIGTERM, signal.SIGHUP])
    signals = SignalQueue().install()
    assert entrypoint.early_signals == []
    assert signals.received == 1 and signals.pop() == signal.SIGTERM and signals.pop() is None
    assert signals.take_reload() is True and signals.take_reload() is False
