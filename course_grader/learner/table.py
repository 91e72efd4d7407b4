"""The learner's points table: one row per graded test and the total, then each failure in full.

A row holds as much of the failure's first line as fits; below the table every failed test shows
its first message lines, wrapped (never cut), and, when the failure came from the learner's code,
the learner's line that raised (file:line and the code). Tests that failed with the same diagnosis
(a function not written yet fails all its tests alike) are listed together under it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from course_grader.records import TestRecord

__all__ = ["earned", "failure_details", "format_table", "learner_line", "what_went_wrong"]


def earned(record: TestRecord) -> float:
    """Points a test record earns: all of them when it passed, none otherwise."""
    return record.earned


def _short_name(record: TestRecord) -> str:
    return record.name or record.nodeid.split("::")[-1]


def _shown_path(file: str) -> str:
    """The learner's file relative to the working folder when it lies below it, else its name."""
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive on Windows
        return Path(file).name
    return Path(file).name if relative.startswith("..") or os.path.isabs(relative) else relative


def learner_line(where: dict | None) -> list[str]:
    """`your code, FILE:LINE in FUNCTION:` and the code line, or [] when the failure has no line."""
    if not isinstance(where, dict) or not where.get("file") or not where.get("line"):
        return []
    place = f"{_shown_path(str(where['file']))}:{where['line']}"
    if where.get("function") and where["function"] != "<module>":
        place += f" in {where['function']}"
    code = str(where.get("code") or "").strip()
    return [f"your code, {place}:"] + ([f"    {code}"] if code else [])


def _wrap(line: str, width: int, indent: str) -> list[str]:
    """`line` wrapped to `width` after `indent`; continuation lines keep the line's own indent."""
    own = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line,
        width=max(width, 40),
        initial_indent=indent,
        subsequent_indent=indent + own + "  ",
        break_long_words=True,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [indent]


def failure_details(record: TestRecord, *, width: int = 100, indent: str = "  ") -> list[str]:
    """The first message lines of a failed `record`, wrapped to `width`, and the learner's line."""
    lines = record.details or [record.message or record.outcome]
    out: list[str] = []
    for line in lines:
        out += _wrap(line, width, indent)
    for line in learner_line(record.where):
        out += _wrap(line, width, indent)
    return out


def what_went_wrong(tests: list[TestRecord], *, width: int = 100) -> list[str]:
    """Each failed test's diagnosis in full, after a blank line; tests that share one are grouped."""
    groups: dict[tuple, list[TestRecord]] = {}  # same diagnosis -> the tests that share it
    for record in tests:
        if not record.passed:
            groups.setdefault(tuple(failure_details(record, width=width)), []).append(record)
    lines: list[str] = []
    for details, members in groups.items():
        points = sum(r.points for r in members)
        names = [_short_name(r) for r in members]
        if len(members) == 1:
            header = f"{names[0]} (0/{points:g})"
        else:
            header = f"{len(members)} tests (0/{points:g}): " + ", ".join(names)
        header_lines = textwrap.wrap(header, width=width, break_long_words=False)
        lines += ["", *header_lines, *details]  # names flush left, the diagnosis indented
    return lines


def format_table(
    exercise: str, tests: list[TestRecord], *, width: int = 120, hidden_note: bool = True
) -> str:
    """Plain-text table of `tests` (plugin records) for `exercise`, the total, then the failures."""
    if not tests:
        return f"{exercise}: no graded tests were collected"
    names = [_short_name(t) for t in tests]
    name_width = min(max(len(n) for n in names), 44)
    rule = "-" * min(width, name_width + 40)
    lines = [f"{exercise}", f"{'test':<{name_width}}  {'points':>9}  result", rule]
    room = max(20, width - name_width - 13)
    for record, name in zip(tests, names):
        shown = name if len(name) <= name_width else name[: name_width - 1] + "…"
        points = f"{record.earned:g}/{record.points:g}"
        result = "passed" if record.passed else record.message or record.outcome
        if len(result) > room:  # the whole text is below the table
            result = result[: room - 14].rsplit(" ", 1)[0] + " … (see below)"
        lines.append(f"{shown:<{name_width}}  {points:>9}  {result}")
    total = sum(t.earned for t in tests)
    possible = sum(t.points for t in tests)
    lines += [rule, f"{'total':<{name_width}}  {f'{total:g}/{possible:g}':>9}"]
    failures = what_went_wrong(tests, width=min(width, 100))
    if failures:
        lines += ["", "What went wrong:", *failures]
    if hidden_note:
        note = (
            "Your instructor also runs hidden tests on the same functions: passing these is "
            "necessary, not sufficient."
        )
        lines += ["", *textwrap.wrap(note, width=max(width, 40))]
    return "\n".join(lines)
