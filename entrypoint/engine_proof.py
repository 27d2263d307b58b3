"""Proof that the engine still generates, not only that its HTTP server answers.

vLLM's /health says that the API server and the engine core process live. It
stays 200 while the engine cannot generate: when a node of a multi-node group
is lost (over 60 s of 200 measured here after the worker node's engine was
SIGKILLed, while every completion hung; vLLM issues #16259 and #53157 report
the same on GPUs), or when one engine is wedged. So after /health the engine
check proves generation, as cheaply as the engine's state allows:

- while requests are in the engine and its token counters (vLLM's /metrics,
  open without a key) moved since the previous check, tokens are flowing:
  that is the proof, and nothing is sent;
- while requests are in the engine and nothing moved, it asks the engine
  itself for one token with the engine's internal key, within the check's
  deadline;
- while the engine is idle, the same, at most every PROOF_EVERY seconds;
  between two, /health suffices.
The token's request never passes the proxy, so no key's usage, limits or
metrics count it (vLLM's own request counters do);
- a model that does not generate (vLLM serves no /v1/completions for an
  embedding or scoring model: 404) is checked by /health alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from .keys import Secret

# The request counts vLLM exports, summed over engines (data parallel) and label sets.
IN_ENGINE = ("vllm:num_requests_running", "vllm:num_requests_waiting")
# Tokens the engine has generated. Prompt tokens are not progress here: the
# proof's own prompt is counted even when its token never comes.
GENERATED = "vllm:generation_tokens_total"

# One token of a prompt every tokenizer can encode; the prefix cache keeps it cheap.
PROOF_REQUEST = {"prompt": "ping", "max_tokens": 1}

# How long an idle engine's last token counts as proof. Each token costs
# about 1 s of CPU per engine worker process, whatever its size: vLLM's
# workers busy-loop on their shared-memory queue for 1 s after every step
# (shm_broadcast's busy_loop_s; measured 1.0 CPU-s a token on the CPU build).
# 5 s keeps an idle engine at a fifth of a core per worker and still makes a
# lost node not ready within 15 s with the default checks (docs/probes.md).
PROOF_EVERY = 5.0


@dataclass(frozen=True)
class EngineLoad:
    requests: float   # running plus waiting
    tokens: float     # generated since the engine started


def read_load(text: str) -> EngineLoad | None:
    """The engine's load from its Prometheus page; None when the page does not
    carry the counters (vLLM with --disable-log-stats records none)."""
    sums = dict.fromkeys((*IN_ENGINE, GENERATED), 0.0)
    seen = set()
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            try:
                sums[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            seen.add(name)
    if GENERATED not in seen:
        return None
    return EngineLoad(sum(sums[name] for name in IN_ENGINE), sums[GENERATED])


def tokens_flowing(previous_tokens: float | None, load: EngineLoad | None) -> bool:
    """Requests are in the engine and its counters moved since the last look."""
    return (load is not None and previous_tokens is not None
            and load.requests > 0 and load.tokens > previous_tokens)


class GenerationProof:
    """Remembers what the previous check saw: the engine's token count (a
    restarted engine counts from zero, which is no progress, so its first
    check asks for a token) and whether this model generates at all."""

    def __init__(self, base: str, internal_key: Secret, served_model_name: str,
                 time_left: Callable[[float], float], clock: Callable[[], float] = time.monotonic):
        self._base = base
        self._key = internal_key
        self._model = served_model_name
        self._time_left = time_left
        self._clock = clock
        self._tokens: float | None = None
        self._proved_at: float | None = None   # the latest token generated on our request
        self.generates = True

    def prove(self, session: requests.Session, deadline: float) -> tuple[bool, str]:
        if not self.generates:
            return True, "/health 200 (the model does not generate: /health is its only check)"
        load = self._load(session, deadline)
        if load is not None and tokens_flowing(self._tokens, load):
            self._tokens = load.tokens
            return True, f"/health 200; {load.requests:.0f} requests in the engine, tokens flowing"
        stalled = load is not None and load.requests > 0
        if not stalled and self._proved_at is not None and self._clock() - self._proved_at < PROOF_EVERY:
            self._tokens = load.tokens if load is not None else None
            return True, f"/health 200; idle, a token generated {self._clock() - self._proved_at:.0f} s ago"
        # The proof's own token is not somebody else's progress at the next look.
        self._tokens = load.tokens + 1 if load is not None else None
        self._proved_at = None
        ok, detail = self._one_token(session, deadline)
        if ok and self.generates:
            self._proved_at = self._clock()
        return ok, detail

    def _load(self, session: requests.Session, deadline: float) -> EngineLoad | None:
        try:
            response = session.get(self._base + "/metrics", timeout=self._time_left(deadline))
        except requests.exceptions.RequestException:
            return None   # the generation below decides
        return read_load(response.text) if response.status_code == 200 else None

    def _one_token(self, session: requests.Session, deadline: float) -> tuple[bool, str]:
        began = self._clock()
        try:
            response = session.post(
                self._base + "/v1/completions", json={"model": self._model, **PROOF_REQUEST},
                headers={"Authorization": "Bearer " + self._key.reveal()}, timeout=self._time_left(deadline))
        except requests.exceptions.Timeout:
            return False, ("/health 200, but one token was not generated within the check timeout "
                           "(a lost node, or a wedged engine?)")
        if response.status_code == 404:
            self.generates = False
            return True, "/health 200 (the model does not generate: /health is its only check)"
        if response.status_code != 200:
            return False, f"/health 200, but a one-token generation answered {response.status_code}"
        return True, f"/health 200; one token generated in {(self._clock() - began) * 1000:.0f} ms"
