"""The request-overhead benchmark alternates who goes first in every cell, so
the machine's drift hits both sides of each ratio alike."""

import pytest

from bench.overhead import _orders


@pytest.mark.parametrize("concurrencies", [(1,), (1, 8), (1, 8, 32), (1, 8, 32, 64)])
def test_every_cell_lets_each_side_go_first_equally_often(concurrencies):
    sides = ["direct", "proxy"]
    rounds = 4
    firsts = {c: [] for c in concurrencies}
    for _, c, order in _orders(sides, rounds, concurrencies):
        assert sorted(order) == sorted(sides)
        firsts[c].append(order[0])
    for c, seen in firsts.items():
        assert seen.count("direct") == seen.count("proxy") == rounds // 2, (c, seen)


def test_neighbouring_cells_of_one_round_start_with_different_sides():
    plan = _orders(["a", "b"], 1, (1, 8, 32))
    assert [order[0] for _, _, order in plan] == ["a", "b", "a"]
