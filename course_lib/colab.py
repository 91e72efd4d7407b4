"""The first cell of every notebook: installs the course package on Colab, does nothing elsewhere.

The repository address lives in `course_lib.REPOSITORY_URL`; `tools/build_notebooks.py` writes this
cell into each notebook and a test checks that every notebook carries it unchanged.
"""

from __future__ import annotations

from course_lib import REPOSITORY_URL

__all__ = ["SETUP_CELL_MARKER", "setup_cell_source"]

SETUP_CELL_MARKER = "# Course set-up cell"


def setup_cell_source() -> str:
    """Source code of the set-up cell (without a trailing newline)."""
    return f'''{SETUP_CELL_MARKER}: on Google Colab, clone the course and install course_lib; elsewhere do nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    course = "/content/course"
    if not os.path.isdir(course):
        url = "{REPOSITORY_URL}"
        subprocess.run(["git", "clone", "--depth", "1", url, course], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", course], check=True)
    sys.path.insert(0, course)'''
