"""Stub generation, the exercises/ sync check and the student-release leak check."""

from __future__ import annotations

import ast
import shutil
import textwrap
from pathlib import Path

import pytest

import course_grader
from course_grader.instructor import build
from course_grader.instructor.release import LeakError, build_student_release, leaks
from course_grader.layout import CourseLayout, course_layout
from course_grader.stubs import MarkerError, make_stub, solution_regions, task_names

DEMO = Path(__file__).parent / "grading_cases" / "demo"

SOLUTION = textwrap.dedent('''\
    """Module docstring."""

    import torch


    def area(h: int, w: int) -> int:
        """Pixels of an h x w image."""
        # BEGIN SOLUTION
        # HINT: multiply.
        # HINT: a second hint line.
        return h * w
        # END SOLUTION


    class Net(torch.nn.Module):
        def forward(self, x):
            y = x + 0
            if True:
                # BEGIN SOLUTION
                # HINT: double it.
                y = 2 * y
                return y
                # END SOLUTION
            return x


    def helper():
        return 1
    ''')


def test_stub_replaces_regions_by_hints_and_raise():
    stub = make_stub(SOLUTION)
    expected = SOLUTION.replace(
        "    # BEGIN SOLUTION\n    # HINT: multiply.\n    # HINT: a second hint line.\n"
        "    return h * w\n    # END SOLUTION\n",
        "    # HINT: multiply.\n    # HINT: a second hint line.\n    raise NotImplementedError\n",
    ).replace(
        "            # BEGIN SOLUTION\n            # HINT: double it.\n            y = 2 * y\n            return y\n"
        "            # END SOLUTION\n",
        "            # HINT: double it.\n            raise NotImplementedError\n",
    )
    assert expected != SOLUTION
    assert stub == expected
    ast.parse(stub)
    assert '"""Pixels of an h x w image."""' in stub and "def helper():\n    return 1" in stub


def test_regions_and_task_names():
    regions = solution_regions(SOLUTION)
    assert [(r.begin_line, r.end_line) for r in regions] == [(8, 12), (19, 23)]
    assert regions[0].body == ("    return h * w",)
    assert regions[1].indent == " " * 12
    assert task_names(SOLUTION) == ["area", "Net"]


@pytest.mark.parametrize(
    "broken, complaint",
    [
        ("def f():\n    # BEGIN SOLUTIONS\n    return 1\n    # END SOLUTION\n", "misspelt"),
        ("def f():\n    #BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "misspelt"),
        ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
        ("def f():\n    return 1\n    # END SOLUTION\n", "without a matching"),
        (
            "def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n",
            "inside the region",
        ),
        ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "column 0"),
        (
            "def f():\n    if x:\n        # BEGIN SOLUTION\n        return 1\n    # END SOLUTION\n",
            "align them",
        ),
        ("def f():\n    return 1\n", "no '# BEGIN SOLUTION' region"),
    ],
)
def test_marker_misuse_is_reported_with_its_line(broken, complaint):
    with pytest.raises(MarkerError, match=complaint):
        make_stub(broken, filename="sol.py")


def _tiny_course(tmp_path: Path) -> CourseLayout:
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "ex01_area.py").write_text(SOLUTION)
    return CourseLayout(tmp_path)


def test_regenerate_then_check(tmp_path, capsys):
    layout = _tiny_course(tmp_path)
    assert build.main(["--root", str(tmp_path), "--check"]) == 1
    assert "ex01_area.py is missing" in capsys.readouterr().out
    assert build.main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / "exercises" / "ex01_area.py").read_text() == make_stub(SOLUTION)
    assert build.main(["--root", str(tmp_path), "--check"]) == 0
    assert build.regenerate(layout) == []  # nothing left to write
    (tmp_path / "exercises" / "ex01_area.py").write_text(make_stub(SOLUTION) + "# edited\n")
    assert build.main(["--root", str(tmp_path), "--check"]) == 1
    assert "differs" in capsys.readouterr().out


def test_build_reports_marker_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "ex02_bad.py").write_text(
        "def f():\n    # BEGIN SOLUTION\n    return 1\n"
    )
    assert build.main(["--root", str(tmp_path)]) == 1
    assert "ex02_bad.py:2" in capsys.readouterr().err


def test_real_exercises_are_in_sync_with_solutions():
    problems = build.out_of_sync(course_layout())
    assert problems == [], "run `python -m course_grader.instructor.build`:\n" + "\n".join(problems)


def test_demo_exercises_are_in_sync_with_solutions():
    assert build.out_of_sync(CourseLayout(DEMO)) == []


def test_student_release_has_stubs_and_public_tests_only(tmp_path):
    out = build_student_release(CourseLayout(DEMO), tmp_path / "release")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "GRADING.md",
        "exercises/ex90_demo.py",
        "exercises/ex91_more.py",
        "tests/graded/conftest.py",
        "tests/graded/test_ex90_demo.py",
        "tests/graded/test_ex91_more.py",
    ]
    released = "\n".join((out / f).read_text() for f in files)
    assert "torch.bincount(mask.flatten(), minlength=num_classes)" not in released
    assert "test_count_labels_with_absent_class" not in released
    assert leaks(CourseLayout(DEMO), out) == []


def test_release_refuses_a_leaking_public_test(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(DEMO, course)
    public = course / "tests" / "graded" / "test_ex91_more.py"
    public.write_text(
        public.read_text() + "\n\ndef _spoiler(mask, num_classes):\n"
        "    return torch.bincount(mask.flatten(), minlength=num_classes)  # see test_add_one_on_empty\n"
    )
    layout = CourseLayout(course)
    with pytest.raises(LeakError, match="contains solution line 'return torch.bincount") as caught:
        build_student_release(layout, tmp_path / "release")
    assert "hidden test 'test_add_one_on_empty'" in str(caught.value)
    assert not (tmp_path / "release").exists()
    assert build.main(["--root", str(course), "--release", str(tmp_path / "release2")]) == 1


def test_real_student_release_passes_the_leak_check(tmp_path):
    layout = course_layout()
    if not layout.exercise_names():
        pytest.skip("no exercise in solutions/ yet")
    out = build_student_release(layout, tmp_path / "release")
    assert sorted(p.name for p in (out / "exercises").iterdir()) == [
        f"{n}.py" for n in layout.exercise_names()
    ]
    assert not (out / "solutions").exists() and not (out / "tests" / "hidden").exists()


def _imports(path: Path) -> set[str]:
    """Every module a file imports, also inside functions (`from a import b` counts a and a.b)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            targets.add(node.module)
            targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return targets


def _module_name(path: Path, top: Path) -> str:
    parts = path.relative_to(top.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_grader_modules_import_each_other_without_a_cycle():
    """Every import between the grader's modules, also inside functions, points one way; the
    learner's side never imports the instructor's, and course_lib never imports the grader."""
    top = Path(course_grader.__file__).parent
    files = {_module_name(path, top): path for path in top.rglob("*.py")}
    graph = {
        name: {t for t in _imports(path) if t in files and t != name}
        for name, path in files.items()
    }
    graph = {
        name: {t for t in targets if not name.startswith(t + ".")}  # a package's own parent
        for name, targets in graph.items()
    }
    assert "course_grader.stubs" in graph["course_grader.instructor.release"]  # sees real imports

    def cycle_from(name, trail):
        if name in trail:
            return trail[trail.index(name) :] + [name]
        for target in sorted(graph[name]):
            found = cycle_from(target, trail + [name])
            if found:
                return found
        return None

    cycles = [cycle for name in sorted(graph) if (cycle := cycle_from(name, []))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
    upward = sorted(
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if name != "course_grader.__main__"  # the one entry point of both sides
        and not name.startswith("course_grader.instructor")
        and target.startswith("course_grader.instructor")
    )
    assert not upward, f"the learner's side imports the instructor's: {upward}"
    library = Path(course_grader.__file__).parents[1] / "course_lib"
    into_grader = sorted(
        str(path.relative_to(library))
        for path in library.rglob("*.py")
        if any(t.split(".")[0] == "course_grader" for t in _imports(path))
    )
    assert not into_grader, f"course_lib imports the grader in {into_grader}"
