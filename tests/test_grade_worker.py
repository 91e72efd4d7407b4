"""The worker's own environment: limits, minimal environment, guards, as seen from learner code."""

from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path

import pytest

from course_lib.grade.client import LearnerError
from course_lib.grade.limits import Limits
from course_lib.grade.runner import open_exercise

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
        with pytest.raises(LearnerError, match="could not be imported: timed out after 2 s while importing"):
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
