"""Atomic writes: the new content appears whole, or the old content stays (no temporary files left)."""

import pytest

from course_lib.atomic import atomic_open, write_bytes_atomic, write_text_atomic


def test_writes_create_the_folder_and_replace_the_content(tmp_path):
    path = tmp_path / "reports" / "grades.csv"
    write_text_atomic(path, "student,total\n")
    assert path.read_text() == "student,total\n"
    write_bytes_atomic(path, "ané\n".encode())
    assert path.read_text(encoding="utf-8") == "ané\n"
    assert [p.name for p in path.parent.iterdir()] == ["grades.csv"]


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_write_keeps_the_previous_file(tmp_path, interruption):
    path = tmp_path / "metrics.json"
    path.write_text('{"epoch": 1}')
    with pytest.raises(type(interruption)):
        with atomic_open(path) as stream:
            stream.write(b'{"epoch": 2, "half')  # bytes reach the temporary file ...
            raise interruption  # ... and the run dies before the rename
    assert path.read_text() == '{"epoch": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "temporary file left behind"
