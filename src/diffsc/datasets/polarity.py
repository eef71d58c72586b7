"""The movie review polarity data set v2.0 (Pang & Lee, ACL 2004).

2,000 tokenised, lower-cased film reviews from the IMDb archive of
rec.arts.movies.reviews, 1,000 positive and 1,000 negative, read straight
from the published archive ``review-polarity/review_polarity.tar.gz`` (the
members ``txt_sentoken/{pos,neg}/cv*.txt``; nothing is extracted to disk).

The cross-validation folds are the published ones. The archive's
``poldata.README.2.0`` says: "File names consist of a cross-validation tag
plus the name of the original html file. The ten folds used in the Pang/Lee
ACL 2004 paper's experiments were: fold 1: files tagged cv000 through cv099
[...] fold 10: files tagged cv900 through cv999", e.g. ``neg/cv114_19501.txt``
is in fold 2. Here folds are numbered from 0, so a file's fold is the first
digit of its tag: ``cv000``–``cv099`` are fold 0, ..., ``cv900``–``cv999``
fold 9. Each fold holds 100 positive and 100 negative reviews.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass

import numpy as np

from ._files import data_dir as _data_dir
from ._files import require

FOLDER = "review-polarity"
ARCHIVE = "review_polarity.tar.gz"
SHA256 = "82eb283277058cc9a7b18a413231140178dea4043af63827b8627f71189d3068"
SOURCE = (
    "http://www.cs.cornell.edu/people/pabo/movie-review-data/ "
    "(review_polarity.tar.gz, 'polarity dataset v2.0'), saved as "
    f"<data dir>/{FOLDER}/{ARCHIVE}"
)
N_FOLDS = 10
# txt_sentoken/<label>/cv<fold digit><two digits>_<html id>.txt
MEMBER = re.compile(r"txt_sentoken/(pos|neg)/cv(\d)\d\d_\d+\.txt")


@dataclass(frozen=True)
class ReviewPolarity:
    """The reviews, their labels and their published folds.

    Attributes
    ----------
    texts : list of str, length N
        The reviews as published: tokenised, lower-cased, one sentence a line.
    labels : (N,) int64 array
        1 for a positive review, 0 for a negative one.
    folds : (N,) int64 array
        The published cross-validation fold, 0..9 (module docstring).
    names : list of str, length N
        Each review's member path in the archive, e.g.
        ``"txt_sentoken/neg/cv114_19501.txt"``; reviews are in the sorted
        order of these paths (all negative reviews, then all positive ones).
    """

    texts: list[str]
    labels: np.ndarray
    folds: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def split(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(train, test)``: the test set is ``fold``, training all the others.

        Examples
        --------
        >>> data = ReviewPolarity(["a", "b", "c"], np.array([0, 1, 1]), np.array([0, 1, 0]), ["x", "y", "z"])
        >>> data.split(0)
        (array([1]), array([0, 2]))
        """
        if fold not in range(N_FOLDS):
            raise ValueError(f"fold: must be an integer in 0..{N_FOLDS - 1}, got {fold!r}")
        return np.flatnonzero(self.folds != fold), np.flatnonzero(self.folds == fold)


def load_review_polarity(data_dir=None, *, verify: bool = True) -> ReviewPolarity:
    """Read the polarity data set v2.0 from ``<data_dir>/review-polarity/review_polarity.tar.gz``.

    Parameters
    ----------
    data_dir : path, optional
        The folder holding the data sets; default ``$DIFFSC_DATA``.
    verify : bool
        Check the archive's SHA-256 against the published file's
        (``82eb2832...``); turn off only for test fixtures.

    Returns
    -------
    ReviewPolarity
        2,000 reviews in the sorted order of their member paths.

    Raises
    ------
    FileNotFoundError
        No data directory, or no archive in it (the message says where to
        download it).
    ValueError
        The archive's checksum differs from the published one, or it holds
        no reviews.

    Notes
    -----
    With the data present (``tests/test_datasets_polarity.py`` checks this)::

        data = load_review_polarity("/path/to/data")
        len(data), int(data.labels.sum())          # (2000, 1000)
        np.bincount(data.folds).tolist()           # [200] * 10, 100 of each label
        train, test = data.split(0)                # indices: folds 1..9, fold 0
    """
    path = _data_dir(data_dir) / FOLDER / ARCHIVE
    require(path, SHA256 if verify else None, SOURCE)
    reviews = []
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            match = MEMBER.fullmatch(member.name)
            if match is None or not member.isfile():
                continue
            text = archive.extractfile(member).read().decode("utf-8")
            reviews.append((member.name, text, int(match[1] == "pos"), int(match[2])))
    if not reviews:
        raise ValueError(f"{path}: holds no txt_sentoken/{{pos,neg}}/cv*.txt reviews; download it again from {SOURCE}")
    reviews.sort()
    names, texts, labels, folds = zip(*reviews)
    return ReviewPolarity(
        texts=list(texts),
        labels=np.array(labels, dtype=np.int64),
        folds=np.array(folds, dtype=np.int64),
        names=list(names),
    )


__all__ = ["ReviewPolarity", "load_review_polarity"]
