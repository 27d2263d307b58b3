"""An engine whose /health answers 200 but which generates nothing (a lost
node of a multi-node group, a wedged engine) is caught by the proof of
generation: not ready within seconds, not healthy after --hang-timeout."""

import time

import requests

from bench.procs import wait_for

EXIT_HUNG = 6
FAST_CHECKS = ["--check-interval", "0.5", "--check-timeout", "1", "--unready-after", "2"]
# The bound for a lost node at the leader; the default check timings meet it.
NOT_READY_WITHIN = 15.0


def wedged_entry(entry_factory, tmp_path, *args):
    wedge = tmp_path / "wedge"
    entry = entry_factory(args=list(args), env={"ENGINE_DOUBLE_WEDGE_FILE": str(wedge),
                                                "ENGINE_DOUBLE_LOG_REQUESTS": "1"})
    return entry, wedge


def test_an_idle_engine_that_stops_generating_goes_not_ready_with_the_default_checks(entry_factory, tmp_path):
    entry, wedge = wedged_entry(entry_factory, tmp_path, "--hang-timeout", "120")
    entry.start().wait_ready()
    wedge.touch()
    wedged_at = time.monotonic()
    wait_for(lambda: entry.has("not-ready"), NOT_READY_WITHIN + 10, "not-ready once the engine stopped generating")
    took = time.monotonic() - wedged_at
    assert "one token was not generated within the check timeout" in entry.probe_text("not-ready")
    assert took < NOT_READY_WITHIN + 5, f"not-ready after {took:.1f} s"   # slack for a busy machine
    wedge.unlink()
    wait_for(entry.ready, 30, "ready again once tokens come")
    assert not entry.has("not-healthy")
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_an_engine_stuck_with_a_stream_in_flight_goes_not_healthy_after_the_hang_timeout(entry_factory, tmp_path):
    entry, wedge = wedged_entry(entry_factory, tmp_path, *FAST_CHECKS, "--hang-timeout", "6")
    entry.env["ENGINE_DOUBLE_TOKEN_INTERVAL"] = "0.05"
    entry.env["ENGINE_DOUBLE_TOKENS"] = "400"
    entry.start().wait_ready()
    stream = entry.chat("a long answer", stream=True)
    assert stream.status_code == 200
    next(stream.iter_lines())   # tokens flow
    wedge.touch()
    wait_for(lambda: entry.has("not-ready"), 30, "not-ready while the stream is stuck")
    wait_for(lambda: entry.has("not-healthy"), 40, "not-healthy after the hang timeout")
    assert entry.wait_exit() == EXIT_HUNG
    assert "engine has not passed a check" in entry.stderr()
    stream.close()
    entry.assert_nothing_left()


def test_the_engine_is_ready_only_once_it_generates(entry_factory, tmp_path):
    entry, wedge = wedged_entry(entry_factory, tmp_path, *FAST_CHECKS)
    wedge.touch()
    entry.start()
    wait_for(lambda: "one token was not generated" in entry.probe_text("not-ready"), 60,
             "not-ready to say the engine generates nothing")
    assert requests.get(f"http://127.0.0.1:{entry.engine_port}/health", timeout=5).status_code == 200
    assert not entry.ready()
    wedge.unlink()
    entry.wait_ready()
    assert entry.stop() == 0
    entry.assert_nothing_left()


def test_the_proof_goes_to_the_engine_directly_and_no_key_is_charged(entry_factory, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sk-team-a-0123456789abcdef0123456789 name=team-a\n")
    entry, _ = wedged_entry(entry_factory, tmp_path, *FAST_CHECKS, "--api-keys-file", str(keys))
    entry.start().wait_ready()
    wait_for(lambda: entry.output().count('"POST /v1/completions" 200') >= 3, 30, "a few proofs at the engine")
    metrics = requests.get(entry.url("/metrics"), headers=entry.headers(), timeout=10).text
    counted = [line for line in metrics.splitlines() if line.startswith(("llm_entry_requests_total{",
                                                                         "llm_entry_prompt_tokens_total{"))]
    assert counted == [], counted
    assert "entrypoint.access" not in entry.output()
    assert entry.stop() == 0
