"""The benchmark of cost against the number of keys: its keys files are what
llm-entry accepts, its count of printed lines misses none, and its section,
goals and chart panel render from results (the quick run covers the rest)."""

from __future__ import annotations

from bench import report
from bench.__main__ import STEP_NAMES, parse
from bench.chart import render as render_chart
from bench.keys import KeyCountCell, KeysResults, Printed, keys_file
from bench.settings import Settings
from entrypoint.inside.keys_file import screen_keys


def test_a_generated_keys_file_has_every_key_accepted_with_its_name(tmp_path):
    path = tmp_path / "keys"
    key, name = keys_file(path, 1000)
    screened = screen_keys(path.read_text())
    assert screened.rejected == ()
    assert len(screened.entries) == len({entry.key for entry in screened.entries}) == 1000
    assert (screened.entries[-1].key, screened.entries[-1].name) == (key, name)
    assert all(entry.limits.unlimited for entry in screened.entries)


def test_printed_lines_are_counted_once_each_even_when_a_line_arrives_in_two_writes(tmp_path):
    log = tmp_path / "llm-entry.log"
    log.write_bytes(b"proxy     | refused POST /v1/chat/completions from 127.0.0.1: wrong key\nproxy     | ref")
    printed = Printed(log, (b"refused POST",)).update()
    assert (printed.lines, printed.marked[b"refused POST"]) == (1, 1)
    with log.open("ab") as file:
        file.write(b"used POST /v1/chat/completions\nllm-entry | something else\n")
    printed.update()
    assert (printed.lines, printed.marked[b"refused POST"]) == (3, 2)


def results() -> KeysResults:
    return KeysResults(concurrency=4, rounds=2, cells={
        10: KeyCountCell([0.5, 0.6], [0.02, 0.03], [1.0, 1.1], ready_s=20.0, proxy_rss_mb=370.0,
                         requests=800, lines=6000),
        100_000: KeyCountCell([10.0, 12.0], [6.0, 6.0], [1.0, 1.0], ready_s=24.0, proxy_rss_mb=420.0,
                              requests=500, lines=1500),
    })


def test_the_keys_section_goals_and_chart_panel_render_from_results():
    run = report.Run(settings=Settings.full(), command="python -m bench --only keys", machine={}, versions={},
                     started="now", keys=results())
    text = report.render(run, "results.svg")
    assert "### Cost against the number of keys in --api-keys-file" in text
    assert ("| 100,000 | 11.000 (10.000–12.000) | 6.0000 (6.0000–6.0000) | 1.00 (1.00–1.00) | 24.0 | 420 "
            "| 500 / 1500 | 0 |") in text
    goals = {goal.name: goal for goal in report.goals(run)}
    per_request = goals["proxy CPU per request: 100,000 keys / 10 keys"]
    assert (per_request.measured, per_request.ok) == ("20 (20–20)", False)
    per_line = goals["llm-entry CPU per log line: 100,000 keys / 10 keys"]
    assert (per_line.measured, per_line.ok) == ("250 (200–300)", False)
    panels = report.panels(run)
    assert [panel.title for panel in panels] == ["2. CPU against the number of keys in --api-keys-file"]
    assert render_chart(panels, "title").startswith("<svg")


def test_growth_within_the_goal_is_met():
    flat = results()
    flat.cells[100_000] = KeyCountCell([0.55, 0.66], [0.022, 0.03], [1.0, 1.0])
    run = report.Run(settings=Settings.full(), command="", machine={}, versions={}, started="now", keys=flat)
    assert all(goal.ok for goal in report.goals(run))


def test_only_names_the_steps_to_run():
    assert "keys" in STEP_NAMES
    assert parse(["--only", "keys", "--only", "probes"]).only == ["keys", "probes"]
    assert parse([]).only is None


def test_the_quick_run_counts_fewer_keys_than_the_full_one():
    assert Settings.full().key_counts == (10, 10_000, 100_000)
    assert max(Settings.quick_run().key_counts) < max(Settings.full().key_counts)
