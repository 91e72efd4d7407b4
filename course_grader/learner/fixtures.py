"""The `exercise` fixture shared by tests/graded/ and tests/hidden/ (their conftest files import it).

Each graded test module names its exercise with a module-level constant, e.g.
`EXERCISE = "ex01_segmentation_types"`, and asks for the `exercise` fixture: a handle on the
learner's file chosen by `--target` (see `runner.ExerciseHandle`). One worker process serves the
whole module; the workers of a pytest run are forked from one zygote (zygote.py), started on first use.

A test that expects the learner's code to refuse bad input uses `expect_raises`:

    expect_raises(lambda: exercise.one_hot(mask, 3), ValueError, when="a label is 5 and num_classes=3")

It fails with "ex06.one_hot should raise ValueError when a label is 5 and num_classes=3, but
returned normally", or "...; it raised TypeError instead: ..." when the type is wrong. Pair it, in
the same test, with a valid call whose answer is checked, so code that always raises earns nothing.

A test that unpacks an answer checks its type and length first with `unpack`, so that a tensor
where a pair was expected fails with a message instead of being split row by row:

    labels, count = unpack(exercise.connected_components(mask), "labels", "count")
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

from course_grader.learner.runner import (
    LearnerError,
    forget_last_request,
    last_request,
    open_exercise,
)
from course_grader.learner.zygote import Zygote

__all__ = ["exercise", "expect_raises", "unpack"]


def expect_raises(
    call: Callable[[], object], expected: type[BaseException] = ValueError, *, when: str
) -> LearnerError:
    """Run `call()` (a call into the learner's code); pass only if the learner raised `expected`.

    A subclass of `expected` counts. Returns the learner's error; otherwise fails (LearnerError,
    an AssertionError) with a message that names the function, the situation `when` and what the
    learner's code did instead: returned normally, raised another type, or did not run.
    """
    __tracebackhide__ = True  # pytest shows the message, not the helper's frames
    wanted = f"{expected.__module__}.{expected.__qualname__}"
    shown = expected.__name__
    forget_last_request()
    try:
        call()
    except LearnerError as error:
        if wanted in error.raised:
            return error
        subject = last_request() or "your code"
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raised = re.match(r"\S+ raised (.*)", first)  # "ex06.f raised TypeError: ..."
        problem = f"instead it raised {raised[1]}" if raised else f"instead: {first}"
        raise LearnerError(
            f"{subject} should raise {shown} when {when}; {problem}",
            raised=error.raised,
            where=error.where,
        ) from None
    subject = last_request() or "your code"
    raise LearnerError(f"{subject} should raise {shown} when {when}, but returned normally")


def unpack(answer: object, *names: str) -> tuple:
    """`answer` as a tuple of `len(names)` values, after checking that it is a tuple or list of
    exactly that length (LearnerError naming the function and what came back otherwise).

    Unpacking a tensor splits it into one tensor per row, so a learner's huge tensor returned
    where a pair was expected would cost the grader's process far more memory than the answer
    itself; a tuple or list is unpacked as it is.
    """
    __tracebackhide__ = True  # pytest shows the message, not the helper's frames
    if type(answer) in (tuple, list) and len(answer) == len(names):
        return tuple(answer)
    subject = last_request() or "your code"
    if type(answer) in (tuple, list):
        got = f"a {type(answer).__name__} of {len(answer)} values"
    elif hasattr(answer, "shape") and hasattr(answer, "dtype"):
        got = f"a {type(answer).__name__} of shape {tuple(answer.shape)}"
    else:
        got = f"a {type(answer).__name__}"
    raise LearnerError(
        f"{subject} should return {len(names)} values ({', '.join(names)}), got {got}"
    )


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


def add_target_option(parser: pytest.Parser) -> None:
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
