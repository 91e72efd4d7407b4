"""Rehearse full mode on a CPU without the internet: every notebook's GPU path, top to bottom.

Full mode (real data sets, pretrained encoders, long schedules) is what a learner runs on Colab,
and it cannot run here: no GPU, no downloads. A rehearsal runs the same cells with

    COURSE_MODE=full COURSE_REHEARSAL=1 COURSE_DATA_DIR=<fixture trees>

- the real data-set classes read small trees in the archives' exact layouts
  (`course_lib.data.fixtures.write_rehearsal_data`);
- pretrained weights become random initialisation (`course_lib.utils.pretrained`, which says so);
- each notebook cuts only its numbers of steps and images (and batch sizes) under
  `if REHEARSAL:`; models and image sizes stay full mode's.
Nothing is written back into the notebooks.

    python tools/rehearse.py            # all notebooks, with the time of each
    python tools/rehearse.py 04 07      # the notebooks whose names start with 04 / 07
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

from course_lib.data.fixtures import write_rehearsal_data

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def rehearse(script: Path, data: Path, timeout: int = 900) -> float:
    """Execute one notebook's full-mode path in rehearsal; returns the seconds it took."""
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    environment = {"COURSE_MODE": "full", "COURSE_REHEARSAL": "1", "COURSE_DATA_DIR": str(data)}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        return time.perf_counter() - start
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def notebooks(prefixes=()) -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")
                  if not prefixes or any(p.name.startswith(x) for x in prefixes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--data", type=Path,
                        help="folder for the fixture trees (default: a temporary folder)")
    args = parser.parse_args(argv)
    scripts = notebooks(args.prefixes)
    if not scripts:
        print("no notebook matched", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rehearsal_") as scratch:
        data = args.data or Path(scratch)
        write_rehearsal_data(data)
        total = 0.0
        for script in scripts:
            seconds = rehearse(script, data)
            total += seconds
            print(f"{script.name}: rehearsed in {seconds:.1f} s", flush=True)
    print(f"all: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
