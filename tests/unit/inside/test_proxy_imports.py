"""Optional imports LiteLLM retries per request are settled once, with the real import system."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from entrypoint.inside.proxy_imports import RETRIED_PER_REQUEST, settle_optional_imports


@pytest.fixture
def package_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("llm_entry_probe_")]:
        del sys.modules[name]


def test_a_module_that_fails_to_import_fails_at_once_afterwards_with_an_import_error(package_dir):
    runs = package_dir / "runs.txt"
    (package_dir / "llm_entry_probe_broken.py").write_text(
        f"open({str(runs)!r}, 'a').write('x')\nfrom llm_entry_probe_gone import Event\n")
    assert settle_optional_imports(["llm_entry_probe_broken"]) == ["llm_entry_probe_broken"]
    for _ in range(3):
        with pytest.raises(ImportError):
            from llm_entry_probe_broken import Event  # noqa: F401
    assert runs.read_text() == "x", "the module's code ran again after it was settled"


def test_a_module_that_imports_is_left_alone(package_dir):
    (package_dir / "llm_entry_probe_fine.py").write_text("VALUE = 1\n")
    assert settle_optional_imports(["llm_entry_probe_fine"]) == []
    from llm_entry_probe_fine import VALUE
    assert VALUE == 1


def test_a_module_that_raises_something_else_does_not_stop_the_proxy(package_dir):
    (package_dir / "llm_entry_probe_raises.py").write_text("raise RuntimeError('exporter misconfigured')\n")
    assert settle_optional_imports(["llm_entry_probe_raises"]) == ["llm_entry_probe_raises"]
    with pytest.raises(ImportError):
        import llm_entry_probe_raises  # noqa: F401


def test_each_name_is_settled_on_its_own():
    modules: dict = {}
    tried = []

    def import_module(name):
        tried.append(name)
        if name == "b":
            raise ModuleNotFoundError("No module named 'opentelemetry._events'")

    assert settle_optional_imports(["a", "b", "c"], modules, import_module) == ["b"]
    assert tried == ["a", "b", "c"] and modules == {"b": None}


def test_the_litellm_modules_it_settles_still_exist():
    """A rename upstream would make the settling silently useless."""
    litellm_dir = Path(importlib.util.find_spec("litellm").origin).parent
    for name in RETRIED_PER_REQUEST:
        assert (litellm_dir.parent / (name.replace(".", "/") + ".py")).is_file(), name
