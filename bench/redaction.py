"""`python -m bench.redaction`: what llm-entry's log redaction costs a line,
with 10 keys and with 100,000 keys hidden (entrypoint.console).

Every line the engine and the proxy write passes Console.redact on its way
to stdout, so its cost is paid per line by the log forwarder's thread. The
lines are a mix of what the proxy writes under load: access lines, refusal
lines, an uvicorn line, a long JSON line without spaces, and one line that
holds a key. CPU seconds of this process, the best of a few rounds, divided
by the lines redacted.
"""

from __future__ import annotations

import argparse
import secrets
import time

from entrypoint.console import Console

KEY_COUNTS = (10, 100_000)
ROUNDS = 5


def sample_lines(key: str) -> list[str]:
    return [
        "INFO entrypoint.access: access 2026-12-02T01:46:40.250Z key=team-a model=demo "
        "route=/v1/chat/completions status=200 prompt_tokens=12 completion_tokens=30 ms=153.2",
        "WARNING entrypoint.inside.refusals: refused POST /v1/chat/completions from 10.0.0.7: wrong key",
        'INFO:     127.0.0.1:53312 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        '{"id":"chatcmpl-8f2e","object":"chat.completion","created":1764639999,"model":"demo",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}',
        f"DEBUG a line that quotes a key {key} by mistake",
    ]


def microseconds_per_line(key_count: int, lines: int) -> float:
    keys = [f"sk-{secrets.token_hex(16)}" for _ in range(key_count)]
    console = Console()
    console.hide(*keys)
    sample = sample_lines(keys[key_count // 2])
    assert console.redact(sample[-1]).endswith("key *** by mistake")
    work = (sample * (lines // len(sample) + 1))[:lines]
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.process_time()
        for line in work:
            console.redact(line)
        best = min(best, time.process_time() - began)
    return best / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000, help="lines redacted per round")
    lines = parser.parse_args().lines
    for count in KEY_COUNTS:
        print(f"{count:>7} keys: {microseconds_per_line(count, lines):6.1f} µs per line")


if __name__ == "__main__":
    main()
