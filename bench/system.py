"""The machine and the versions a benchmark ran on, for the report's header."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import profile, runner


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=runner.REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=runner.REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _py_spy() -> str:
    binary = profile.py_spy()
    if binary is None:
        return "not installed"
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine() -> dict[str, str]:
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB",
        "kernel": platform.release(),
        "load average at start (1/5/15 min)": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def versions() -> dict[str, str]:
    import entrypoint
    return {
        "python": platform.python_version(),
        "llm-entry": f"{entrypoint.__version__} (git {_git()})",
        "litellm": _version("litellm"),
        "supervisor": _version("supervisor"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "py-spy": _py_spy(),
    }
