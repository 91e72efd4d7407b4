"""The `exercise` fixture shared by tests/graded/ and tests/hidden/ (their conftest files import it).

Each graded test module names its exercise with a module-level constant, e.g.
`EXERCISE = "ex01_segmentation_types"`, and asks for the `exercise` fixture: a handle on the
learner's file chosen by `--target` (see `runner.ExerciseHandle`). One worker process serves the
whole module.
"""

from __future__ import annotations

import os

import pytest

from course_lib.grade.runner import open_exercise

__all__ = ["exercise"]


@pytest.fixture(scope="module")
def exercise(request):
    name = getattr(request.module, "EXERCISE", None)
    if name is None:
        raise RuntimeError(f"{request.module.__name__} must define EXERCISE = 'exNN_topic'")
    target = os.environ.get("COURSE_GRADE_TARGET")  # set by the grader's own pytest runs
    if not target:
        try:
            target = request.config.getoption("--target")
        except ValueError:
            target = "exercises"
    handle = open_exercise(name, target=target)
    yield handle
    handle.close()
