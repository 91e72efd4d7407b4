"""Fixtures for the graded exercise tests.

Each graded test module names its exercise with a module-level constant, e.g.
`EXERCISE = "ex01_segmentation_types"`, and asks for the `exercise` fixture. The fixture is a
handle on the learner's file chosen by `--target`:

    exercise.some_function(*args)       # calls the learner's function, returns its result
    exercise.probe("name", *args)       # runs the trusted probe course_lib.grade.probes.name(module, *args)

Arguments and results are plain data only (tensors, arrays, numbers, strings, lists, tuples, dicts),
so the same tests run unchanged when the grader executes learner code in a separate process.
"""

from __future__ import annotations

import pytest

from course_lib.grade.runner import open_exercise


@pytest.fixture(scope="module")
def exercise(request):
    name = getattr(request.module, "EXERCISE", None)
    if name is None:
        raise RuntimeError(f"{request.module.__name__} must define EXERCISE = 'exNN_topic'")
    handle = open_exercise(name, target=request.config.getoption("--target"))
    yield handle
    handle.close()
