"""The engine test double behind a wrapper that prints a burst of lines as it
exits, after the double is gone, the last one without a newline: like vLLM,
whose last lines (dozens of lines of nanobind's leak report, ending in
"See https://..." with no newline) come at the very end of its exit.
Standard library only; SIGTERM is passed on to the double."""

import signal
import subprocess
import sys
from pathlib import Path

DOUBLE = Path(__file__).resolve().parent / "engine_double.py"
LAST_WORDS = "last-words: the engine's very last line"
BURST = 300   # lines just before it, more than one round of the log forwarder takes in time

if __name__ == "__main__":
    child = subprocess.Popen([sys.executable, str(DOUBLE), *sys.argv[1:]])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, frame: child.send_signal(received))
    code = child.wait()
    # The last line without a newline, as nanobind ends vLLM's output.
    print("".join(f"last-words: leak report line {n}\n" for n in range(BURST)) + LAST_WORDS, end="", flush=True)
    sys.exit(code)
