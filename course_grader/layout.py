"""Where the grader finds things: solutions, learner stubs, public and hidden graded tests.

`CourseLayout` names the folders of one course checkout; the default is this repository. The
grader's own tests point it at a small demo course so they do not depend on the real exercises.
Exercises are named `exNN_<topic>` (the file name without `.py`); `exNN` alone also resolves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXERCISE_FILE", "CourseLayout", "course_layout", "repo_root"]

EXERCISE_FILE = re.compile(r"ex\d{2}_[A-Za-z0-9_]+\.py")


def repo_root() -> Path:
    """The course checkout that holds exercises/ and solutions/ (the parent of course_grader/)."""
    return Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CourseLayout:
    """Folders of a course: `root` holds solutions/, exercises/, tests/graded/, tests/hidden/."""

    root: Path

    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def exercises(self) -> Path:
        return self.root / "exercises"

    @property
    def public_tests(self) -> Path:
        return self.root / "tests" / "graded"

    @property
    def hidden_tests(self) -> Path:
        return self.root / "tests" / "hidden"

    def exercise_names(self) -> list[str]:
        """Every exercise that has a reference solution, sorted (e.g. ["ex01_segmentation_types"])."""
        if not self.solutions.is_dir():
            return []
        return sorted(
            p.stem for p in self.solutions.glob("ex*.py") if EXERCISE_FILE.fullmatch(p.name)
        )

    def resolve(self, exercise: str) -> str:
        """Full exercise name from `exNN` or `exNN_topic`; ValueError listing the known ones."""
        known = self.exercise_names()
        for folder, pattern, skip in (
            (self.exercises, "ex*.py", 0),
            (self.public_tests, "test_ex*.py", len("test_")),
        ):
            if folder.is_dir():
                known += [
                    p.stem[skip:]
                    for p in folder.glob(pattern)
                    if EXERCISE_FILE.fullmatch(p.name[skip:])
                ]
        known = sorted(set(known))
        if exercise in known:
            return exercise
        matches = [name for name in known if name.split("_")[0] == exercise]
        if len(matches) == 1:
            return matches[0]
        raise ValueError(
            f"exercise={exercise!r} is not known; expected one of {known or '(none yet)'} "
            f"or its exNN prefix"
        )

    def test_files(self, exercise: str, hidden: bool = False) -> list[Path]:
        """Graded test files of `exercise` (public, plus hidden ones when `hidden`)."""
        prefix = exercise.split("_")[0]
        folders = [self.public_tests] + ([self.hidden_tests] if hidden else [])
        files: list[Path] = []
        for folder in folders:
            if folder.is_dir():
                files += sorted(folder.glob(f"test_{prefix}_*.py"))
        return files


def course_layout() -> CourseLayout:
    """The course being graded: the folder COURSE_GRADE_ROOT names if set (a grading server's
    copy of the course), else this checkout."""
    root = os.environ.get("COURSE_GRADE_ROOT")
    return CourseLayout(Path(root).resolve()) if root else CourseLayout(repo_root())
