"""Starts a program exactly as a launch spec says: `python -m entrypoint.inside.launch SPEC.json`.

supervisord's config format cannot carry every argv faithfully (it cuts a
value at " #" or " ;", expands %(...)s), and a chat template or a JSON engine
argument holds such characters. So supervisord runs this launcher with one
path, and the launcher replaces itself (exec: same PID, same process group)
with the program, after adjusting the environment: the engine never inherits
the proxy's keys.

Spec: {"argv": [...], "unset": ["VAR", ...], "set": {"VAR": "value"}}.
"""

from __future__ import annotations

import json
import os
import sys

EXIT_CANNOT_EXEC = 127


def environment(spec: dict, base: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in base.items() if name not in set(spec.get("unset", ()))}
    env.update(spec.get("set", {}))
    return env


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m entrypoint.inside.launch SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1]) as file:
        spec = json.load(file)
    program = spec["argv"]
    try:
        os.execvpe(program[0], program, environment(spec, dict(os.environ)))
    except OSError as error:
        print(f"llm-entry launch: cannot run {program[0]!r}: {error.strerror}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_EXEC
    return EXIT_CANNOT_EXEC  # not reached: exec does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
