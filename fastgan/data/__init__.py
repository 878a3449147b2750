"""Datasets: the zip format, conversion of image folders and zips, inspection, and the training loader.

``ImageDataset``     images and labels of a dataset zip or image folder, for torch DataLoaders
``make_dataset``     convert images (any size or mode) into a clean dataset zip (``fastgan data make``)
``inspect_dataset``  counts, shapes, modes, labels and content hash of a dataset (``fastgan data inspect``)
``layout``           the zip layout (``NNNNN/imgNNNNNNNN.png`` + dataset.json), image sources and content hashing
"""
from .convert import make_dataset
from .dataset import ImageDataset
from .inspect import inspect_dataset

__all__ = ["ImageDataset", "make_dataset", "inspect_dataset"]
