"""The real engine through the proxy and direct, measured by vLLM's own
benchmark client (`vllm.benchmarks.serve`), a client nobody here wrote.

One llm-entry serves the demo model on vLLM's CPU build. Each round runs the
client once against the public port (the master key) and once against the
engine's port (the internal key, read from /proc), in alternating order, with
the same random prompts. Full runs only, and only where vLLM is installed.

The engine's compute threads are bound to the first core
(VLLM_CPU_OMP_THREADS_BIND=0), leaving the other to the client and the
proxy. On a GPU node the engine computes on the GPU and the cores are
free; on 2 cores an unbound CPU engine spins its OpenMP threads on both, and
the proxy's every wake-up for a chunk then waits for a time slice: a
scheduling cost of this machine, not a CPU cost of the proxy (which is
measured per round beside the figures).

`python -m bench.vllm_client RESULT.json ARGS...` runs the client once in a
process of its own (vLLM's import is heavy and its event loop is its own) and
writes what `serve.main` returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from entrypoint.demo import model as demo_model

from . import footprint, procs, runner
from .startup_real import REAL_ENGINE

SIDES = ("proxy", "direct")
CLIENT_DEADLINE = 600.0
ENGINE_CORES = "0"    # VLLM_CPU_OMP_THREADS_BIND: the engine computes on the first core only


@dataclass(frozen=True)
class Load:
    concurrency: int = 8
    prompts: int = 128
    input_len: int = 32
    output_len: int = 32


@dataclass
class ClientResults:
    load: Load
    rounds: int
    throughput: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})  # req/s
    ttft_median_ms: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    tpot_median_ms: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    failed: dict[str, list[int]] = field(default_factory=lambda: {side: [] for side in SIDES})
    proxy_cpu_ms_per_request: list[float] = field(default_factory=list)   # the proxy side's rounds
    engine_cores: str = ENGINE_CORES
    failures: list[str] = field(default_factory=list)


def client_args(base_url: str, model_dir: Path, load: Load, seed: int, result: Path) -> list[str]:
    return [str(result), "--backend", "openai-chat", "--base-url", base_url, "--endpoint", "/v1/chat/completions",
            "--model", runner.MODEL_NAME, "--tokenizer", str(model_dir), "--dataset-name", "random",
            "--random-input-len", str(load.input_len), "--random-output-len", str(load.output_len),
            "--ignore-eos", "--num-prompts", str(load.prompts), "--max-concurrency", str(load.concurrency),
            "--seed", str(seed), "--disable-tqdm"]


def run_client(base_url: str, key: str, model_dir: Path, load: Load, seed: int, work: Path) -> dict:
    result = work / f"vllm-client-{seed}-{base_url.rsplit(':', 1)[-1]}.json"
    env = {**runner.base_env(), "OPENAI_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([runner.PYTHON, "-m", "bench.vllm_client",
                           *client_args(base_url, model_dir, load, seed, result)],
                          env=env, cwd=runner.REPO, capture_output=True, text=True, timeout=CLIENT_DEADLINE)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"vLLM's benchmark client failed ({done.returncode}): {done.stderr[-800:]}")
    return json.loads(result.read_text())


def measure(runs: runner.Runs, rounds: int, say, load: Load = Load()) -> ClientResults:
    model = demo_model.ensure_demo_model(runs.work / "demo-cache")
    results = ClientResults(load=load, rounds=rounds)
    entry = runner.Entry(runs, args=["--served-model-name", runner.MODEL_NAME, "--", *demo_model.DEMO_ENGINE_ARGS],
                         engine_env={"LLM_ENTRY_ENGINE_CMD": " ".join(REAL_ENGINE), **demo_model.DEMO_ENGINE_ENV,
                                     "VLLM_CPU_OMP_THREADS_BIND": ENGINE_CORES},
                         model=model)
    try:
        entry.start()
        say(f"  vLLM client: llm-entry with the real engine ready in {entry.wait_ready(600):.0f} s")
        proxy_group = {"proxy": lambda: procs.group_members(entry.pgid("proxy"))}
        engine_key = entry.engine_key()
        targets = {"proxy": (f"http://127.0.0.1:{entry.port}", entry.master_key),
                   "direct": (f"http://127.0.0.1:{entry.engine_port}", engine_key)}
        # Two unmeasured runs each: the engine's first requests compile and warm caches.
        warm_up = Load(load.concurrency, 32, load.input_len, load.output_len)
        for side in (*SIDES, *SIDES):
            run_client(*targets[side], model, warm_up, 0, runs.work)
        for round_number in range(rounds):
            order = SIDES if round_number % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                meter = footprint.Meter(proxy_group).start()
                got = run_client(*targets[side], model, load, round_number + 1, runs.work)
                if side == "proxy":
                    used = meter.stop()["proxy"].cpu_s
                    results.proxy_cpu_ms_per_request.append(1000 * used / max(got.get("completed", 0), 1))
                results.throughput[side].append(got["request_throughput"])
                results.ttft_median_ms[side].append(got["median_ttft_ms"])
                results.tpot_median_ms[side].append(got["median_tpot_ms"])
                results.failed[side].append(got.get("failed", 0) or 0)
                say(f"  vLLM client round {round_number + 1}/{rounds} {side}: "
                    f"{got['request_throughput']:.2f} req/s, TTFT p50 {got['median_ttft_ms']:.0f} ms, "
                    f"TPOT p50 {got['median_tpot_ms']:.1f} ms, {got.get('failed', 0)} failed")
    finally:
        entry.stop()
    return results


def _main(argv: list[str]) -> int:
    import argparse

    from vllm.benchmarks import serve

    result, args = Path(argv[0]), argv[1:]
    parser = argparse.ArgumentParser()
    serve.add_cli_args(parser)
    summary = serve.main(parser.parse_args(args))
    result.write_text(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
