"""Taking a submission in: the whitelist, limits, and zip safety (no grading run needed)."""

from __future__ import annotations

import os
import zipfile

from course_grader.instructor.bulk import student_folder_name
from course_grader.instructor.intake import MAX_FILE_BYTES, take_in

NAMES = ["ex01_types", "ex02_fcn"]


def test_folder_whitelist_nested_files_and_duplicates(tmp_path):
    student = tmp_path / "alice"
    (student / "exercises").mkdir(parents=True)
    (student / "ex01_types.py").write_text("x = 1\n")
    (student / "exercises" / "ex01_types.py").write_text("x = 2\n")
    (student / "exercises" / "ex02_fcn.py").write_text("y = 1\n")
    (student / "conftest.py").write_text("")
    (student / "ex03_other.py").write_text("")
    (student / "big").mkdir()
    (student / "big" / "ex02_fcn.py").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    os.symlink("/etc/hostname", student / "link.py")
    intake = take_in(student, NAMES)
    assert intake.student == "alice"
    assert intake.files == {"ex01_types.py": b"x = 1\n", "ex02_fcn.py": b"y = 1\n"}
    report = "\n".join(intake.ignored)
    assert (
        "conftest.py: not an exercise file" in report
        and "ex03_other.py: not an exercise file" in report
    )
    assert "exercises/ex01_types.py: a second copy" in report
    assert "over the" in report and "link.py: a symbolic link" in report


def test_zip_entries_never_leave_memory(tmp_path):
    archive = tmp_path / "bob.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../ex01_types.py", "escaped = True\n")
        bundle.writestr("/abs/ex02_fcn.py", "escaped = True\n")
        bundle.writestr("sub/ex02_fcn.py", "fine = True\n")
        bundle.writestr("ex01_types.py", b"\xff\xfe latin")
    intake = take_in(archive, NAMES)
    assert intake.student == "bob" and intake.files == {"ex02_fcn.py": b"fine = True\n"}
    report = "\n".join(intake.ignored)
    assert report.count("unsafe path") == 2 and "not UTF-8" in report
    assert not (tmp_path.parent / "ex01_types.py").exists()


def test_corrupt_zip_and_hash(tmp_path):
    (tmp_path / "carol.zip").write_bytes(b"not a zip")
    intake = take_in(tmp_path / "carol.zip", NAMES)
    assert intake.files == {} and "not a readable zip" in intake.ignored[0]
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "ex01_types.py").write_text("a = 1\n")
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "ex01_types.py").write_text("a = 2\n")
    first, second = take_in(tmp_path / "d1", NAMES), take_in(tmp_path / "d2", NAMES)
    assert (
        first.sha256() != second.sha256()
        and first.sha256() == take_in(tmp_path / "d1", NAMES).sha256()
    )


def test_student_folder_names_are_safe():
    assert student_folder_name("../../etc") == "_.._etc"
    assert student_folder_name("Zoë Smith") == "Zo__Smith"
    assert student_folder_name("grades.csv") == "student_grades.csv"
    assert student_folder_name("...") == "student"


def test_upper_case_zip_suffix_is_a_zip(tmp_path):
    archive = tmp_path / "dave.ZIP"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ex01_types.py", "x = 1\n")
    intake = take_in(archive, NAMES)
    assert intake.student == "dave" and intake.files == {"ex01_types.py": b"x = 1\n"}
    assert intake.ignored == []


def test_zips_choose_among_copies_like_folders(tmp_path):
    layout = [  # archive order: nested copies first
        ("old/deeper/ex01_types.py", b"x = 3\n"),
        ("old/ex01_types.py", b"x = 2\n"),
        ("ex01_types.py", b"x = 1\n"),
        ("b/ex02_fcn.py", b"y = 2\n"),
        ("a/ex02_fcn.py", b"y = 1\n"),
    ]
    folder = tmp_path / "erin"
    with zipfile.ZipFile(tmp_path / "erin.zip", "w") as bundle:
        for name, data in layout:
            bundle.writestr(name, data)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    from_zip, from_folder = take_in(tmp_path / "erin.zip", NAMES), take_in(folder, NAMES)
    expected = {"ex01_types.py": b"x = 1\n", "ex02_fcn.py": b"y = 1\n"}
    assert from_zip.files == from_folder.files == expected
    assert sorted(from_zip.ignored) == sorted(from_folder.ignored)
    assert (
        "old/ex01_types.py: a second copy of ex01_types.py; ex01_types.py is graded"
        in "\n".join(from_zip.ignored)
    )


def test_encodings_python_reads_are_taken_in(tmp_path):
    student = tmp_path / "frank"
    student.mkdir()
    bom = b"\xef\xbb\xbfx = 'caf\xc3\xa9'\n"
    latin = "# -*- coding: latin-1 -*-\nx = 'café'\n".encode("latin-1")
    (student / "ex01_types.py").write_bytes(bom)
    (student / "ex02_fcn.py").write_bytes(latin)
    assert take_in(student, NAMES).files == {"ex01_types.py": bom, "ex02_fcn.py": latin}
    (student / "ex02_fcn.py").write_bytes("x = 'café'\n".encode("latin-1"))  # no coding line
    (student / "ex01_types.py").write_bytes(b"# coding: no-such-codec\nx = 1\n")
    intake = take_in(student, NAMES)
    assert intake.files == {}
    assert all("not UTF-8 text" in line for line in intake.ignored) and len(intake.ignored) == 2
