"""The student release and the instructor bundle, and the check that nothing secret leaks.

Student release (what learners get): `exercises/` (stubs generated from the solutions),
`tests/graded/` (public tests and their conftest), `tests/conftest.py`, and `GRADING.md` (how to
check an exercise). Instructor bundle: `solutions/`, `exercises/`, `tests/graded/`,
`tests/hidden/`, course-local `probes/`, and `manifest.json` from a run on the solutions.

`leaks(layout, folder)` lists every solution line and hidden test found in `folder`;
`build_student_release` refuses (LeakError, nothing left behind) when the list is not empty.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from pathlib import Path

from course_grader.instructor.manifest import build_manifest, save_manifest
from course_grader.layout import CourseLayout
from course_grader.records import Manifest
from course_grader.stubs import expected_stubs, solution_regions
from course_lib.atomic import write_text_atomic

__all__ = ["LeakError", "build_instructor_bundle", "build_student_release", "leaks"]

_MIN_LINE = 10  # shorter solution lines ("return x") are too generic to count as a leak
_LONG_LINE = 45  # a solution line this long is distinctive on its own
_TEST_NAME = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)", re.MULTILINE)

_GRADING_README = """# Exercises and grading

Each lesson has an exercise file in `exercises/` (`exNN_<topic>.py`). Open it next to the
notebook, read the docstrings (they are the task), and replace each `raise NotImplementedError`
with your code; the `# HINT:` comment above it points the way.

Check your work at any time:

    python -m course_grader ex01

The table shows each graded test, the points it earned and, for a failed test, the start of what
went wrong; under it, each failure is spelled out in full, with the line of your file that raised
it. Your code runs in a separate process with a time limit, so an endless loop or a crash is
reported rather than fatal; `--json` prints the same results for tools. The graded tests are
ordinary pytest tests in `tests/graded/`.

Your instructor grades with these public tests and with hidden tests on the same functions:
passing every public test is necessary, not sufficient. Submit only your `exNN_<topic>.py` files;
anything else in a submission is ignored.
"""


class LeakError(RuntimeError):
    """A solution line or a hidden test reached a folder meant for learners."""


def _secret_lines(layout: CourseLayout) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """What the learner's copy must not contain: distinctive single solution lines and pairs of
    consecutive solution lines (stripped, blank and comment lines skipped) -> where they come from.

    A generic line such as `if ignore_index is not None:` may legitimately appear in a public test;
    a long line, or two solution lines in a row, is the solution itself.
    """
    singles, pairs = {}, {}
    for name in layout.exercise_names():
        path = layout.solutions / f"{name}.py"
        source = path.read_text(encoding="utf-8")
        regions = solution_regions(source, str(path))
        inside = {n for r in regions for n in range(r.begin_line, r.end_line + 1)}
        outside = {line.strip() for n, line in enumerate(source.splitlines(), 1) if n not in inside}
        for region in regions:
            origin = f"solutions/{path.name}:{region.begin_line}"
            body = [line.strip() for line in region.body]
            body = [
                text
                for text in body
                if len(text) >= _MIN_LINE and not text.startswith("#") and text not in outside
            ]
            singles.update({text: origin for text in body if len(text) >= _LONG_LINE})
            pairs.update({pair: origin for pair in itertools.pairwise(body)})
    return singles, pairs


def _hidden_markers(layout: CourseLayout) -> dict[str, str]:
    """Hidden test names and file names -> where they come from."""
    markers = {}
    if layout.hidden_tests.is_dir():
        for path in sorted(layout.hidden_tests.glob("*.py")):
            if path.name != "conftest.py":
                markers[path.name] = f"tests/hidden/{path.name}"
            for name in _TEST_NAME.findall(path.read_text(encoding="utf-8")):
                markers[name] = f"tests/hidden/{path.name}"
    return markers


def leaks(layout: CourseLayout, folder: Path) -> list[str]:
    """Every solution line, hidden test or secret folder found in `folder` (empty: clean)."""
    found = []
    (singles, pairs), hidden = _secret_lines(layout), _hidden_markers(layout)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if (
            relative.parts[0] == "solutions"
            or relative.parts[:2] == ("tests", "hidden")
            or path.name == "manifest.json"
        ):
            found.append(f"{relative}: a secret file in the release")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        stripped = [line.strip() for line in text.splitlines() if line.strip()]
        adjacent = set(itertools.pairwise(stripped))
        found += [
            f"{relative}: contains solution line {secret!r} ({origin})"
            for secret, origin in singles.items()
            if secret in text
        ]
        found += [
            f"{relative}: contains solution lines {pair[0]!r} / {pair[1]!r} ({origin})"
            for pair, origin in pairs.items()
            if pair in adjacent
        ]
        found += [
            f"{relative}: names hidden test {name!r} ({origin})"
            for name, origin in hidden.items()
            if re.search(rf"\b{re.escape(name)}\b", text)
        ]
    return found


def _copy_tree_py(source: Path, target: Path) -> None:
    for path in sorted(source.glob("*.py")):
        shutil.copy2(path, target / path.name)


def build_student_release(layout: CourseLayout, out: Path) -> Path:
    """Write the student release into `out` (which must not exist or be empty); LeakError on a leak."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out={str(out)!r} is not empty; choose a new folder for the release")
    with tempfile.TemporaryDirectory(
        prefix="release-", dir=out.parent if out.parent.exists() else None
    ) as scratch:
        staging = Path(scratch) / "release"
        (staging / "exercises").mkdir(parents=True)
        (staging / "tests" / "graded").mkdir(parents=True)
        for file_name, text in expected_stubs(layout).items():
            (staging / "exercises" / file_name).write_text(text, encoding="utf-8")
        _copy_tree_py(layout.public_tests, staging / "tests" / "graded")
        if (layout.root / "tests" / "conftest.py").is_file():
            shutil.copy2(layout.root / "tests" / "conftest.py", staging / "tests" / "conftest.py")
        (staging / "GRADING.md").write_text(_GRADING_README, encoding="utf-8")
        found = leaks(layout, staging)
        if found:
            raise LeakError("the student release would leak:\n" + "\n".join(found[:20]))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.move(str(staging), str(out))
    return out


def build_instructor_bundle(layout: CourseLayout, out: Path, *, hidden: bool = True) -> Manifest:
    """Write solutions, stubs, public and hidden tests, probes and manifest.json into `out`."""
    out = Path(out)
    manifest = build_manifest(layout, hidden=hidden)
    for folder, relative in (
        (layout.solutions, "solutions"),
        (layout.public_tests, "tests/graded"),
        (layout.hidden_tests, "tests/hidden"),
        (layout.root / "probes", "probes"),
    ):
        if folder.is_dir():
            (out / relative).mkdir(parents=True, exist_ok=True)
            _copy_tree_py(folder, out / relative)
    for file_name, text in expected_stubs(layout).items():
        write_text_atomic(out / "exercises" / file_name, text)
    if (layout.root / "tests" / "conftest.py").is_file():
        shutil.copy2(layout.root / "tests" / "conftest.py", out / "tests" / "conftest.py")
    save_manifest(manifest, out / "manifest.json")
    return manifest
