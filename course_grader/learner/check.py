"""Grade one exercise from Python or a notebook cell: `check("ex01")` prints the points table.

    from course_grader import check
    check("ex03")                       # the learner's exercises/ex03_unet.py
    check("ex03", target="solutions")   # the reference answers

Nothing the learner wrote can stop the notebook's kernel: the tests run in a separate pytest
process and the learner's code in a worker process below it.
"""

from __future__ import annotations

from pathlib import Path

from course_grader.layout import CourseLayout
from course_grader.learner.runner import course_layout
from course_grader.learner.session import run_tests
from course_grader.learner.table import format_table

__all__ = ["check", "grade_exercise"]


def grade_exercise(
    exercise: str,
    target: str = "exercises",
    *,
    hidden: bool = False,
    layout: CourseLayout | None = None,
) -> dict:
    """Grade one exercise of `target`; returns {"exercise", "tests", "score", "max_score", "status"}.

    "tests" holds one `course_grader.records.TestRecord` per graded test.

    Safe to call from a notebook: the tests run in a separate pytest process and the learner's
    code in a worker process below it, so nothing the learner wrote can stop the kernel.
    """
    layout = layout or course_layout()
    name = layout.resolve(exercise)
    if target not in ("exercises", "solutions") and not Path(target).is_dir():
        raise ValueError(
            f"target={target!r} is not a folder; expected exercises, solutions or a folder path"
        )
    target_value = target if target in ("exercises", "solutions") else str(Path(target).resolve())
    result = run_tests(layout.test_files(name, hidden=hidden), target_value, layout)
    return {
        "exercise": name,
        "tests": result.tests,
        "score": sum(t.earned for t in result.tests),
        "max_score": sum(t.points for t in result.tests),
        "status": result.status,
        "log": result.log if result.status != "ok" or not result.tests else "",
    }


def check(exercise: str, target: str = "exercises") -> dict:
    """Grade `exercise` of `target`, print the points table, return the results of `grade_exercise`."""
    graded = grade_exercise(exercise, target)
    print(format_table(graded["exercise"], graded["tests"]))
    if graded["status"] != "ok" or not graded["tests"]:
        print(f"\nThe test run ended with status {graded['status']!r}; last lines of its log:")
        print("\n".join(graded["log"].splitlines()[-15:]))
    return graded
