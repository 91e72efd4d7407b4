from course_lib.grade.fixtures import _worker_zygote, exercise  # noqa: F401  (the fixtures)
