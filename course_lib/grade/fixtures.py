"""The `exercise` fixture shared by tests/graded/ and tests/hidden/ (their conftest files import it).

Each graded test module names its exercise with a module-level constant, e.g.
`EXERCISE = "ex01_segmentation_types"`, and asks for the `exercise` fixture: a handle on the
learner's file chosen by `--target` (see `runner.ExerciseHandle`). One worker process serves the
whole module; the workers of a pytest run are forked from one zygote (zygote.py), started on first use.
"""

from __future__ import annotations

import os

import pytest

from course_lib.grade.runner import open_exercise
from course_lib.grade.zygote import Zygote

__all__ = ["exercise"]


@pytest.fixture(scope="session")
def _worker_zygote():
    """Fork the workers of this pytest run from one zygote (one torch import for all exercises)."""
    if os.environ.get("COURSE_GRADE_ZYGOTE"):
        yield os.environ["COURSE_GRADE_ZYGOTE"]
        return
    try:
        zygote = Zygote().start()
    except (OSError, RuntimeError):
        yield None  # workers start as fresh interpreters instead
        return
    os.environ["COURSE_GRADE_ZYGOTE"] = zygote.socket_path
    try:
        yield zygote.socket_path
    finally:
        os.environ.pop("COURSE_GRADE_ZYGOTE", None)
        zygote.stop()


@pytest.fixture(scope="module")
def exercise(request, _worker_zygote):
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


def add_target_option(parser) -> None:
    """Register `--target exercises|solutions|PATH` once, whichever conftest pytest loads first.

    The course's root conftest.py registers it when pytest runs without paths; tests/conftest.py
    registers it when pytest runs on tests/ (or in a student release, which has no root conftest).
    """
    try:
        parser.addoption(
            "--target",
            action="store",
            default="exercises",
            help="which exercise files the graded tests check: exercises | solutions | PATH",
        )
    except ValueError:  # already registered by the other conftest
        pass
