"""Markdown pieces the report is built from: tables and summarised numbers."""

from __future__ import annotations

from .stats import Summary


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def s(values, digits: int = 1, unit: str = "", scale: float = 1.0) -> str:
    return Summary.of(values).text(scale, digits, unit)


def per_round(a: list[float], b: list[float], op) -> list[float]:
    return [op(x, y) for x, y in zip(a, b, strict=False)]


def verdict(ok: bool | None, by: str = "") -> str:
    """"met", "**missed** (by 12 ms)" or "n/a"."""
    if ok is None:
        return "n/a"
    return "met" if ok else "**missed**" + (f" (by {by})" if by else "")
