"""A handle on a learner's exercise file, for the graded tests (the `exercise` fixture).

`open_exercise(name, target)` returns an `ExerciseHandle`. The learner's code never runs in the
calling process: every call goes to a worker process (`client.WorkerClient`), one per exercise,
reused across calls. A missing file, a file that does not import, a missing function, an
exception, an endless loop or a crash all come back as `LearnerError` (an AssertionError, so the
test fails) whose first line tells the learner what happened.

    exercise.some_function(*args, **kwargs)   # the learner's function, run in the worker
    exercise.probe("name", *args)             # course_grader.probes.exNN.name(module, *args)

Arguments and results are plain data (see `wire.py`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from course_grader.layout import CourseLayout, course_layout, repo_root
from course_grader.learner.client import LearnerError, WorkerClient
from course_grader.learner.limits import Limits
from course_grader.learner.zygote import WorkerStartError
from course_grader.stubs import MarkerError, task_names

__all__ = [
    "ExerciseHandle",
    "LearnerError",
    "course_layout",
    "forget_last_request",
    "last_request",
    "open_exercise",
    "repo_root",
    "resolve_exercise_path",
]


def resolve_exercise_path(name: str, target: str, layout: CourseLayout | None = None) -> Path:
    """Path of exercise `name` (e.g. "ex01_segmentation_types") in `target`.

    `target` is "exercises", "solutions", or a folder that holds `<name>.py`.
    """
    layout = layout or course_layout()
    if target in ("exercises", "solutions"):
        folder = layout.exercises if target == "exercises" else layout.solutions
    else:
        folder = Path(target).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--target {target!r} is not a folder; expected exercises, solutions or a folder"
            )
    return folder / f"{name}.py"


def _task_names(name: str, layout: CourseLayout) -> list[str]:
    for folder in (layout.solutions, layout.exercises):
        path = folder / f"{name}.py"
        if path.is_file():
            try:
                return task_names(path.read_text(encoding="utf-8"), filename=str(path))
            except (MarkerError, SyntaxError, UnicodeDecodeError):
                continue
    return []


def _forbidden_roots(layout: CourseLayout) -> list[str]:
    roots = [str(layout.solutions), str(layout.hidden_tests)]
    extra = os.environ.get("COURSE_GRADE_FORBIDDEN", "")
    roots += [part for part in extra.split(os.pathsep) if part]
    return roots


def _local_probes(name: str, layout: CourseLayout) -> Path | None:
    """A course-local probe file `<root>/probes/exNN.py` (the grader's demo course has one)."""
    path = layout.root / "probes" / f"{name.split('_')[0]}.py"
    return path if path.is_file() else None


_last_request: list[str] = []  # label of the latest learner call made from this process


def last_request() -> str | None:
    """`exNN.name` of the latest call or probe sent to a learner's file (None before any)."""
    return _last_request[-1] if _last_request else None


def forget_last_request() -> None:
    """Start afresh: `last_request()` is None until the next call (used by `expect_raises`)."""
    _last_request.clear()


def _failure_kind(client: WorkerClient, error: LearnerError, op: str, target: str) -> str:
    """What stopped a call, read from the worker client's own state, never from the message
    (the learner writes messages): timeout, import, raised, crash or failed."""
    if (op, target) in client._timed_out or client.spent >= client.limits.exercise_timeout:
        return "timeout"
    if client._broken:
        return "import"
    if error.raised:
        return "raised"
    if (
        client._process is None
    ):  # the client stopped the worker: it died or its answer was unreadable
        return "crash"
    return "failed"


class ExerciseHandle:
    """Calls into a learner's module through a worker; attribute access returns a callable."""

    def __init__(
        self, name: str, path: Path, client: WorkerClient | None, problem: str | None = None
    ):
        self._name = name
        self._path = path
        self._client = client
        self._problem = problem

    def _request(self, op: str, target: str, args: tuple, kwargs: dict) -> Any:
        __tracebackhide__ = True  # pytest shows the learner's failure, not the grader's frames
        _last_request[:] = [f"{self._name.split('_')[0]}.{target}"]
        if self._problem is not None:
            error = LearnerError(self._problem)
            error.kind = "unreadable"
            raise error
        try:
            return self._client.request(op, target, args, kwargs)
        except LearnerError as error:
            error.kind = getattr(error, "kind", None) or _failure_kind(
                self._client, error, op, target
            )
            raise
        except WorkerStartError as error:  # the grader's fault: the class grader grades again
            fault = LearnerError(f"the grader could not start a worker: {error}")
            fault.kind = "grader"
            raise fault from None

    def __getattr__(self, function_name: str):
        if function_name.startswith("_"):
            raise AttributeError(function_name)

        def call(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # pytest shows the learner's failure, not the grader's frames
            return self._request("call", function_name, args, kwargs)

        call.__name__ = function_name
        return call

    def probe(self, probe_name: str, *args: Any, **kwargs: Any) -> Any:
        """Run trusted probe `course_grader.probes.<exNN>.<probe_name>` on the learner's module."""
        __tracebackhide__ = True  # pytest shows the learner's failure, not the grader's frames
        return self._request("probe", probe_name, args, kwargs)

    @property
    def worker(self) -> WorkerClient | None:
        """The worker client (None when the file could not be read)."""
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def open_exercise(
    name: str, target: str = "exercises", limits: Limits | None = None
) -> ExerciseHandle:
    """Handle on exercise `name` in `target`; problems with the file surface when it is called."""
    layout = course_layout()
    path = resolve_exercise_path(name, target, layout)
    if not path.is_file() or path.is_symlink():
        return ExerciseHandle(
            name, path, None, problem=f"{path.name} is missing (looked in {path.parent})"
        )
    source = path.read_bytes()
    try:  # what `python file.py` accepts: UTF-8 with or without a BOM, or a PEP 263 coding line
        importlib.util.decode_source(source)
    except UnicodeDecodeError as error:
        return ExerciseHandle(
            name,
            path,
            None,
            problem=f"{path.name} is not UTF-8 text ({error.reason}); save it as UTF-8, "
            "or declare its encoding on line 1 or 2 (PEP 263)",
        )
    except SyntaxError:
        pass  # an unknown coding line: the worker reports it as Python would, a SyntaxError
    client = WorkerClient(
        name,
        path.resolve(),
        source,
        task_names=_task_names(name, layout),
        forbidden_roots=_forbidden_roots(layout),
        limits=limits or Limits.from_env(),
        probes_path=_local_probes(name, layout),
    )
    return ExerciseHandle(name, path, client)
