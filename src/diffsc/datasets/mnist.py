"""MNIST handwritten digits, read from the official gzipped IDX files."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from . import _files

SOURCE = (
    "the official page http://yann.lecun.com/exdb/mnist/ "
    "(or a mirror such as https://ossci-datasets.s3.amazonaws.com/mnist/)"
)

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# SHA-256 of the *uncompressed* IDX content: gzip output differs with the
# compressor and its settings (the train images here were re-gzipped), but the
# IDX bytes inside are the published ones.
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte),
# the number of dimensions.
IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049

# (resolved path, size, mtime_ns, expected sha256) of files already hashed in
# this process: hashing the 47 MB of uncompressed train images costs a few
# tenths of a second, which a second load in the same process need not repeat.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def load_mnist(split="train", data_dir=None, *, verify=True) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits of one split, as flattened images in [0, 1] and labels.

    Reads ``<data_dir>/mnist/train-images-idx3-ubyte.gz`` and
    ``train-labels-idx1-ubyte.gz`` (``split="train"``, 60,000 digits), or
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``
    (``split="test"``, 10,000 digits): the official gzipped IDX files.

    Parameters
    ----------
    split : {"train", "test"}
    data_dir : str or Path, optional
        The data directory; defaults to the environment variable
        ``DIFFSC_DATA``.
    verify : bool
        Check the SHA-256 of each file's uncompressed content against the
        published one. A file verified once is not hashed again in the same
        process while its size and modification time are unchanged.

    Returns
    -------
    images : ndarray of shape (N, 784), float64
        Row-major 28 x 28 pixels scaled to [0, 1] (pixel / 255; 0 is the
        background).
    labels : ndarray of shape (N,), int64
        The digits 0-9.

    Raises
    ------
    FileNotFoundError
        No data directory, or a file is missing; the message says where to
        download it.
    ValueError
        A checksum mismatch, or a file that is not a well-formed IDX file.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = _files.data_dir(data_dir) / "mnist"
    paths = [folder / name for name in FILES[split]]
    for path in paths:
        _check(path, SHA256[path.name] if verify else None)
    images = _read_idx(paths[0], IMAGES_MAGIC)
    labels = _read_idx(paths[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels"
        )
    images = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return images, labels.astype(np.int64)


def _check(path: Path, expected: str | None) -> None:
    """Raise unless ``path`` exists and its uncompressed content has SHA-256 ``expected``."""
    if expected is None or not path.is_file():
        _files.require(path, None, SOURCE)
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    try:
        _files.require(path, expected, SOURCE, opener=gzip.open)
    except ValueError as err:
        raise ValueError(f"{err} (the checksum is of the uncompressed content, as `gzip -dc` gives it)") from err
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err}); download it again from {SOURCE}") from err
    _VERIFIED.add(key)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The unsigned-byte array stored in a gzipped IDX file with the given magic number.

    IDX: a big-endian int32 magic number ``0x0000TTNN`` (type ``TT`` = 0x08
    for unsigned bytes, ``NN`` dimensions), ``NN`` big-endian uint32 sizes,
    then the elements in row-major order.
    """
    try:
        with gzip.open(path, "rb") as f:
            content = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err}); download it again from {SOURCE}") from err
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(content) < header:
        raise ValueError(f"{path}: {len(content)} bytes is too short for an IDX header of {header} bytes")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise ValueError(
            f"{path}: bad IDX magic number {found} (expected {magic}: unsigned bytes in {ndim} dimensions)"
        )
    shape = tuple(int(n) for n in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(content) - header != size:
        raise ValueError(
            f"{path}: the header gives shape {shape}, i.e. {size} bytes of data, "
            f"but the file holds {len(content) - header}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)
