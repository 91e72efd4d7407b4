"""The grader's self-test material: a demo course and bad submissions, graded by tests/test_grade_*.py.

Nothing here is collected by a plain pytest run; the grader runs the demo's graded tests explicitly.
"""

collect_ignore_glob = ["*"]
