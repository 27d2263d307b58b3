"""The benchmark command's quick mode, so the benchmarks do not rot.

It runs every benchmark for real (llm-entry, supervisord, LiteLLM, the
engine double, the serial baseline script) with short windows and one
round. Nothing here judges speed: the numbers of a quick run on a shared
machine are not for reading. What must hold is that every part ran and
reported, with no failure noted anywhere in the results.
"""

from __future__ import annotations

import json
import subprocess
import sys

from repo_paths import REPO


def _failures(results: dict) -> list[str]:
    """Every failure the run noted, in whatever section it happened."""
    found = list(results["errors"])
    for section in ("startup", "overhead", "keys", "reaction", "probes"):
        if results[section] is None:
            found.append(f"{section}: no results")
    found += (results["startup"] or {}).get("failures", [])
    found += (results["overhead"] or {}).get("notes", [])
    for scenario in results["reaction"] or []:
        found += [note for note in scenario["notes"] if "failed" in note]
    return found


def test_quick_benchmark_run_completes_every_section_without_failures(tmp_path):
    out = tmp_path / "quick.md"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=15 * 60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads(out.with_suffix(".json").read_text())
    assert _failures(results) == [], done.stdout[-3000:]
    assert results["startup"]["times"]["llm-entry"], "time to ready measured nothing"
    experiments = results["overhead"]["cells"]
    assert set(experiments["load"]) == {"direct", "proxy"}
    for experiment, sides in experiments.items():
        for side, cells in sides.items():
            assert all(cell["errors"] == 0 for cell in cells.values()), (experiment, side, cells)
    # Windows of a second on a busy machine may complete nothing in one cell;
    # the proxy must have answered somewhere, in some experiment.
    answered = sum(cell["requests"] for experiment, sides in experiments.items() for side, cells in sides.items()
                   if side != "direct" for cell in cells.values())
    assert answered > 0, "no request through a proxy completed in any experiment"
    cost = results["overhead"]["cost"]
    assert cost is not None, "the CPU cost of the request path was not measured"
    for side, cell in cost["cells"].items():
        assert cell["errors"] == 0 and cell["requests"] > 0 and cell["chunks"] > 0, (side, cell)
    for count, cell in results["keys"]["cells"].items():
        assert cell["errors"] == 0 and cell["requests"] > 0 and cell["lines"] > 0, (count, cell)
    assert "### Cost against the number of keys in --api-keys-file" in out.read_text()
    assert {s["name"] for s in results["reaction"]} >= {"engine SIGKILL", "SIGTERM, idle"}
    assert results["probes"]["times_ms"]["probes/readiness"]

    report = out.read_text()
    for heading in ("## Goals", "## 1. Time to ready", "## 2. Request overhead", "## 3. Reaction times",
                    "## 4. Footprint"):
        assert heading in report
    assert str(REPO) not in report, "the report names a path of this machine"
    assert (tmp_path / "quick.svg").read_text().startswith("<svg")
