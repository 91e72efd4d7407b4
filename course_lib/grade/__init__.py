"""The exercise grader: `python -m course_lib.grade exNN` and the fixtures of tests/graded/."""
