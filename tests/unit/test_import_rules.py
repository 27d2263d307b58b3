"""The import rules of entrypoint.inside (stated in its __init__): what runs
inside the engine's or the proxy's interpreter imports only what is there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from repo_paths import REPO

INSIDE = REPO / "entrypoint" / "inside"
STANDARD_LIBRARY_ONLY = ("launch", "engine_guard", "names", "client_limits", "log_lines", "weak_keys", "keys_file",
                         "quota_periods", "keys_file_changes", "key_ring", "refusals", "asgi", "engine_cli",
                         "ui_page")
# llm-entry's own modules that code inside may use: the error type alone.
SHARED_WITH_THE_OUTSIDE = {"entrypoint.errors"}


def top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", STANDARD_LIBRARY_ONLY)
def test_a_standard_library_only_module_imports_with_nothing_else_on_the_path(module):
    # -I -S: no site-packages, no user site, no PYTHONPATH; only the repository.
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import entrypoint.inside.{module}; "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] not in sys.stdlib_module_names and m != '__main__'))")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.strip()))
    allowed = {"entrypoint", "entrypoint.inside"} | {f"entrypoint.inside.{name}" for name in STANDARD_LIBRARY_ONLY}
    assert f"entrypoint.inside.{module}" in loaded
    assert loaded <= allowed, "imports beyond the standard library and the other standard-library-only modules"


@pytest.mark.parametrize("path", sorted(INSIDE.glob("*.py")), ids=lambda path: path.name)
def test_code_inside_never_imports_the_supervising_side(path):
    ours = {name for name in top_level_imports(path) if name.split(".")[0] == "entrypoint"}
    tree = ast.parse(path.read_text())
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree)), \
        "absolute imports only: these modules are loaded by other programs by name"
    strays = {name for name in ours if not name.startswith("entrypoint.inside")} - SHARED_WITH_THE_OUTSIDE
    assert not strays


@pytest.mark.parametrize("module", ["litellm_auth", "proxy_imports"])
def test_the_modules_litellm_loads_while_it_starts_import_it_only_lazily(module):
    assert not {name for name in top_level_imports(INSIDE / f"{module}.py") if name.split(".")[0] == "litellm"}


# The planning modules turn the command line, the environment and the machine
# into one frozen Config and the text of every file and command line; they
# never act, so they never import the modules that do (the module map in docs/architecture.md).
PACKAGE = REPO / "entrypoint"
PLANNING = {"config", "engine_options", "gpus", "parallel", "node_group", "workers", "ports", "keys", "limiter_store",
            "render", "shutdown_plan", "environment"}
PLANNING_MAY_USE = {"errors", "inside.names", "inside.engine_guard", "inside.client_limits",
                    "inside.weak_keys", "inside.keys_file", "inside.quota_periods", "demo.model", "demo.recipe"}


def ours_imported_by(path: Path) -> set[str]:
    """llm-entry's modules a module of the package imports at its top, as paths below entrypoint."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        if node.level == 0:
            if not (node.module or "").startswith("entrypoint."):
                continue
            base = node.module.removeprefix("entrypoint.")
        else:
            base = node.module or ""
        for alias in node.names:
            module = f"{base}.{alias.name}" if base else alias.name
            found.add(module if (PACKAGE / (module.replace(".", "/") + ".py")).exists() else base)
    return found


@pytest.mark.parametrize("module", sorted(PLANNING))
def test_a_planning_module_never_imports_one_that_acts(module):
    assert ours_imported_by(PACKAGE / f"{module}.py") <= PLANNING | PLANNING_MAY_USE
