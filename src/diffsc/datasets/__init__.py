"""Loaders for the real data sets of the paper's experiments.

Each loader takes a data directory (an argument, or the environment variable
``DIFFSC_DATA``), reads the files in their canonical published formats,
checks their checksums, and says where to get a missing file.
"""

from ._files import data_dir

__all__ = ["data_dir"]
