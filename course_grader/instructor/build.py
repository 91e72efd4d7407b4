"""Build the learner's files from the reference solutions.

    python -m course_grader.instructor.build                 # regenerate exercises/ from solutions/
    python -m course_grader.instructor.build --check         # exit 1 when exercises/ is out of sync
    python -m course_grader.instructor.build --release OUT   # student release (stubs, public tests, README)
    python -m course_grader.instructor.build --instructor OUT  # solutions, hidden tests, manifest

`--release` refuses to finish (exit 1) when any solution line or hidden test reaches OUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_grader.layout import CourseLayout, course_layout
from course_grader.stubs import MarkerError, expected_stubs
from course_lib.atomic import write_text_atomic

__all__ = ["main", "out_of_sync", "regenerate"]


def out_of_sync(layout: CourseLayout) -> list[str]:
    """One line per stub in exercises/ that differs from what the solutions give (empty: in sync)."""
    problems = []
    for file_name, text in expected_stubs(layout).items():
        stub_path = layout.exercises / file_name
        if not stub_path.is_file():
            problems.append(f"{stub_path} is missing")
        elif stub_path.read_text(encoding="utf-8") != text:
            problems.append(
                f"{stub_path} differs from the stub generated from solutions/{file_name}"
            )
    return problems


def regenerate(layout: CourseLayout) -> list[Path]:
    """Write every stub that changed into exercises/; return the paths written."""
    written = []
    for file_name, text in expected_stubs(layout).items():
        stub_path = layout.exercises / file_name
        if not stub_path.is_file() or stub_path.read_text(encoding="utf-8") != text:
            write_text_atomic(stub_path, text)
            written.append(stub_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_grader.instructor.build", description=__doc__.split("\n")[1]
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="course checkout (default: this one)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when exercises/ is out of sync"
    )
    parser.add_argument(
        "--release", type=Path, metavar="OUT", help="write the student release into OUT"
    )
    parser.add_argument(
        "--instructor", type=Path, metavar="OUT", help="write the instructor bundle into OUT"
    )
    args = parser.parse_args(argv)
    layout = CourseLayout(args.root.resolve()) if args.root else course_layout()
    try:
        if args.check:
            problems = out_of_sync(layout)
            for line in problems:
                print(f"out of sync: {line}")
            if problems:
                print(
                    "run `python -m course_grader.instructor.build` to regenerate exercises/ from solutions/"
                )
                return 1
            print(
                f"exercises/ is in sync with solutions/ ({len(layout.exercise_names())} exercises)"
            )
            return 0
        if args.release or args.instructor:
            from course_grader.instructor.release import (
                build_instructor_bundle,
                build_student_release,
            )

            if args.release:
                build_student_release(layout, args.release)
                print(f"student release written to {args.release} (leak check passed)")
            if args.instructor:
                manifest = build_instructor_bundle(layout, args.instructor, hidden=True)
                print(
                    f"instructor bundle written to {args.instructor} ({len(manifest.tests)} tests in the manifest)"
                )
            return 0
        written = regenerate(layout)
        for path in written:
            print(f"wrote {path}")
        print(
            f"{len(written)} stub(s) regenerated, {len(layout.exercise_names()) - len(written)} unchanged"
        )
        return 0
    except (MarkerError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
