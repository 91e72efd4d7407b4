"""Learner stubs from reference solutions: the solution-marker format and its conversion.

A solution file marks the part the learner writes inside a function body:

    def f(x):
        \"\"\"The docstring stays: it is the task.\"\"\"
        # BEGIN SOLUTION
        # HINT: one or more hint lines, right after the opening marker
        return x + 1
        # END SOLUTION

`make_stub(source)` replaces each marked region by its `# HINT:` lines followed by
`raise NotImplementedError`, at the indentation of the opening marker; every other line is kept.
`solution_regions(source)` returns the regions (for the leak check of the student release) and
`task_names(source)` the top-level functions and classes that hold a region (what the learner is
asked to write, used to refuse answers that call the course_lib implementation of the same name).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from course_grader.layout import CourseLayout

__all__ = [
    "BEGIN",
    "END",
    "HINT",
    "MarkerError",
    "Region",
    "expected_stubs",
    "make_stub",
    "solution_regions",
    "task_names",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
HINT = "# HINT:"

_LOOKS_LIKE_MARKER = re.compile(r"#\s*(BEGIN|END)\b.*SOLUTION.*", re.IGNORECASE)


class MarkerError(ValueError):
    """A solution file whose markers cannot be turned into a stub."""


@dataclass(frozen=True)
class Region:
    """One marked region: 1-based line numbers of its markers, its indentation and its lines."""

    begin_line: int
    end_line: int
    indent: str
    hints: tuple[str, ...]
    body: tuple[str, ...]


def solution_regions(source: str, filename: str = "<solution>") -> list[Region]:
    """Parse the solution markers of `source`; raise MarkerError naming the line on misuse."""
    lines = source.splitlines()
    regions: list[Region] = []
    open_at: int | None = None
    indent = ""
    hints: list[str] = []
    body: list[str] = []
    in_hints = False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped in (BEGIN, END) or _LOOKS_LIKE_MARKER.fullmatch(stripped):
            if stripped not in (BEGIN, END):
                raise MarkerError(
                    f"{filename}:{number}: marker {stripped!r} is misspelt; "
                    f"expected exactly {BEGIN!r} or {END!r} on its own line"
                )
            if stripped == BEGIN:
                if open_at is not None:
                    raise MarkerError(
                        f"{filename}:{number}: {BEGIN!r} inside the region opened at line {open_at}; "
                        f"close it with {END!r} first"
                    )
                indent = line[: len(line) - len(line.lstrip())]
                if not indent:
                    raise MarkerError(
                        f"{filename}:{number}: {BEGIN!r} at column 0; markers belong inside a function body"
                    )
                open_at, hints, body, in_hints = number, [], [], True
            else:
                if open_at is None:
                    raise MarkerError(f"{filename}:{number}: {END!r} without a matching {BEGIN!r}")
                end_indent = line[: len(line) - len(line.lstrip())]
                if end_indent != indent:
                    raise MarkerError(
                        f"{filename}:{number}: {END!r} is indented {len(end_indent)} characters but "
                        f"its {BEGIN!r} (line {open_at}) is indented {len(indent)}; align them"
                    )
                regions.append(Region(open_at, number, indent, tuple(hints), tuple(body)))
                open_at = None
            continue
        if open_at is not None:
            if in_hints and stripped.startswith(HINT):
                hints.append(line)
            else:
                in_hints = False
                body.append(line)
    if open_at is not None:
        raise MarkerError(f"{filename}:{open_at}: {BEGIN!r} is never closed with {END!r}")
    return regions


def make_stub(source: str, filename: str = "<solution>") -> str:
    """The learner's copy of `source`: every marked region -> its hints + `raise NotImplementedError`."""
    regions = solution_regions(source, filename)
    if not regions:
        raise MarkerError(f"{filename}: no {BEGIN!r} region; a solution file needs at least one")
    lines = source.splitlines()
    out: list[str] = []
    position = 0  # index of the next source line to copy
    for region in regions:
        out.extend(lines[position : region.begin_line - 1])
        out.extend(region.hints)
        out.append(f"{region.indent}raise NotImplementedError")
        position = region.end_line
    out.extend(lines[position:])
    stub = "\n".join(out) + ("\n" if source.endswith("\n") else "")
    try:
        ast.parse(stub, filename=filename)
    except SyntaxError as error:
        raise MarkerError(
            f"{filename}: the generated stub does not compile ({error.msg}, line {error.lineno})"
        ) from error
    return stub


def task_names(source: str, filename: str = "<solution>") -> list[str]:
    """Top-level functions and classes of `source` that contain a marked region, in file order."""
    regions = solution_regions(source, filename)
    tree = ast.parse(source, filename=filename)
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            last = getattr(node, "end_lineno", node.lineno)
            if any(node.lineno <= region.begin_line <= last for region in regions):
                names.append(node.name)
    return names


def expected_stubs(layout: CourseLayout) -> dict[str, str]:
    """Stub text of every exercise, keyed by file name (`exNN_topic.py`): what exercises/ holds."""
    stubs = {}
    for name in layout.exercise_names():
        path = layout.solutions / f"{name}.py"
        stubs[path.name] = make_stub(path.read_text(encoding="utf-8"), filename=str(path))
    return stubs
