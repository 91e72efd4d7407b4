"""Packaging for learning platforms: a Gradescope autograder zip and a GitHub Classroom workflow.

    python -m course_grader --package OUT

writes
- OUT/gradescope/autograder.zip: `setup.sh` and `run_autograder` at the top level, and `course/`
  (course_lib, pyproject.toml, README.md, exercises/, tests/conftest.py, tests/graded/,
  tests/hidden/, probes/ and manifest.json; never solutions/). `run_autograder` writes a fallback
  results.json first, grades /autograder/submission with the hidden tests and the bundled
  manifest, and copies the student's results.json into /autograder/results/.
- OUT/github-classroom/classroom.yml: a workflow with one command grader per exercise
  (`python -m course_grader exNN`, all-or-nothing for that exercise's public points) and the
  reporter step. Hidden tests stay with the instructor: grade them with `--submissions`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from course_grader.instructor.manifest import build_manifest
from course_grader.layout import CourseLayout
from course_grader.records import Manifest
from course_lib.atomic import write_bytes_atomic, write_text_atomic

__all__ = ["RUN_AUTOGRADER", "SETUP_SH", "classroom_workflow", "gradescope_zip", "write_packages"]

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image.
set -euo pipefail
apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv
python3 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --upgrade pip
/autograder/venv/bin/python -m pip install -e "/autograder/source/course[dev]"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; the student's files are in /autograder/submission.
set -u
mkdir -p /autograder/results
cat > /autograder/results/results.json <<'JSON'
{"score": 0, "output": "The autograder did not finish; your instructor has been told.", "tests": []}
JSON
export COURSE_GRADE_ROOT=/autograder/source/course
export COURSE_MODE=fast
work=$(mktemp -d)
mkdir -p "$work/submissions"
cp -r /autograder/submission "$work/submissions/student"
/autograder/venv/bin/python -m course_grader --submissions "$work/submissions" --out "$work/out" \\
    --hidden --manifest /autograder/source/course/manifest.json
if [ -f "$work/out/student/results.json" ]; then
    cp "$work/out/student/results.json" /autograder/results/results.json.tmp
    mv /autograder/results/results.json.tmp /autograder/results/results.json
fi
"""

_COURSE_FOLDERS = (
    "course_lib",
    "course_grader",
    "exercises",
    "tests/graded",
    "tests/hidden",
    "probes",
)
_COURSE_FILES = ("pyproject.toml", "README.md", "tests/conftest.py")


def _add_file(bundle: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = (0o755 if executable else 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    bundle.writestr(info, data)


def gradescope_zip(layout: CourseLayout, manifest: Manifest) -> bytes:
    """The autograder zip (bytes) for `layout`, with `manifest` inside; never solutions/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        _add_file(bundle, "setup.sh", SETUP_SH.encode(), executable=True)
        _add_file(bundle, "run_autograder", RUN_AUTOGRADER.encode(), executable=True)
        _add_file(
            bundle,
            "course/manifest.json",
            (json.dumps(manifest.to_json(), indent=1) + "\n").encode(),
        )
        for folder in _COURSE_FOLDERS:
            root = layout.root / folder
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                if (
                    path.is_file()
                    and "__pycache__" not in path.parts
                    and not path.name.endswith((".pyc", ".egg-info"))
                ):
                    _add_file(bundle, f"course/{path.relative_to(layout.root)}", path.read_bytes())
        for name in _COURSE_FILES:
            if (layout.root / name).is_file():
                _add_file(bundle, f"course/{name}", (layout.root / name).read_bytes())
    return buffer.getvalue()


def classroom_workflow(manifest: Manifest, timeout_minutes: int = 10) -> str:
    """GitHub Classroom workflow: one command grader per exercise plus the reporter."""
    steps, runners, env = [], [], []
    for name in manifest.exercises:
        short = name.split("_")[0]
        points = sum(
            t.points for t in manifest.tests if t.exercise == name and t.visibility == "public"
        )
        steps.append(
            f"      - name: {name}\n        id: {short}\n"
            "        uses: classroom-resources/autograding-command-grader@v1\n"
            f"        with:\n          test-name: {name}\n          setup-command: ''\n"
            f"          command: python -m course_grader {short}\n          timeout: {timeout_minutes}\n"
            f"          max-score: {points:g}\n"
        )
        runners.append(short)
        env.append(f'          {short.upper()}_RESULTS: "${{{{steps.{short}.outputs.result}}}}"\n')
    return (
        "# GitHub Classroom autograding: copy to .github/workflows/classroom.yml in the template repository.\n"
        "name: Autograding Tests\n'on': [push, repository_dispatch]\npermissions:\n  checks: write\n  actions: read\n"
        "  contents: read\njobs:\n  run-autograding-tests:\n    runs-on: ubuntu-latest\n"
        "    if: github.actor != 'github-classroom[bot]'\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - uses: actions/setup-python@v5\n        with:\n          python-version: '3.11'\n"
        '      - run: python -m pip install -e ".[dev]"\n'
        + "".join(steps)
        + "      - name: Autograding Reporter\n        uses: classroom-resources/autograding-grading-reporter@v1\n"
        "        env:\n" + "".join(env) + f"        with:\n          runners: {','.join(runners)}\n"
    )


def write_packages(layout: CourseLayout, out: Path, manifest: Manifest | None = None) -> list[Path]:
    """Write the Gradescope zip and the GitHub Classroom workflow into `out`; return their paths."""
    manifest = manifest or build_manifest(layout, hidden=True)
    out = Path(out)
    zip_path = out / "gradescope" / "autograder.zip"
    workflow_path = out / "github-classroom" / "classroom.yml"
    write_bytes_atomic(zip_path, gradescope_zip(layout, manifest))
    write_text_atomic(workflow_path, classroom_workflow(manifest))
    return [zip_path, workflow_path]
