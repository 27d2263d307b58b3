"""How many GPUs the engine may use.

The decision is a pure function of the environment and of what the node
reports; asking the node (NVML, then `nvidia-smi`) sits in one small function
that tests replace with a fake `nvidia-smi` on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeGpus:
    """What the node itself reports, before CUDA_VISIBLE_DEVICES narrows it."""

    count: int
    source: str          # "nvml", "nvidia-smi" or "none"
    warning: str = ""    # set when a tool was there but failed


def visible_gpu_count(env: Mapping[str, str], node_count: int) -> int:
    """GPUs CUDA will show the engine: the node's, narrowed like CUDA does.

    NVML and nvidia-smi ignore CUDA_VISIBLE_DEVICES, CUDA honours it; vLLM
    never reads NVIDIA_VISIBLE_DEVICES (that one picks what the container
    runtime mounts, so it is already reflected in the node count).
    """
    if node_count <= 0:
        return 0
    if "CUDA_VISIBLE_DEVICES" not in env:
        return node_count
    value = env["CUDA_VISIBLE_DEVICES"].strip()
    if value in ("", "-1"):
        return 0
    seen: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        # CUDA stops at the first entry it cannot use; so do we.
        if entry.isdigit():
            if int(entry) >= node_count:
                break
        elif not entry.startswith(("GPU-", "MIG-")):
            break
        if entry in seen:
            return 0  # CUDA shows no device at all when one is listed twice
        seen.append(entry)
    return min(len(seen), node_count)


SOURCE_NAMES = {"nvml": "NVML", "nvidia-smi": "nvidia-smi"}


def describe_gpus(node: NodeGpus, visible: int, env: Mapping[str, str]) -> str:
    """The start-up line about GPUs: how many the engine gets, and who said so."""
    if node.source not in SOURCE_NAMES:
        return "GPUs: none found (neither NVML nor nvidia-smi is available here)"
    via = SOURCE_NAMES[node.source]
    if node.count == 0:
        return f"GPUs: none on the node ({via} reports none)"
    if visible == node.count:
        return f"GPUs: {_plural_gpus(visible)} (via {via})"
    narrowed = f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')!r}"
    return f"GPUs: {visible} of the node's {node.count} visible ({narrowed}; the node's count via {via})"


def _plural_gpus(count: int) -> str:
    return f"{count} GPU" + ("" if count == 1 else "s")


def parse_nvidia_smi_list(output: str) -> int:
    """Count GPUs in `nvidia-smi -L` output ("GPU 0: NVIDIA H100 (UUID: ...)").

    MIG instances are listed indented under their GPU as "  MIG ..." lines;
    they are not separate GPUs for tensor parallelism, so they are not counted.
    """
    return sum(1 for line in output.splitlines() if line.startswith("GPU "))


def query_node_gpus(timeout: float = 10.0) -> NodeGpus:
    """Ask the node how many GPUs it has: NVML if importable, else nvidia-smi."""
    try:
        import pynvml  # provided by nvidia-ml-py, which the CUDA vLLM depends on
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                return NodeGpus(pynvml.nvmlDeviceGetCount(), "nvml")
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no driver: fall through to nvidia-smi
            pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return NodeGpus(0, "none")
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return NodeGpus(0, "nvidia-smi", f"nvidia-smi failed ({error}); assuming no GPU")
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        detail = first[0] if first else f"exit status {done.returncode}"
        return NodeGpus(0, "nvidia-smi", f"nvidia-smi failed ({detail}); assuming no GPU")
    return NodeGpus(parse_nvidia_smi_list(done.stdout), "nvidia-smi")
