"""Datasets of the course: synthetic data that needs no download, folders of images and masks,
and the real datasets of full mode."""

from course_lib.data.folder import SegmentationFolder
from course_lib.data.membranes import membrane_sample, write_membrane_folder
from course_lib.data.real import OxfordPetSegmentation, PascalVOCSegmentation, medical_dataset
from course_lib.data.split import train_val_indices, train_val_split
from course_lib.data.synthetic import CellsDataset, ScenesDataset, classic_scene

__all__ = [
    "ScenesDataset",
    "CellsDataset",
    "classic_scene",
    "SegmentationFolder",
    "train_val_indices",
    "train_val_split",
    "membrane_sample",
    "write_membrane_folder",
    "OxfordPetSegmentation",
    "PascalVOCSegmentation",
    "medical_dataset",
]
