"""Every graded test can fail and can pass: untouched stubs score exactly zero, solutions full marks.

For every exercise in solutions/, the public and hidden graded tests run twice through the real
grader (a pytest process per target, learner code in workers): once on exercises/ (the untouched
stubs) and once on solutions/. Both runs share one zygote so torch is imported once.
"""

from __future__ import annotations

import pytest

from course_grader.layout import course_layout
from course_grader.learner.session import run_tests
from course_grader.learner.zygote import Zygote

LAYOUT = course_layout()
EXERCISES = LAYOUT.exercise_names()
FILES = [path for name in EXERCISES for path in LAYOUT.test_files(name, hidden=True)]

pytestmark = pytest.mark.skipif(not EXERCISES, reason="no exercise in solutions/ yet")


@pytest.fixture(scope="module")
def runs():
    with Zygote() as zygote:
        yield {
            target: run_tests(FILES, target, LAYOUT, zygote=zygote.socket_path)
            for target in ("exercises", "solutions")
        }


def _by_exercise(result):
    return {name: [t for t in result.tests if t.exercise == name] for name in EXERCISES}


def test_every_exercise_has_graded_tests(runs):
    for target, result in runs.items():
        assert result.status == "ok", (
            f"{target}: the test run ended with {result.status}\n{result.log[-2000:]}"
        )
        missing = [name for name, tests in _by_exercise(result).items() if not tests]
        assert not missing, (
            f"{target}: no graded test collected for {missing}\n{result.log[-2000:]}"
        )


def test_untouched_stubs_score_zero(runs):
    passing = [t.nodeid for t in runs["exercises"].tests if t.passed]
    assert passing == [], (
        f"these graded tests pass on the untouched stub, so they cannot fail: {passing}"
    )


def test_solutions_get_full_marks(runs):
    failing = [
        f"{t.nodeid}: {t.outcome}: {t.message}" for t in runs["solutions"].tests if not t.passed
    ]
    assert failing == [], "the reference solutions fail:\n" + "\n".join(failing)


def test_every_graded_test_is_worth_points(runs):
    pointless = [t.nodeid for t in runs["solutions"].tests if t.points <= 0]
    assert pointless == [], f"graded tests without @pytest.mark.points(n): {pointless}"
