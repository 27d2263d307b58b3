"""The files a container image is built from: start.sh run for real, and the
package as pip installs it into an image (no Docker daemon needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from repo_paths import REPO

START = REPO / "start.sh"
KEY = "sk-7Hq2mVx9LpR4sKd8Wn3Tz6Yb"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Only what a container gives: PATH with llm-entry on it, HOME, the key by environment."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
            "LLM_ENTRY_MASTER_KEY": KEY}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 8}))
    return folder


def start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(START), *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def engine_line(dry_run: str) -> str:
    lines = dry_run.splitlines()
    return lines[lines.index("# engine command:") + 1]


def test_start_sh_serves_output_model_when_no_model_is_given(env):
    result = start(["--dry-run"], env)
    assert result.returncode == 2
    assert result.stderr.startswith("llm-entry: model directory /output/model does not exist: mount the model there")


@pytest.mark.parametrize("spelling", [["--model", "{m}"], ["--model={m}"]])
def test_start_sh_passes_a_given_model_through(env, model, spelling):
    result = start([part.format(m=model) for part in spelling] + ["--dry-run"], env)
    assert result.returncode == 0, result.stderr
    assert f"--model {model} --served-model-name served " in engine_line(result.stdout)


def test_start_sh_keeps_a_model_from_its_variable(env, model):
    result = start(["--dry-run"], {**env, "LLM_ENTRY_MODEL": str(model)})
    assert result.returncode == 0, result.stderr
    assert f"--model {model} " in engine_line(result.stdout)


def proxy_line(dry_run: str) -> str:
    return next(line for line in dry_run.splitlines() if "-m entrypoint.inside.proxy_server" in line)


def test_start_sh_follows_the_production_port_rule(env, model):
    production = start(["--model", str(model), "--dry-run"], {**env, "OPENBAYES_SERVING_PRODUCTION": "1"})
    workspace = start(["--model", str(model), "--dry-run"], env)
    assert " --host 0.0.0.0 --port 80 " in proxy_line(production.stdout)
    assert " --host 0.0.0.0 --port 8080 " in proxy_line(workspace.stdout)


def test_the_installed_package_holds_every_module_and_template(tmp_path):
    """What `pip install .` puts in the image: a module or template left out of
    the wheel works in a checkout and fails only in the container."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("llm_entry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"entrypoint/{p.name}" for p in (REPO / "entrypoint").glob("*.py")}
    expected |= {f"entrypoint/templates/{p.name}" for p in (REPO / "templates").iterdir() if p.is_file()}
    assert expected - names == set()
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "llm-entry = entrypoint.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
