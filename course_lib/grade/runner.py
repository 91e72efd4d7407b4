"""Load a learner's exercise file and call into it (in-process version).

`open_exercise(name, target)` returns an `ExerciseHandle`; see tests/graded/conftest.py for the
contract the graded tests rely on.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["repo_root", "resolve_exercise_path", "open_exercise", "ExerciseHandle"]


def repo_root() -> Path:
    """The course checkout that holds exercises/ and solutions/ (the parent of course_lib/)."""
    return Path(__file__).resolve().parents[2]


def resolve_exercise_path(name: str, target: str) -> Path:
    """Path of exercise `name` (e.g. "ex01_segmentation_types") in `target`.

    `target` is "exercises", "solutions", or a folder that holds `<name>.py`.
    """
    if target in ("exercises", "solutions"):
        folder = repo_root() / target
    else:
        folder = Path(target).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--target {target!r} is not a folder")
    return folder / f"{name}.py"


class ExerciseHandle:
    """Calls functions of a learner's module; attribute access returns a callable."""

    def __init__(self, name: str, path: Path, module: ModuleType):
        self._name = name
        self._path = path
        self._module = module

    def __getattr__(self, function_name: str):
        if function_name.startswith("_"):
            raise AttributeError(function_name)
        function = getattr(self._module, function_name, None)
        if function is None or not callable(function):
            raise AttributeError(f"{self._path.name} has no function {function_name!r}")
        return function

    def probe(self, probe_name: str, *args: Any, **kwargs: Any) -> Any:
        """Run trusted probe `course_lib.grade.probes.<exNN>.<probe_name>` on the learner's module."""
        probes = importlib.import_module(f"course_lib.grade.probes.{self._name.split('_')[0]}")
        return getattr(probes, probe_name)(self._module, *args, **kwargs)

    def close(self) -> None:
        sys.modules.pop(f"_graded_{self._name}", None)


def open_exercise(name: str, target: str = "exercises") -> ExerciseHandle:
    """Import the learner's file for exercise `name` from `target` under a private module name."""
    path = resolve_exercise_path(name, target)
    if not path.is_file():
        raise FileNotFoundError(f"exercise file not found: {path}")
    module_name = f"_graded_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return ExerciseHandle(name, path, module)
