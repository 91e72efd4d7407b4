"""Grade one exercise from Python or a notebook cell: `check("ex01")` prints the points table.

    from course_grader import check
    check("ex03")                       # the learner's exercises/ex03_unet.py
    check("ex03", target="solutions")   # the reference answers

Nothing the learner wrote can stop the notebook's kernel: the tests run in a separate pytest
process and the learner's code in a worker process below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from course_grader.layout import CourseLayout
from course_grader.learner.runner import course_layout
from course_grader.learner.session import run_tests
from course_grader.learner.table import format_table
from course_grader.records import TestRecord

__all__ = ["ExerciseResult", "check", "grade_exercise"]


@dataclass(frozen=True)
class ExerciseResult:
    """One exercise graded: its tests' records, the points, and how the test run ended.

    Its repr is one line, so a notebook cell ending in `check("ex03")` shows the score under the
    table rather than every record again.
    """

    exercise: str
    tests: tuple[TestRecord, ...]
    score: float
    max_score: float
    status: str  # "ok", or why the test run did not finish (see session.run_tests)
    log: str = ""  # the end of pytest's output when the run did not finish, else ""

    @property
    def all_passed(self) -> bool:
        return bool(self.tests) and all(t.passed for t in self.tests)

    def __repr__(self) -> str:
        return (
            f"ExerciseResult({self.exercise}: {self.score:g}/{self.max_score:g} points, "
            f"{sum(t.passed for t in self.tests)}/{len(self.tests)} tests passed, "
            f"status {self.status!r})"
        )


def grade_exercise(
    exercise: str,
    target: str = "exercises",
    *,
    hidden: bool = False,
    layout: CourseLayout | None = None,
) -> ExerciseResult:
    """Grade one exercise of `target`: one `course_grader.records.TestRecord` per graded test.

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
    return ExerciseResult(
        exercise=name,
        tests=tuple(result.tests),
        score=sum(t.earned for t in result.tests),
        max_score=sum(t.points for t in result.tests),
        status=result.status,
        log=result.log if result.status != "ok" or not result.tests else "",
    )


def check(exercise: str, target: str = "exercises") -> ExerciseResult:
    """Grade `exercise` of `target`, print the points table, return what `grade_exercise` returns."""
    graded = grade_exercise(exercise, target)
    print(format_table(graded.exercise, list(graded.tests)))
    if graded.status != "ok" or not graded.tests:
        print(f"\nThe test run ended with status {graded.status!r}; last lines of its log:")
        print("\n".join(graded.log.splitlines()[-15:]))
    return graded
