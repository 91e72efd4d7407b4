"""The worker's own environment: limits, minimal environment, guards, as seen from learner code."""

from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path

import pytest

from course_grader.learner.client import LearnerError
from course_grader.learner.fixtures import expect_raises
from course_grader.learner.limits import Limits
from course_grader.learner.runner import open_exercise

LEARNER = """
import os
import resource

import torch


def inspect():
    limits = {name: list(resource.getrlimit(getattr(resource, name)))
              for name in ("RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_DATA")}
    return {"limits": limits, "env": dict(os.environ), "cwd": os.getcwd(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def write(path):
    with open(path, "w") as stream:
        stream.write("x")
    return os.path.abspath(path)


def spawn():
    os.system("true")


class ShapeError(ValueError):
    pass


def checks_with_the_wrong_type(x):
    raise TypeError(f"x must be positive, got {x}")


def checks_with_a_subclass(x):
    raise ShapeError(f"x must be positive, got {x}")


def forgets_to_check(x):
    return x
"""


@pytest.fixture(scope="module")
def handle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learner")
    (folder / "ex99_inspect.py").write_text(LEARNER)
    limits = Limits(
        call_timeout=30, exercise_timeout=120, startup_timeout=120, memory_mb=1024, file_mb=2
    )
    handle = open_exercise("ex99_inspect", target=str(folder), limits=limits)
    yield handle
    handle.close()


def test_limits_environment_and_threads(handle):
    seen = handle.inspect()
    assert seen["limits"]["RLIMIT_CORE"] == [0, 0]
    assert seen["limits"]["RLIMIT_FSIZE"] == [2 * 2**20, 2 * 2**20]
    assert (
        seen["limits"]["RLIMIT_CPU"][0]
        == Limits(exercise_timeout=120, startup_timeout=120).cpu_seconds
    )
    assert seen["limits"]["RLIMIT_DATA"][0] != resource.RLIM_INFINITY
    assert seen["limits"]["RLIMIT_DATA"][0] == seen["limits"]["RLIMIT_DATA"][1]
    env = seen["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == env["TMPDIR"] == seen["cwd"]
    assert not any(key.startswith("COURSE_GRADE") for key in env), (
        "the grader's settings must not reach learners"
    )
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "CUDA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "MPLBACKEND",
        "COURSE_MODE",
    }
    assert seen["threads"] == 1 and seen["cuda"] is False


def test_writes_only_inside_the_private_folder(handle):
    inside = handle.write("note.txt")
    assert Path(inside).parent == Path(handle.inspect()["cwd"])
    outside = Path(tempfile.gettempdir()) / f"grader-escape-{os.getpid()}.txt"
    with pytest.raises(LearnerError, match="raised PermissionError: the grader forbids writing"):
        handle.write(str(outside))
    assert not outside.exists()


def test_processes_are_refused_and_the_worker_is_reused(handle):
    starts = handle.worker.starts
    with pytest.raises(LearnerError, match="the grader forbids os.system"):
        handle.spawn()
    handle.inspect()
    assert handle.worker.starts == starts  # one worker served every call


def test_missing_function_names_itself(handle):
    with pytest.raises(
        LearnerError, match="ex99.nothing_here is missing: define a function named 'nothing_here'"
    ):
        handle.nothing_here(1)


def test_endless_loop_at_import_costs_one_call_limit(tmp_path):
    (tmp_path / "ex98_loop.py").write_text("while True:\n    pass\n")
    limits = Limits(call_timeout=2, exercise_timeout=60, startup_timeout=120)
    handle = open_exercise("ex98_loop", target=str(tmp_path), limits=limits)
    try:
        with pytest.raises(
            LearnerError, match="could not be imported: timed out after 2 s while importing"
        ):
            handle.anything()
        with pytest.raises(LearnerError, match="could not be imported"):  # no second wait
            handle.anything()
        assert handle.worker.starts == 1
    finally:
        handle.close()


def test_a_function_that_timed_out_is_not_run_again(tmp_path):
    (tmp_path / "ex97_loop.py").write_text(
        "def spin():\n    while True:\n        pass\n\n\ndef answer():\n    return 42\n"
    )
    limits = Limits(call_timeout=2, exercise_timeout=60, startup_timeout=120)
    handle = open_exercise("ex97_loop", target=str(tmp_path), limits=limits)
    try:
        with pytest.raises(LearnerError, match="timed out after 2 s while running ex97.spin"):
            handle.spin()
        starts = handle.worker.starts
        with pytest.raises(LearnerError, match="ex97.spin timed out after 2 s in an earlier test"):
            handle.spin()
        assert handle.worker.starts == starts, "the second call must fail without a new worker"
        assert handle.answer() == 42  # the other functions are still graded
    finally:
        handle.close()


def test_expect_raises_checks_the_type_and_points_at_the_learners_line(handle):
    with pytest.raises(LearnerError) as caught:
        expect_raises(lambda: handle.checks_with_the_wrong_type(-1), ValueError, when="x=-1")
    assert str(caught.value) == (
        "ex99.checks_with_the_wrong_type should raise ValueError when x=-1; "
        "instead it raised TypeError: x must be positive, got -1"
    )
    line = LEARNER.splitlines().index('    raise TypeError(f"x must be positive, got {x}")') + 1
    assert caught.value.where["line"] == line and caught.value.where["code"].startswith(
        "raise TypeError"
    )
    assert caught.value.where["function"] == "checks_with_the_wrong_type"
    error = expect_raises(lambda: handle.checks_with_a_subclass(-1), ValueError, when="x=-1")
    assert "raised ShapeError" in str(error)  # a subclass of ValueError is a ValueError
    with pytest.raises(
        LearnerError,
        match=r"^ex99.forgets_to_check should raise ValueError when x=-1, but returned normally$",
    ):
        expect_raises(lambda: handle.forgets_to_check(-1), ValueError, when="x=-1")


@pytest.mark.parametrize(
    "name, data",
    [
        ("ex96_bom", b"\xef\xbb\xbf" + "def word():\n    return 'café'\n".encode()),
        (
            "ex95_latin",
            "# -*- coding: latin-1 -*-\ndef word():\n    return 'café'\n".encode("latin-1"),
        ),
    ],
)
def test_files_python_runs_are_graded(tmp_path, name, data):
    (tmp_path / f"{name}.py").write_bytes(data)
    handle = open_exercise(name, target=str(tmp_path))
    try:
        assert handle.word() == "café"
    finally:
        handle.close()


def test_undeclared_encoding_says_how_to_fix_it(tmp_path):
    (tmp_path / "ex94_latin.py").write_bytes("def word():\n    return 'café'\n".encode("latin-1"))
    handle = open_exercise("ex94_latin", target=str(tmp_path))
    with pytest.raises(LearnerError, match="ex94_latin.py is not UTF-8 text .*PEP 263"):
        handle.word()
