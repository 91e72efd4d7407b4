from course_grader.learner.fixtures import _worker_zygote, exercise  # noqa: F401  (the fixtures)
