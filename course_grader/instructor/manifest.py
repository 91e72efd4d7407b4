"""The manifest: every graded test of the course, its exercise, points and visibility.

It is generated from a run of the public and hidden tests on the reference solutions, which must
pass them all, so the points a submission can earn are fixed before any submission runs. Results
are always reported against the manifest: a test that a submission's run did not report still
appears, with zero points. `tests_sha256` hashes the test files and probes, for the gradebook.
The manifest is a `course_grader.records.Manifest`; `save_manifest` and `load_manifest` write and
read its JSON (`load_manifest` refuses a file with a missing, unknown or mistyped key).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from course_grader.layout import CourseLayout
from course_grader.learner.limits import Limits
from course_grader.learner.session import run_tests
from course_grader.records import Manifest, ManifestTest, RecordError
from course_lib.atomic import write_text_atomic

__all__ = ["ManifestError", "build_manifest", "load_manifest", "save_manifest", "tests_sha256"]


class ManifestError(RuntimeError):
    """The reference solutions do not get full marks, so no trustworthy manifest can be made."""


def _graded_files(layout: CourseLayout, exercises: list[str], hidden: bool) -> list[Path]:
    files: list[Path] = []
    for name in exercises:
        files += layout.test_files(name, hidden=hidden)
    return files


def tests_sha256(layout: CourseLayout, exercises: list[str], hidden: bool = True) -> str:
    """Hash of the graded test files, their conftest files and the probes of `exercises`."""
    paths = _graded_files(layout, exercises, hidden)
    for folder in (layout.public_tests, layout.hidden_tests):
        if (folder / "conftest.py").is_file():
            paths.append(folder / "conftest.py")
    for name in exercises:
        prefix = name.split("_")[0]
        for probe in (
            layout.root / "probes" / f"{prefix}.py",
            Path(__file__).parent / "probes" / f"{prefix}.py",
        ):
            if probe.is_file():
                paths.append(probe)
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(
            str(
                path.relative_to(layout.root) if path.is_relative_to(layout.root) else path.name
            ).encode()
        )
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_manifest(
    layout: CourseLayout,
    exercises: list[str] | None = None,
    *,
    hidden: bool = True,
    limits: Limits | None = None,
    zygote: str | None = None,
) -> Manifest:
    """Run the graded tests on solutions/ and describe each test; ManifestError if one fails."""
    exercises = exercises if exercises is not None else layout.exercise_names()
    files = _graded_files(layout, exercises, hidden)
    result = run_tests(files, "solutions", layout, limits=limits, zygote=zygote)
    failing = [t for t in result.tests if not t.passed]
    if result.status != "ok" or failing or not result.tests:
        lines = [f"{t.nodeid}: {t.outcome}: {t.message}" for t in failing[:10]]
        raise ManifestError(
            f"the reference solutions must pass every graded test (run status {result.status!r}); "
            f"{len(failing)} did not:\n"
            + "\n".join(lines)
            + ("\n" + result.log[-2000:] if not lines else "")
        )
    hidden_root = str(layout.hidden_tests.relative_to(layout.root)) + "/"
    tests = []
    for exercise_index, name in enumerate(exercises, start=1):
        own = [t for t in result.tests if t.exercise == name]
        for test_index, record in enumerate(own, start=1):
            tests.append(
                ManifestTest(
                    id=record.nodeid,
                    name=record.name,
                    exercise=name,
                    points=record.points,
                    visibility="hidden" if record.nodeid.startswith(hidden_root) else "public",
                    number=f"{exercise_index}.{test_index}",
                )
            )
    unassigned = [t.nodeid for t in result.tests if t.exercise not in exercises]
    if unassigned:
        raise ManifestError(f"tests without a known EXERCISE constant: {unassigned[:5]}")
    return Manifest(
        exercises=tuple(exercises),
        hidden=hidden,
        tests_sha256=tests_sha256(layout, exercises, hidden),
        tests=tuple(tests),
    )


def save_manifest(manifest: Manifest, path: Path) -> None:
    write_text_atomic(path, json.dumps(manifest.to_json(), indent=1) + "\n")


def load_manifest(path: Path) -> Manifest:
    """The manifest in `path`; ValueError naming the file and the key when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"manifest={str(path)!r} could not be read as JSON: {error}") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError(f"manifest={str(path)!r} is not a version-1 grader manifest")
    try:
        return Manifest.from_json(data)
    except RecordError as error:
        raise ValueError(
            f"manifest={str(path)!r} is not a valid grader manifest: {error}"
        ) from None
