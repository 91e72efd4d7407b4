from course_lib.grade.fixtures import exercise  # noqa: F401
