"""`python -m bench.body_memory`: proxy memory per byte of a request body in
flight (issue 20), for a plain and a streamed chat request.

The model routes need a body whole before it goes to the engine (its model
name, and for a stream the usage option the relay adds, which needs the
request parsed), so the proxy holds it while it is relayed: the body itself,
and while it is parsed the decoded text and the parsed strings. This sends bodies of --mib MiB through one proxy
worker to the engine double and reads the worker's peak resident memory
(VmHWM, reset before each request through /proc/PID/clear_refs) before and
after: the growth over the body's size is what one in-flight byte costs.
Allocator reuse makes single figures noisy: each kind is measured --rounds
times, and the lowest and highest are printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import requests

from . import runner


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def bytes_per_body_byte(entry: runner.Entry, proxy: int, size: int, stream: bool) -> float:
    body = json.dumps({"model": runner.MODEL_NAME, "stream": stream, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "x" * size}]}).encode()
    Path(f"/proc/{proxy}/clear_refs").write_text("5")      # the peak starts again from now
    before = peak_rss(proxy)
    answer = requests.post(f"http://127.0.0.1:{entry.port}/v1/chat/completions", data=body, timeout=300,
                           headers={"Authorization": f"Bearer {entry.master_key}",
                                    "Content-Type": "application/json"})
    answer.raise_for_status()
    return (peak_rss(proxy) - before) / len(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.body_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=48, help="body size in MiB [48]")
    parser.add_argument("--rounds", type=int, default=3, help="requests of each kind [3]")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        runs = runner.Runs(Path(work))
        try:
            entry = runner.Entry(runs, ["--proxy-workers", "1"], model=None).start()
            entry.wait_ready()
            proxy = entry.program_pid("proxy")
            for stream in (False, True):
                figures = [bytes_per_body_byte(entry, proxy, args.mib << 20, stream) for _ in range(args.rounds)]
                kind = "streamed" if stream else "plain"
                print(f"{kind} chat, {args.mib} MiB body: {min(figures):.2f}-{max(figures):.2f} bytes of proxy "
                      f"memory per body byte at peak ({args.rounds} requests)")
        finally:
            runs.stop_all()


if __name__ == "__main__":
    main()
