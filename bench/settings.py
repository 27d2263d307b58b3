"""How long and how often each benchmark runs: the full run and `--quick`."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    quick: bool
    # 1. time to ready
    engine_delay: float           # ENGINE_DOUBLE_STARTUP_DELAY, seconds
    startup_rounds: int
    real_engine_rounds: int       # the real vLLM CPU engine: a minute per start, full runs only
    vllm_client_rounds: int       # vLLM's benchmark client, proxy and direct (full runs only)
    # 2. request overhead
    load_duration: float          # measured seconds per cell (after a warm-up)
    load_warmup: float
    load_rounds: int              # each side runs this often per cell, alternating
    concurrencies: tuple[int, ...]
    stream_concurrencies: tuple[int, ...]
    worker_concurrencies: tuple[int, ...]
    profile_duration: float
    # 2. cost against the number of keys in --api-keys-file (bench/keys.py)
    key_counts: tuple[int, ...]
    key_rounds: int
    key_requests: int             # at most, per round and key count, for the proxy's CPU per request
    key_lines: int                # at most, per round and key count, for llm-entry's CPU per log line
    key_window: float             # seconds: each of the two stops sending after it, even short of its most
    key_idle_window: float        # llm-entry left idle, for its rate to take off
    # 3. reaction times
    reaction_repeats: int
    default_hang: bool            # the hang with default timings takes a minute
    # 4. footprint
    idle_window: float
    probe_runs: int
    python_runs: int

    @classmethod
    def full(cls) -> Settings:
        return cls(quick=False, engine_delay=5.0, startup_rounds=5, real_engine_rounds=2, vllm_client_rounds=4,
                   load_duration=5.0, load_warmup=0.75, load_rounds=4,
                   concurrencies=(1, 8, 32), stream_concurrencies=(1, 8), worker_concurrencies=(1, 32),
                   profile_duration=8.0, key_counts=(10, 10_000, 100_000), key_rounds=3, key_requests=400,
                   key_lines=3000, key_window=8.0, key_idle_window=3.0, reaction_repeats=3, default_hang=True,
                   idle_window=20.0, probe_runs=200, python_runs=200)

    @classmethod
    def quick_run(cls) -> Settings:
        """The full run's cells (the same concurrencies), each measured shorter and once."""
        return replace(cls.full(), quick=True, engine_delay=2.0, startup_rounds=1, real_engine_rounds=0,
                       vllm_client_rounds=0, load_duration=1.0, load_warmup=0.3, load_rounds=1,
                       profile_duration=2.0, key_counts=(10, 1_000), key_rounds=1, key_requests=50,
                       key_lines=100, key_window=2.0, key_idle_window=1.0, reaction_repeats=1, default_hang=False,
                       idle_window=3.0, probe_runs=50, python_runs=20)
