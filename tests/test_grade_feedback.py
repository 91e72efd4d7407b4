"""Feedback that teaches: the learner's table, its failure details, and `expect_raises` messages.

No worker is started here: the records and learner errors are built by hand, as the plugin and
the worker would produce them (tests/test_grade_worker.py checks the real round trip).
"""

from __future__ import annotations

import pytest

from course_grader.learner.fixtures import expect_raises
from course_grader.learner.runner import LearnerError, forget_last_request
from course_grader.learner.table import failure_details, format_table
from course_grader.records import TestRecord

LONG = (
    "ex06.one_hot should raise ValueError when the mask holds label 5 and num_classes=3; instead "
    "it raised IndexError: index 5 is out of bounds for dimension 0 with size 3 (the last words "
    "of a long diagnosis must reach the learner)"
)
WHERE = {
    "file": "ex06_data_augmentation.py",
    "line": 88,
    "function": "one_hot",
    "code": "out[mask] = 1",
}


def record(name, outcome="failed", points=1.0, message="", details=None, where=None):
    return TestRecord(
        nodeid=f"tests/graded/test_ex06.py::{name}",
        name=name,
        exercise="ex06_data_augmentation",
        points=points,
        outcome=outcome,
        message=message,
        details=tuple(details if details is not None else ([message] if message else [])),
        where=where,
    )


def test_the_table_never_cuts_the_diagnosis():
    tests = [
        record("test_flip", "passed", 2.0),
        record("test_one_hot_rejects_labels_out_of_range", message=LONG, where=WHERE),
        record(
            "test_image",
            message="AssertionError: image resized bilinearly: Tensor-likes are not close!",
            details=[
                "AssertionError: image resized bilinearly: Tensor-likes are not close!",
                "Mismatched elements: 3 / 20 (15.0%)",
            ],
        ),
    ]
    text = format_table("ex06_data_augmentation", tests, width=90)
    rows, _, below = text.partition("What went wrong:")
    assert "total" in rows and "2/4" in rows
    assert "(see below)" in rows  # the row is shortened, and says where the rest is
    flat = " ".join(line.strip() for line in below.splitlines())
    assert LONG in flat  # every word of the first line, wrapped
    assert "Mismatched elements: 3 / 20 (15.0%)" in below
    assert "your code, ex06_data_augmentation.py:88 in one_hot:\n      out[mask] = 1" in below
    assert "test_flip" not in below  # passed tests have no details
    assert all(len(line) <= 90 for line in below.splitlines())


def test_tests_with_the_same_diagnosis_are_listed_together():
    stub = "ex06.one_hot is not implemented yet (NotImplementedError)"
    tests = [
        record("test_a", message=stub),
        record("test_b", message=stub, points=2.0),
        record("test_c", message="ex06.class_weights is not implemented yet (NotImplementedError)"),
    ]
    below = format_table("ex06", tests).split("What went wrong:")[1]
    assert below.count(stub) == 1 and "2 tests (0/3): test_a, test_b\n  " + stub in below
    assert "test_c (0/1)\n  ex06.class_weights is not implemented yet" in below


def test_failure_details_without_a_learner_line_or_details():
    lines = failure_details(record("test_x", message="ex90.add_one timed out after 2 s"), indent="")
    assert lines == ["ex90.add_one timed out after 2 s"]
    bare = TestRecord("t.py::test_y", "test_y", None, 1.0, outcome="error", message="setup failed")
    assert failure_details(bare) == ["  setup failed"]  # no details: the message stands in


def learner_error(kind: str, message: str) -> LearnerError:
    bases = {
        "ValueError": ("builtins.ValueError", "builtins.Exception", "builtins.BaseException"),
        "TypeError": ("builtins.TypeError", "builtins.Exception", "builtins.BaseException"),
        "ShapeError": (
            "_graded_ex06.ShapeError",
            "builtins.ValueError",
            "builtins.Exception",
            "builtins.BaseException",
        ),
    }
    return LearnerError(f"ex06.one_hot raised {kind}: {message}", raised=bases[kind], where=WHERE)


def raising(error):
    def call():
        raise error

    return call


def test_expect_raises_accepts_the_type_and_its_subclasses():
    forget_last_request()
    assert expect_raises(raising(learner_error("ValueError", "bad label")), ValueError, when="x")
    assert expect_raises(raising(learner_error("ShapeError", "bad shape")), ValueError, when="x")


def test_expect_raises_says_when_the_type_is_wrong():
    with pytest.raises(LearnerError) as caught:
        expect_raises(
            raising(learner_error("TypeError", "labels must be int64")),
            ValueError,
            when="the mask holds label 5",
        )
    message = str(caught.value)
    assert message.endswith(
        "should raise ValueError when the mask holds label 5; "
        "instead it raised TypeError: labels must be int64"
    )
    assert caught.value.where == WHERE  # the table can still show the learner's line


def test_expect_raises_says_when_nothing_was_raised():
    with pytest.raises(
        LearnerError, match=r"should raise ValueError when size=\(0, 4\), but returned normally"
    ):
        expect_raises(lambda: None, ValueError, when="size=(0, 4)")
    not_written = LearnerError("ex06.one_hot is not implemented yet (NotImplementedError)")
    with pytest.raises(LearnerError, match="; instead: ex06.one_hot is not implemented yet"):
        expect_raises(raising(not_written), ValueError, when="x")
    with pytest.raises(ZeroDivisionError):  # a mistake in the test itself is not the learner's
        expect_raises(lambda: 1 / 0, ValueError, when="x")
