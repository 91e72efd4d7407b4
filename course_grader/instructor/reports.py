"""Per-student reports: Gradescope `results.json`, a `feedback.md`, and the gradebook row.

Every report is built against the manifest: its tests, points and visibility, whatever the run
reported. Only a test whose outcome is `passed` earns its points. Hidden tests are reported with
Gradescope visibility `after_due_date`, and `feedback.md` shows only their points, never their
names or failure messages.
"""

from __future__ import annotations

from dataclasses import replace

from course_grader.learner.table import what_went_wrong
from course_grader.records import Manifest, ReportRow, TestRecord

__all__ = [
    "OUTPUT_LIMIT",
    "fallback_results",
    "feedback_markdown",
    "gradescope_results",
    "merge_with_manifest",
    "not_submitted",
    "student_status",
]

OUTPUT_LIMIT = 2000


def _truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "\n... (output truncated)"


def _file_name_only(where: dict | None) -> dict | None:
    """The learner's line with the file's name only: the graded copy lives in a private folder."""
    if not isinstance(where, dict) or not where.get("file"):
        return None
    return {**where, "file": str(where["file"]).replace("\\", "/").rsplit("/", 1)[-1]}


def merge_with_manifest(manifest: Manifest, records: list[TestRecord]) -> list[ReportRow]:
    """One row per manifest test: the manifest's id, name, exercise and points, and the outcome,
    message, details, where, output and kind the run reported (`missing` when it reported none)."""
    by_id = {r.nodeid: r for r in records}
    rows = []
    for test in manifest.tests:
        reported = by_id.get(test.id)
        record = TestRecord(
            nodeid=test.id,
            name=test.name,
            exercise=test.exercise,
            points=test.points,
            message="this test did not report a result",
        )
        if reported is not None:
            record = replace(
                record,
                outcome=reported.outcome,
                message=reported.message,
                details=reported.details,
                where=_file_name_only(reported.where),
                output=reported.output,
                duration=reported.duration,
                kind=reported.kind,
            )
        rows.append(ReportRow(test, record))
    return rows


def not_submitted(row: ReportRow) -> ReportRow:
    """`row` for an exercise whose file the student did not hand in."""
    record = replace(
        row.record,
        outcome="missing",
        kind="not submitted",
        message=f"{row.test.exercise}.py was not submitted",
        output="",
        details=(),
        where=None,
    )
    return ReportRow(row.test, record)


def student_status(rows: list[ReportRow], session_status: str, accepted_files: int) -> str:
    """ok | partial | error | timeout | crash | missing for one student's run.

    Decided from structured fields only (the run's status, each test's outcome and the `kind` the
    grader's side gave its failure), never from a message, which the learner's code can write.
    """
    if accepted_files == 0:
        return "missing"
    if session_status in ("timeout", "crash"):
        return session_status
    records = [r.record for r in rows]
    kinds = {r.kind for r in records if not r.passed}
    if "crash" in kinds:
        return "crash"
    if "timeout" in kinds:
        return "timeout"
    ran = [r for r in records if r.kind != "not submitted"]
    if kinds & {"import", "unreadable"} or any(r.outcome == "missing" for r in ran):
        return "error"
    return "ok" if all(r.passed for r in records) else "partial"


def gradescope_results(
    student: str, rows: list[ReportRow], ignored: list[str], status: str
) -> dict:
    """Gradescope results.json content for one student."""
    tests = []
    for row in rows:
        test, record = row.test, row.record
        if record.passed:
            text = "passed"
        elif record.output.startswith(record.message):
            text = record.output or record.message
        else:
            text = f"{record.message}\n\n{record.output}".strip()
        tests.append(
            {
                "name": f"{test.exercise}: {test.name}",
                "number": test.number,
                "score": row.earned,
                "max_score": test.points,
                "status": "passed" if record.passed else "failed",
                "output": _truncate(text),
                "visibility": "after_due_date" if row.hidden else "visible",
            }
        )
    score = sum(t["score"] for t in tests)
    output = [
        f"Graded {len(rows)} tests: {score:g}/{sum(t['max_score'] for t in tests):g} points (status {status})."
    ]
    if ignored:
        output.append("Ignored from the submission (only exNN_<topic>.py files are graded):")
        output += [f"- {line}" for line in ignored[:20]]
    return {
        "score": score,
        "output": _truncate("\n".join(output)),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def fallback_results(manifest: Manifest, reason: str) -> dict:
    """What results.json says until grading finishes: zero points, every test listed."""
    tests = [
        {
            "name": f"{t.exercise}: {t.name}",
            "number": t.number,
            "score": 0.0,
            "max_score": t.points,
            "status": "failed",
            "output": reason,
            "visibility": "after_due_date" if t.visibility == "hidden" else "visible",
        }
        for t in manifest.tests
    ]
    return {
        "score": 0.0,
        "output": reason,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def feedback_markdown(student: str, rows: list[ReportRow], ignored: list[str], status: str) -> str:
    """A short Markdown report for the learner: public tests in full (each failure's first lines
    and the learner's line under the table), hidden tests as points only."""
    lines = [f"# Feedback for {student}", ""]
    total, possible = sum(r.earned for r in rows), sum(r.test.points for r in rows)
    lines += [f"**Score: {total:g} / {possible:g}** (status: {status})", ""]
    for exercise in dict.fromkeys(r.test.exercise for r in rows):
        own = [r for r in rows if r.test.exercise == exercise]
        public = [r.record for r in own if not r.hidden]
        hidden = [r.record for r in own if r.hidden]
        lines += [f"## {exercise}", "", "| test | points | result |", "|---|---|---|"]
        for record in public:
            result = "passed" if record.passed else record.message.replace("|", "\\|")
            lines.append(f"| {record.name} | {record.earned:g}/{record.points:g} | {result} |")
        if hidden:
            got = sum(r.earned for r in hidden)
            lines.append(
                f"| hidden tests ({len(hidden)}) | {got:g}/{sum(r.points for r in hidden):g} | "
                f"{sum(r.passed for r in hidden)} of {len(hidden)} passed |"
            )
        lines.append("")
        failures = what_went_wrong([r for r in public if r.details])
        if failures:
            lines += ["What went wrong:", "", "```", *failures[1:], "```", ""]
    if ignored:
        lines += [
            "## Ignored files",
            "",
            "Only `exNN_<topic>.py` files are graded; these were not:",
            "",
        ]
        lines += [f"- {line}" for line in ignored[:50]]
        lines.append("")
    return "\n".join(lines)
