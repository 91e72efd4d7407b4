"""Small helpers every notebook uses: device choice, seeding, the course mode, an environment report.

The course runs in two modes (see `course_mode`): "fast" (synthetic data, small images, seconds per
training run; what CI executes) and "full" (real datasets, pretrained encoders, longer schedules).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from tqdm import tqdm

Weights = TypeVar("Weights")  # a torchvision weights name or enum, e.g. "DEFAULT"

__all__ = [
    "get_device",
    "seed_everything",
    "course_mode",
    "rehearsal",
    "pretrained",
    "data_dir",
    "count_parameters",
    "environment_report",
    "in_colab",
    "interactive",
    "progress_bar",
    "median_seconds",
    "seed_verdict",
]

_MODES = ("fast", "full")


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then the CPU.

    `prefer` ("cuda", "mps", "cpu") forces a choice and fails loudly when it is not available,
    so a notebook never silently trains on the CPU when the learner asked for a GPU.
    """
    if prefer is not None:
        if prefer not in ("cuda", "mps", "cpu"):
            raise ValueError(f"prefer must be 'cuda', 'mps', 'cpu' or None, got {prefer!r}")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("prefer='cuda' but torch.cuda.is_available() is False")
        if prefer == "mps" and not _mps_available():
            raise RuntimeError("prefer='mps' but the MPS backend is not available")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated.

    `deterministic=True` also asks cuDNN and PyTorch for deterministic kernels (slower on a GPU;
    on the CPU the course is deterministic without it).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def course_mode() -> str:
    """Return "fast" or "full".

    The `COURSE_MODE` environment variable wins when set; otherwise "full" when CUDA is available
    and "fast" when not.
    """
    value = os.environ.get("COURSE_MODE")
    if value is not None and value.strip():
        mode = value.strip().lower()
        if mode not in _MODES:
            raise ValueError(f"COURSE_MODE must be 'fast' or 'full', got {value!r}")
        return mode
    return "full" if torch.cuda.is_available() else "fast"


def rehearsal() -> bool:
    """True for a full-mode rehearsal: `COURSE_MODE=full COURSE_REHEARSAL=1`.

    A rehearsal runs every full-mode path on a CPU without the internet: full mode's models and
    image sizes, the real data-set classes reading small fixture trees in the real archives'
    layouts (`course_lib.data.fixtures`), pretrained weights replaced by random initialisation,
    and only the numbers of steps and images (and batch sizes) cut.
    """
    return course_mode() == "full" and os.environ.get("COURSE_REHEARSAL", "").strip() == "1"


def pretrained(weights: Weights) -> Weights | None:
    """`weights` as given, or None (random initialisation, said once per call) in a rehearsal."""
    if weights is None or not rehearsal():
        return weights
    print(
        f"rehearsal: random initialisation instead of the pretrained weights {weights!s} "
        "(nothing is downloaded)"
    )
    return None


def data_dir() -> Path:
    """Where real datasets are cached: `COURSE_DATA_DIR`, default `~/.cache/course_lib`."""
    value = os.environ.get("COURSE_DATA_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "course_lib"


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def interactive() -> bool:
    """True when a person watches: a terminal or a running Jupyter kernel (progress bars on),
    False when output goes to a log file (CI)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return sys.stdout.isatty() or (shell is not None and getattr(shell, "kernel", None) is not None)


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm progress bar: a live widget in a notebook, text in a terminal.

    A notebook executed to be saved (`tools/build_notebooks.py` sets COURSE_TEXT_PROGRESS=1) gets
    text bars on stdout: a saved widget keeps no state, so it would show a bar frozen at 0 % where
    the text shows how the run ended. Transient bars (`leave=False`, e.g. one epoch's batches) are
    left out there: nested text bars move the cursor, which a saved notebook cannot replay.
    """
    if os.environ.get("COURSE_TEXT_PROGRESS") == "1":
        from tqdm.std import tqdm

        kwargs.setdefault("file", sys.stdout)
        if not kwargs.get("leave", True):
            kwargs["disable"] = True
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)


def median_seconds(
    fn: Callable[[], object], repeats: int = 3, device: str | torch.device = "cpu", warmup: int = 0
) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls.

    On CUDA the device is synchronised before and after every call: kernels run asynchronously,
    so a timer without synchronisation measures only how fast they are queued. The median, not
    the mean, keeps one slow call (a busy machine, a first-call allocation) from skewing it.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seed_verdict(differences: np.ndarray | list[float]) -> str:
    """What per-seed differences (method minus baseline, one per seed) let a lesson claim.

    "higher on every seed" or "lower on every seed" only when every seed agrees in sign (a tie
    agrees with neither); otherwise "within seed spread". With three seeds, two equally good
    methods agree by chance one time in four (either sign), so it is a floor, not a test.
    """
    differences = np.asarray(differences, dtype=float)
    if differences.ndim != 1 or differences.size == 0 or not np.isfinite(differences).all():
        raise ValueError(f"expected a 1-D array of finite differences, got {differences!r}")
    if (differences > 0).all():
        return "higher on every seed"
    if (differences < 0).all():
        return "lower on every seed"
    return "within seed spread: not the same sign on every seed"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `model` (all of them, or only those with `requires_grad`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def environment_report() -> dict[str, str]:
    """Versions, device and mode as an ordered dict of strings (notebook 00 prints it)."""
    import torchvision

    device = get_device()
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cuda available": str(torch.cuda.is_available()),
        "course mode": course_mode(),
        "data dir": str(data_dir()),
        "colab": str(in_colab()),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    for name in ("albumentations", "matplotlib"):
        try:
            module = __import__(name)
            report[name] = module.__version__
        except ImportError:
            report[name] = "not installed"
    return report
