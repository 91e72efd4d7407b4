"""Options shared by the whole test suite.

`--target` chooses which copy of the exercises the graded tests (tests/graded/) check:
`exercises` (the learner's copy, the default), `solutions` (the reference answers) or a folder path.
"""

from __future__ import annotations

import os

os.environ.setdefault("COURSE_MODE", "fast")


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        action="store",
        default="exercises",
        help="which exercise files the graded tests check: exercises | solutions | PATH",
    )
