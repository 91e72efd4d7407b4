"""The grader's command line.

Learner (public tests of one exercise, a points table):

    python -m course_grader ex01 [--target exercises|solutions|PATH] [--json]

Instructor (a whole class, see docs/grading.md):

    python -m course_grader --submissions DIR --out OUT [--workers N] [--hidden] [--manifest FILE]
    python -m course_grader --package OUT      (Gradescope autograder zip, GitHub Classroom workflow)

Exit status: 0 when every test passed, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from course_grader.learner.check import check, grade_exercise
from course_grader.learner.runner import course_layout

__all__ = ["main"]


def _learner(args: argparse.Namespace) -> int:
    try:
        graded = (
            grade_exercise(args.exercise, args.target)
            if args.json
            else check(args.exercise, args.target)
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        from course_grader.learner import sandbox

        record = {
            "exercise": graded.exercise,
            "tests": [t.to_json() for t in graded.tests],
            "score": graded.score,
            "max_score": graded.max_score,
            "status": graded.status,
            "sandbox": sandbox.mode(),
        }
        print(json.dumps(record, indent=1))
    return 0 if graded.all_passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_grader", description="Grade course exercises."
    )
    parser.add_argument("exercise", nargs="?", help="exercise to check, e.g. ex01")
    parser.add_argument(
        "--target", default="exercises", help="exercises | solutions | PATH (default: exercises)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--submissions", type=Path, help="folder with one folder or zip per student"
    )
    parser.add_argument("--out", type=Path, help="where the class reports go")
    parser.add_argument("--workers", type=int, default=1, help="students graded in parallel")
    parser.add_argument("--hidden", action="store_true", help="also run the hidden tests")
    parser.add_argument("--exercises", nargs="*", help="grade only these exercises (default: all)")
    parser.add_argument(
        "--manifest", type=Path, help="use this manifest instead of running the solutions first"
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run learner code without the bubblewrap sandbox (needed for --hidden where bwrap is unavailable)",
    )
    parser.add_argument(
        "--package",
        type=Path,
        metavar="OUT",
        help="write the Gradescope and GitHub Classroom files",
    )
    args = parser.parse_args(argv)
    if args.no_sandbox:
        import os

        os.environ["COURSE_GRADE_SANDBOX"] = "off"
    if args.package:
        from course_grader.instructor.package import write_packages

        for path in write_packages(course_layout(), args.package):
            print(f"wrote {path}")
        return 0
    if args.submissions:
        if args.out is None:
            parser.error("--submissions needs --out")
        from course_grader.instructor.bulk import grade_class
        from course_grader.instructor.manifest import ManifestError
        from course_grader.learner import sandbox

        if args.hidden and not args.no_sandbox and not sandbox.available():
            print(
                f"error: grading with --hidden runs untrusted code next to the hidden tests and "
                f"needs the sandbox, which is unavailable: {sandbox.reason()}. Pass --no-sandbox "
                "to grade without it (inside a container).",
                file=sys.stderr,
            )
            return 2
        if args.hidden and not args.no_sandbox:
            import os

            os.environ["COURSE_GRADE_SANDBOX"] = "required"  # never silently unsandboxed

        try:
            graded = grade_class(
                args.submissions,
                args.out,
                workers=args.workers,
                hidden=args.hidden,
                exercises=args.exercises,
                manifest_path=args.manifest,
            )
        except (ValueError, ManifestError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        modes = sorted({row["sandbox"] for row in graded["rows"]}) or [sandbox.mode()]
        print(f"learner code ran with sandbox: {', '.join(modes)}")
        return 0
    if not args.exercise:
        parser.error("name an exercise (e.g. ex01) or use --submissions DIR --out OUT")
    return _learner(args)


if __name__ == "__main__":
    sys.exit(main())
