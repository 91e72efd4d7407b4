"""pytest plugin that records each graded test's outcome for the grader (`-p course_grader.learner.plugin`).

It writes a JSON report to the path in COURSE_GRADE_REPORT, rewritten atomically after every test,
so a run that is killed part-way still leaves the outcomes it reached. A test counts as `passed`
only when its set-up, call and tear-down all passed; skipped, xfailed and errored tests earn nothing.
Each record is a `course_grader.records.TestRecord`: nodeid, exercise, points (from
`@pytest.mark.points`), outcome, message (first line of the failure), details (the first lines of
the failure, without the learner's traceback), where (the learner's line that raised, `{"file",
"line", "function", "code"}`, or None), output (the failure text, truncated), duration and, for a
failure, kind: what stopped the learner's call (timeout, import, unreadable, raised, crash, failed;
None when the test's own check failed), decided by the grader's side (runner.py), never read from
a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path

import pluggy
import pytest

from course_grader.learner.client import LearnerError
from course_grader.records import TestRecord
from course_lib.atomic import write_text_atomic

OUTPUT_LIMIT = 4000
LINE_LIMIT = 1000  # a first line longer than this is a flood, not a diagnosis
DETAIL_LINES = 12
_records: dict[str, TestRecord] = {}
_order: list[str] = []


def _report_path() -> Path | None:
    raw = os.environ.get("COURSE_GRADE_REPORT")
    return Path(raw) if raw else None


def _save() -> None:
    path = _report_path()
    if path is not None:
        write_text_atomic(
            path, json.dumps({"tests": [_records[n].to_json() for n in _order]}, indent=1)
        )


def _cap(line: str) -> str:
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT] + " … (line truncated)"


def _message(report: pytest.TestReport, call_excinfo) -> tuple[str, list[str], dict | None, str]:
    """(first line, first lines without the learner's traceback, learner's line, full text)."""
    where = None
    if call_excinfo is not None:
        error = call_excinfo.value
        if isinstance(error, LearnerError):
            text = str(error)
            explanation = text.split("\n  ")[0]  # the worker's trace lines start with two spaces
            where = error.where if isinstance(error.where, dict) else None
        else:
            text = explanation = f"{type(error).__name__}: {error}".strip()
    else:
        text = explanation = str(report.longrepr or "")
    lines = [_cap(line) for line in explanation.splitlines() if line.strip()]
    first = lines[0] if lines else report.outcome
    if len(lines) > DETAIL_LINES:
        more = len(lines) - DETAIL_LINES
        lines = lines[:DETAIL_LINES] + [f"… {more} more lines (--json shows them)"]
    output = text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n... (output truncated)"
    return first, lines or [first], where, output


def pytest_configure(config: pytest.Config) -> None:
    """In a grading run (COURSE_GRADE_REPORT set), this trusted process gets limits too (limits.py)."""
    if _report_path() is not None:
        from course_grader.learner.limits import Limits, apply_in_session

        apply_in_session(Limits.from_env())


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        marker = item.get_closest_marker("points")
        points = float(marker.args[0]) if marker and marker.args else 0.0
        exercise = getattr(item.module, "EXERCISE", None) if hasattr(item, "module") else None
        _records[item.nodeid] = TestRecord(
            nodeid=item.nodeid, name=item.name, exercise=exercise, points=points
        )
        _order.append(item.nodeid)
    _save()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    record = _records.get(item.nodeid)
    if record is None:
        return
    record = replace(record, duration=round(record.duration + report.duration, 3))
    if report.when == "call" and hasattr(report, "wasxfail"):
        record = replace(record, outcome="xfail", message="expected to fail (xfail earns nothing)")
    elif report.passed:
        if report.when == "call" and record.outcome in ("missing", "running"):
            record = replace(record, outcome="passed", message="")
        elif report.when == "setup":
            record = replace(record, outcome="running")
    elif report.skipped:
        record = replace(record, outcome="skipped", message="skipped (earns nothing)")
    else:
        first, details, where, output = _message(report, call.excinfo)
        error = call.excinfo.value if call.excinfo is not None else None
        # set by the trusted side (runner.py) from the worker client's state; None: the test's own
        # check failed (a wrong answer)
        kind = getattr(error, "kind", None) if isinstance(error, LearnerError) else None
        record = replace(
            record,
            outcome="failed" if report.when == "call" else "error",
            message=first,
            output=output,
            details=tuple(details),
            where=where,
            kind=kind if isinstance(kind, str) else None,
        )
    if report.when == "teardown" and record.outcome == "running":
        record = replace(record, outcome="error", message="the test did not report a result")
    _records[item.nodeid] = record
    _save()
