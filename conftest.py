"""Root conftest: pytest loads it even when run without paths (`python -m pytest --target ...`)."""

from course_grader.learner.fixtures import add_target_option


def pytest_addoption(parser):
    add_target_option(parser)
