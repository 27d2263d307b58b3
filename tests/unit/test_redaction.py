"""Unit tests of the redactor's index (entrypoint.console.Secrets): every
occurrence of every secret is hidden, whole, whatever their number, and a
line costs the same with ten keys as with a hundred thousand."""

from __future__ import annotations

import time

from bench.redaction import sample_lines
from entrypoint.console import Console

KEY_A = "team-a-5d1c9e7b3a8f2c6e4b0d"
KEY_B = "team-b-8e2f6a0c4d9b1e7a3c5f"


def console_hiding(*secrets: str) -> Console:
    console = Console()
    console.hide(*secrets)
    return console


def test_every_occurrence_of_a_key_is_hidden() -> None:
    console = console_hiding(KEY_A, KEY_B)
    assert console.redact(f"{KEY_A} and {KEY_B} and {KEY_A}!") == "*** and *** and ***!"


def test_a_key_inside_a_word_or_a_json_string_is_hidden() -> None:
    console = console_hiding(KEY_A)
    assert console.redact(f'{{"key":"{KEY_A}","url":"/v1?k={KEY_A}"}}') == '{"key":"***","url":"/v1?k=***"}'


def test_keys_side_by_side_are_each_hidden() -> None:
    assert console_hiding(KEY_A, KEY_B).redact(KEY_A + KEY_B) == "******"


def test_the_longer_key_wins_when_one_key_begins_another() -> None:
    console = console_hiding(KEY_A, KEY_A + "-longer")
    assert console.redact(f"x {KEY_A}-longer y {KEY_A} z") == "x *** y *** z"


def test_overlapping_keys_leave_no_piece_of_either_in_sight() -> None:
    second = KEY_A[10:] + "-tail-9f8e7d6c"
    line = KEY_A[:10] + second
    assert console_hiding(KEY_A, second).redact(f"<{line}>") == "<***>"


def test_short_secrets_and_secrets_with_spaces_are_hidden_too() -> None:
    console = console_hiding("pw1", "a pass phrase", KEY_A)
    assert console.redact(f"redis pw1 said a pass phrase to {KEY_A}") == "redis *** said *** to ***"


def test_a_key_hidden_later_is_hidden_from_then_on() -> None:
    console = console_hiding(KEY_A)
    assert console.redact(KEY_B) == KEY_B
    console.hide(KEY_B)
    assert console.redact(f"{KEY_A} {KEY_B}") == "*** ***"


def test_a_line_without_keys_is_returned_as_it_was() -> None:
    line = "INFO: 127.0.0.1 GET /v1/models 200 " + "x" * 200
    assert console_hiding(KEY_A).redact(line) == line


def cpu_seconds_per_line(key_count: int, lines: int = 500) -> float:
    keys = [f"sk-{number:040x}" for number in range(key_count)]
    console = console_hiding(*keys)
    sample = sample_lines(keys[-1])
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for line in sample * (lines // len(sample)):
            console.redact(line)
        best = min(best, time.process_time() - began)
    return best / lines


def test_a_line_costs_the_same_with_100000_keys_as_with_10() -> None:
    few, many = cpu_seconds_per_line(10), cpu_seconds_per_line(100_000)
    # A loop over the keys costs thousands of times more with 100,000 keys.
    assert many < 3 * few, f"{few * 1e6:.1f} µs a line with 10 keys, {many * 1e6:.1f} µs with 100,000"
