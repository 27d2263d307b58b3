"""The package keeps the shape its style asks for: no function over 40 lines
or over 6 parameters (self and cls not counted). One that grows past either
usually hides a second idea, or wants one object instead of many arguments."""

from __future__ import annotations

import ast

from repo_paths import REPO

PACKAGE = REPO / "entrypoint"
MAX_LINES = 40
MAX_PARAMETERS = 6


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)
    positional = args.posonlyargs + args.args
    return count - (1 if positional and positional[0].arg in ("self", "cls") else 0)


def oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES or parameters(node) > MAX_PARAMETERS:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: "
                                 f"{lines} lines, {parameters(node)} parameters")
    return found


def test_no_function_in_the_package_is_over_40_lines_or_6_parameters():
    assert oversized() == []


def test_the_count_sees_a_long_function_with_many_parameters():
    source = "def f(self, a, b, c, d, e, f, g):\n" + "    x = 1\n" * 40
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert parameters(node) == 7 and node.end_lineno == 41
