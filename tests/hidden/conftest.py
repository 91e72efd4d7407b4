"""Hidden graded tests: same contract as tests/graded/ (the `exercise` fixture, points markers).

They never ship in the student release (`python -m course_grader.instructor.build --release` refuses to
finish if one would), run with `python -m course_grader --submissions DIR --out OUT --hidden`,
and are reported to students after the due date. Name the files `test_exNN_hidden*.py` so their
module names differ from the public ones.
"""

from course_grader.learner.fixtures import _worker_zygote, exercise  # noqa: F401  (the fixtures)
