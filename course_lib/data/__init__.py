"""Datasets of the course: synthetic data that needs no download, folders of images and masks,
and the real datasets of full mode."""

from course_lib.data.synthetic import CellsDataset, ScenesDataset

__all__ = ["ScenesDataset", "CellsDataset"]
