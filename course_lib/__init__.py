"""course_lib: the companion library of the course "Semantic Segmentation with PyTorch".

Submodules are imported on demand, so `import course_lib` stays fast:

    from course_lib import models, losses, metrics, data, transforms, engine, inference, viz, utils, crf
"""

__version__ = "0.1.0"

REPOSITORY_URL = "https://github.com/semantic-segmentation-course/semantic-segmentation-course"
"""The one place that names the course repository (used by the Colab set-up cell and the README)."""
