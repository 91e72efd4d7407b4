"""Per-student reports: Gradescope `results.json`, a `feedback.md`, and the gradebook row.

Every report is built against the manifest: its tests, points and visibility, whatever the run
reported. Only a test whose outcome is `passed` earns its points. Hidden tests are reported with
Gradescope visibility `after_due_date`, and `feedback.md` shows only their points, never their
names or failure messages.
"""

from __future__ import annotations

from course_grader.learner.table import earned, what_went_wrong

__all__ = [
    "OUTPUT_LIMIT",
    "fallback_results",
    "feedback_markdown",
    "gradescope_results",
    "merge_with_manifest",
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


def merge_with_manifest(manifest: dict, records: list[dict]) -> list[dict]:
    """One row per manifest test: its manifest data plus outcome/message/output of the run."""
    by_id = {r["nodeid"]: r for r in records}
    rows = []
    for test in manifest["tests"]:
        record = by_id.get(test["id"])
        outcome = record["outcome"] if record else "missing"
        rows.append(
            {
                **test,
                "outcome": outcome,
                "message": record["message"] if record else "this test did not report a result",
                "details": record.get("details", []) if record else [],
                "where": _file_name_only(record.get("where")) if record else None,
                "output": record.get("output", "") if record else "",
                "kind": record.get("kind") if record else None,
            }
        )
    return rows


def student_status(rows: list[dict], session_status: str, accepted_files: int) -> str:
    """ok | partial | error | timeout | crash | missing for one student's run.

    Decided from structured fields only (the run's status, each test's outcome and the `kind` the
    grader's side gave its failure), never from a message, which the learner's code can write.
    """
    if accepted_files == 0:
        return "missing"
    if session_status in ("timeout", "crash"):
        return session_status
    kinds = {r.get("kind") for r in rows if r["outcome"] != "passed"}
    if "crash" in kinds:
        return "crash"
    if "timeout" in kinds:
        return "timeout"
    ran = [r for r in rows if r.get("kind") != "not submitted"]
    if kinds & {"import", "unreadable"} or any(r["outcome"] == "missing" for r in ran):
        return "error"
    return "ok" if all(r["outcome"] == "passed" for r in rows) else "partial"


def gradescope_results(student: str, rows: list[dict], ignored: list[str], status: str) -> dict:
    """Gradescope results.json content for one student."""
    tests = []
    for row in rows:
        hidden = row["visibility"] == "hidden"
        if row["outcome"] == "passed":
            text = "passed"
        elif row["output"].startswith(row["message"]):
            text = row["output"] or row["message"]
        else:
            text = f"{row['message']}\n\n{row['output']}".strip()
        tests.append(
            {
                "name": f"{row['exercise']}: {row['name']}",
                "number": row["number"],
                "score": earned(row),
                "max_score": float(row["points"]),
                "status": "passed" if row["outcome"] == "passed" else "failed",
                "output": _truncate(text),
                "visibility": "after_due_date" if hidden else "visible",
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


def fallback_results(manifest: dict, reason: str) -> dict:
    """What results.json says until grading finishes: zero points, every test listed."""
    tests = [
        {
            "name": f"{t['exercise']}: {t['name']}",
            "number": t["number"],
            "score": 0.0,
            "max_score": float(t["points"]),
            "status": "failed",
            "output": reason,
            "visibility": "after_due_date" if t["visibility"] == "hidden" else "visible",
        }
        for t in manifest["tests"]
    ]
    return {
        "score": 0.0,
        "output": reason,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def feedback_markdown(student: str, rows: list[dict], ignored: list[str], status: str) -> str:
    """A short Markdown report for the learner: public tests in full (each failure's first lines
    and the learner's line under the table), hidden tests as points only."""
    lines = [f"# Feedback for {student}", ""]
    total, possible = sum(earned(r) for r in rows), sum(float(r["points"]) for r in rows)
    lines += [f"**Score: {total:g} / {possible:g}** (status: {status})", ""]
    for exercise in dict.fromkeys(r["exercise"] for r in rows):
        own = [r for r in rows if r["exercise"] == exercise]
        public = [r for r in own if r["visibility"] == "public"]
        hidden = [r for r in own if r["visibility"] == "hidden"]
        lines += [f"## {exercise}", "", "| test | points | result |", "|---|---|---|"]
        for row in public:
            result = "passed" if row["outcome"] == "passed" else row["message"].replace("|", "\\|")
            lines.append(f"| {row['name']} | {earned(row):g}/{float(row['points']):g} | {result} |")
        if hidden:
            got = sum(earned(r) for r in hidden)
            lines.append(
                f"| hidden tests ({len(hidden)}) | {got:g}/{sum(float(r['points']) for r in hidden):g} | "
                f"{sum(r['outcome'] == 'passed' for r in hidden)} of {len(hidden)} passed |"
            )
        lines.append("")
        failures = what_went_wrong([r for r in public if r["details"]])
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
