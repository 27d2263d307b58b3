"""The GPU image's install step (on vllm/vllm-openai:v0.32.0) must leave every
package vLLM brings as it is: torch, transformers and the rest of vLLM's
closure. The CUDA image cannot be pulled or run here, so pip's resolver
answers for the image's Python (3.12, manylinux x86_64):

1. vLLM's closure: `pip install --dry-run --report` of vllm==0.32.0 alone, kept
   in the build cache (it stands for what the image froze: PyPI's later
   releases of vLLM's unpinned dependencies must not move it);
2. llm-entry's dependencies resolved with every package of that closure
   pinned as a constraint. pip in the image keeps an installed package that
   satisfies a requirement and replaces one that does not, so this resolves
   exactly when installing llm-entry into vLLM's Python changes nothing of
   vLLM's. It does not (LiteLLM 1.103 needs openai<3; vLLM's closure has
   openai 3), which is why the image gives the proxy side a virtualenv of its
   own and installs llm-entry alone (--no-deps) into vLLM's Python: the test
   says so when that stops being true;
3. that virtualenv resolves on the image's Python.

Only metadata is fetched where the index serves it (PEP 658), into pip's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from repo_paths import REPO

VLLM = "vllm==0.32.0"
PYTHON_VERSION = "3.12"    # the vLLM image's Python
# Every manylinux tag an x86_64 glibc machine accepts (pip does not widen
# --platform on its own); pure-Python wheels always match.
PLATFORMS = ([f"manylinux_2_{minor}_x86_64" for minor in range(40, 4, -1)]
             + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"])
RESOLVE_DEADLINE = 900.0


def cache_folder() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-entry-build"
    return Path(os.environ.get("LLM_ENTRY_BUILD_CACHE") or default) / "gpu-resolve"


def dry_run(requirements: list[str], report: Path, constraints: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--report", str(report), "--python-version", PYTHON_VERSION, "--implementation", "cp",
               "--only-binary=:all:", *(arg for tag in PLATFORMS for arg in ("--platform", tag))]
    if constraints is not None:
        command += ["--constraint", str(constraints)]
    # The index as users have it: a machine's own pip settings (extra wheel
    # folders, local constraints) would answer for another machine.
    env = {name: value for name, value in os.environ.items()
           if name not in ("PIP_CONSTRAINT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(command + requirements, capture_output=True, text=True, timeout=RESOLVE_DEADLINE, env=env)


def versions(report: Path) -> dict[str, str]:
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installs}


def llm_entry_requirements() -> list[str]:
    """What `pip install .` (core, no extra) asks for: the GPU image's step."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.fixture(scope="module")
def vllm_closure() -> dict[str, str]:
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"{VLLM.replace('==', '-')}-py{PYTHON_VERSION}.json"
    if not report.is_file():
        partial = report.with_suffix(".part")
        done = dry_run([VLLM], partial)
        assert done.returncode == 0, f"pip cannot resolve {VLLM} alone:\n{done.stderr[-3000:]}"
        partial.replace(report)
    closure = versions(report)
    assert {"vllm", "torch", "transformers"} <= closure.keys()
    return closure


def moved_by_llm_entry(vllm_closure: dict[str, str], tmp_path: Path) -> dict[str, tuple[str, str]]:
    """vLLM's version -> the one llm-entry's dependencies resolve to alone."""
    done = dry_run(llm_entry_requirements(), tmp_path / "alone.json")
    assert done.returncode == 0, f"llm-entry's dependencies do not resolve on Python {PYTHON_VERSION}:\n{done.stderr}"
    return {name: (vllm_closure[name], version) for name, version in versions(tmp_path / "alone.json").items()
            if name in vllm_closure and vllm_closure[name] != version}


def test_the_proxy_virtualenv_resolves_on_the_images_python(vllm_closure, tmp_path):
    moved = moved_by_llm_entry(vllm_closure, tmp_path)
    print(f"\nllm-entry alone differs from {VLLM}'s closure in: {moved}")


def test_sharing_vllms_python_would_change_its_packages(vllm_closure, tmp_path):
    constraints = tmp_path / "vllm-closure.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(vllm_closure.items())))
    done = dry_run(llm_entry_requirements(), tmp_path / "co-install.json", constraints)
    assert done.returncode != 0, (
        f"llm-entry's dependencies now install beside {VLLM} without changing any of its packages: the GPU "
        "image's separate virtualenv for the proxy side is no longer needed (Dockerfile, target gpu)")
    assert "ResolutionImpossible" in done.stderr or "conflict" in done.stderr, done.stderr[-3000:]

