"""Options and fixtures shared by the whole test suite.

`--target` chooses which copy of the exercises the graded tests (tests/graded/) check:
`exercises` (the learner's copy, the default), `solutions` (the reference answers) or a folder path.
"""

from __future__ import annotations

import os

import pytest

from course_grader.learner.fixtures import add_target_option

os.environ.setdefault("COURSE_MODE", "fast")


def pytest_addoption(parser):
    add_target_option(parser)


@pytest.fixture
def restore_threads():
    """Give PyTorch's thread count back after a test that sets it (the command line does)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
