"""Loaders for the real data sets of the paper's experiments.

Each loader takes a data directory (an argument, or the environment variable
``DIFFSC_DATA``), reads the files in their canonical published formats,
checks their checksums, and says where to get a missing file.
"""

from ._files import data_dir

__all__ = ["data_dir"]

from .polarity import ReviewPolarity, load_review_polarity  # noqa: E402

__all__ += ["ReviewPolarity", "load_review_polarity"]

from .audio import Clip, audio_features, load_audio_folder, load_gtzan, snippet_spectra  # noqa: E402
from .mnist import load_mnist  # noqa: E402

__all__ += ["Clip", "load_mnist", "load_audio_folder", "load_gtzan", "snippet_spectra", "audio_features"]
