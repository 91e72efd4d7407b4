"""The manifest: every graded test of the course, its exercise, points and visibility.

It is generated from a run of the public and hidden tests on the reference solutions, which must
pass them all, so the points a submission can earn are fixed before any submission runs. Results
are always reported against the manifest: a test that a submission's run did not report still
appears, with zero points. `tests_sha256` hashes the test files and probes, for the gradebook.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from course_grader.layout import CourseLayout
from course_grader.learner.limits import Limits
from course_grader.learner.session import run_tests
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
) -> dict:
    """Run the graded tests on solutions/ and describe each test; ManifestError if one fails."""
    exercises = exercises if exercises is not None else layout.exercise_names()
    files = _graded_files(layout, exercises, hidden)
    result = run_tests(files, "solutions", layout, limits=limits, zygote=zygote)
    failing = [t for t in result.tests if t["outcome"] != "passed"]
    if result.status != "ok" or failing or not result.tests:
        lines = [f"{t['nodeid']}: {t['outcome']}: {t['message']}" for t in failing[:10]]
        raise ManifestError(
            f"the reference solutions must pass every graded test (run status {result.status!r}); "
            f"{len(failing)} did not:\n"
            + "\n".join(lines)
            + ("\n" + result.log[-2000:] if not lines else "")
        )
    hidden_root = str(layout.hidden_tests.relative_to(layout.root)) + "/"
    tests = []
    for exercise_index, name in enumerate(exercises, start=1):
        own = [t for t in result.tests if t["exercise"] == name]
        for test_index, record in enumerate(own, start=1):
            tests.append(
                {
                    "id": record["nodeid"],
                    "name": record["name"],
                    "exercise": name,
                    "points": record["points"],
                    "visibility": "hidden"
                    if record["nodeid"].startswith(hidden_root)
                    else "public",
                    "number": f"{exercise_index}.{test_index}",
                }
            )
    unassigned = [t["nodeid"] for t in result.tests if t["exercise"] not in exercises]
    if unassigned:
        raise ManifestError(f"tests without a known EXERCISE constant: {unassigned[:5]}")
    return {
        "version": 1,
        "exercises": exercises,
        "hidden": hidden,
        "tests_sha256": tests_sha256(layout, exercises, hidden),
        "tests": tests,
    }


def save_manifest(manifest: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")


def load_manifest(path: Path) -> dict:
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    if manifest.get("version") != 1 or not isinstance(manifest.get("tests"), list):
        raise ValueError(f"manifest={str(path)!r} is not a version-1 grader manifest")
    return manifest
