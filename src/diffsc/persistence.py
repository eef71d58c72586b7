"""Saving a learned model to one file and loading it back, in any process.

Supported models: :class:`~diffsc.SparseCodingLayer`, :class:`~diffsc.CodePredictor`
(coder and head) and the fitted scikit-learn estimators of
:mod:`diffsc.estimators`. The file is what :func:`torch.save` writes (a zip
archive) holding one dictionary of plain data:

==================  ===========================================================
``format``          the marker ``"diffsc-model"``
``format_version``  :data:`FORMAT_VERSION`, raised whenever the layout changes
``diffsc_version``  the library that wrote the file (recorded, not checked)
``torch_version``   likewise
``class``           the model's class name, e.g. ``"SparseCodingLayer"``
``model``           the settings and tensors that rebuild it
==================  ===========================================================

Only tensors, numbers, strings, None, lists, tuples and dictionaries are
stored, so :func:`load` reads the file with ``torch.load(weights_only=True)``,
which never runs code from the file, and rebuilds only the classes above.
An estimator's NumPy arrays (e.g. string class labels) and a
``numpy.random.RandomState`` given as ``random_state`` are stored as such
plain data and come back as what they were.

A file loads with any diffsc that reads its format version, whatever the
diffsc and torch versions that wrote it; a newer format is refused with a
message naming both versions.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
import torch

from .module import SparseCodingLayer
from .supervised import CodePredictor

FORMAT = "diffsc-model"
FORMAT_VERSION = 1

_PRIMITIVES = (type(None), bool, int, float, str)


class ModelFileError(ValueError):
    """A file that :func:`load` cannot read as a diffsc model.

    Raised for a file that is not a diffsc model file, is corrupt or
    truncated, or was written by a newer format version. The message names
    the file and says what is wrong.
    """


def save(model, path) -> None:
    """Save a learned model to one file, atomically.

    The file is first written in full to a temporary file in the same
    directory, flushed to disk, then renamed over ``path``: a reader sees the
    old file or the new one, never a partial one, and an error (or an
    interrupt) while writing leaves ``path`` as it was and no temporary file.

    Parameters
    ----------
    model : SparseCodingLayer, CodePredictor or a fitted estimator of :mod:`diffsc.estimators`
        Tensors are saved on their current device and in their dtype.
    path : str or os.PathLike
        The file to write (replaced if it exists); its directory must exist.
        The suffix is free; ``.pt`` is customary.

    Raises
    ------
    TypeError
        ``model`` is of another type (subclasses included: they would load
        as their base class), or an estimator's parameter or fitted state
        holds a value that cannot be stored as plain data.
    FileNotFoundError
        The directory of ``path`` does not exist.
    sklearn.exceptions.NotFittedError
        ``model`` is an estimator that has not been fitted.

    Examples
    --------
    >>> import tempfile, pathlib, torch, diffsc
    >>> from diffsc.persistence import load, save
    >>> layer = diffsc.SparseCodingLayer(torch.eye(4, 6, dtype=torch.float64), strength=0.2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save(layer, pathlib.Path(tmp) / "layer.pt")
    ...     loaded = load(pathlib.Path(tmp) / "layer.pt")
    >>> x = torch.rand(3, 4, dtype=torch.float64)
    >>> torch.equal(loaded(x), layer(x)), loaded.config() == layer.config()
    (True, True)
    """
    from . import __version__  # imported here: the package imports this module

    path = Path(os.fspath(path))
    # Build the whole payload first so that a model we cannot save creates no file.
    name, record = _record(model)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "diffsc_version": __version__,
        "torch_version": str(torch.__version__),  # a str subclass that weights_only refuses
        "class": name,
        "model": record,
    }
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"cannot save {path}: no such directory", str(directory))
    # Same directory as the target: os.replace is atomic only within one file system.
    temporary = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    # O_EXCL: never write through a file or link someone else made; mode 0o666
    # minus the umask gives the permissions an ordinary new file would have.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the rename makes it visible
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_directory(directory)


def load(path, map_location="cpu"):
    """Load a model written by :func:`save`, in this or any other process.

    Parameters
    ----------
    path : str or os.PathLike
    map_location : str, torch.device or None
        Where the tensors go, as in :func:`torch.load` (default: the CPU, so
        a model saved on a GPU loads anywhere); None keeps the saved devices.

    Returns
    -------
    SparseCodingLayer, CodePredictor or an estimator of :mod:`diffsc.estimators`
        A model whose codes and predictions are bitwise those of the saved
        one (on the same device and library versions). A learnable
        ``strength`` or ``prior_mean`` is again a parameter.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError
        Not a diffsc model file, a corrupt or truncated one, or one written in
        a newer format version than this library reads.

    Examples
    --------
    >>> import tempfile, pathlib, diffsc
    >>> from diffsc.persistence import ModelFileError, load
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "notes.txt"
    ...     _ = path.write_text("not a model")
    ...     try:
    ...         load(path)
    ...     except ModelFileError as err:
    ...         print(str(err).replace(str(path), "notes.txt"))
    notes.txt: not a diffsc model file (not the zip archive that torch.save writes); the file may be truncated
    """
    from . import __version__

    path = Path(os.fspath(path))
    # One open file for the checks and the load: no race with a concurrent save.
    with open(path, "rb") as file:
        try:
            with zipfile.ZipFile(file) as archive:
                # torch.load does not verify the archive's checksums, so a
                # flipped bit in a tensor would otherwise load silently.
                damaged = archive.testzip()
        except (zipfile.BadZipFile, EOFError):
            raise ModelFileError(
                f"{path}: not a diffsc model file (not the zip archive that torch.save writes); "
                "the file may be truncated"
            ) from None
        if damaged is not None:
            raise ModelFileError(f"{path}: corrupt file (checksum mismatch in its entry {damaged!r})")
        file.seek(0)
        try:
            payload = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises RuntimeError, UnpicklingError, ... for bad archives
            raise ModelFileError(
                f"{path}: corrupt or not a diffsc model file (torch.load failed: {type(err).__name__})"
            ) from err

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a diffsc model file (a torch file without the {FORMAT!r} marker)")
    version = payload.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path}: corrupt file (invalid format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written in model format version {version} (by diffsc "
            f"{payload.get('diffsc_version', '?')}), but diffsc {__version__} reads format versions "
            f"up to {FORMAT_VERSION}; upgrade diffsc to load it"
        )
    name = payload.get("class")
    record = payload.get("model")
    if not isinstance(name, str) or not isinstance(record, dict):
        raise ModelFileError(f"{path}: corrupt file (no model class or record)")
    builder = _builder(name)
    if builder is None:
        raise ModelFileError(f"{path}: unknown model class {name!r} (not in diffsc {__version__})")
    try:
        return builder(record)
    except Exception as err:  # missing keys, wrong shapes, bad settings: all mean a bad file
        raise ModelFileError(
            f"{path}: corrupt or incompatible file, cannot rebuild the {name} ({type(err).__name__}: {err})"
        ) from err


# --- what is stored for each kind of model ----------------------------------


def _record(model) -> tuple[str, dict]:
    """Class name and record of ``model`` (raises TypeError if unsupported)."""
    # Exact types: a subclass saved as its base would load without its behaviour.
    if type(model) is SparseCodingLayer:
        return "SparseCodingLayer", {"config": _settings(model), "state": _state(model)}
    if type(model) is CodePredictor:
        return "CodePredictor", {
            "config": _settings(model),
            "coder_config": _settings(model.coder),
            "state": _state(model),
        }
    estimators = _estimators()
    name = type(model).__name__
    if _is_estimator_class(type(model), estimators) and getattr(estimators, name, None) is type(model):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(model, msg="model: this %(name)s is not fitted yet; call 'fit' before saving it")
        return name, {
            "params": _encode(model.get_params(deep=False), f"model: {name} parameter"),
            "state": _encode(model._fitted_state(), f"model: {name} fitted state"),
        }
    raise TypeError(
        f"model: cannot save a {type(model).__module__}.{type(model).__qualname__}; expected a "
        "SparseCodingLayer, a CodePredictor or an estimator of diffsc.estimators"
    )


def _settings(module: torch.nn.Module) -> dict:
    # Settings are what the user passed (tol may be a numpy float): store plain values.
    return _encode(module.config(), f"model: {type(module).__name__} setting")


def _state(module: torch.nn.Module) -> dict:
    # A plain dict: the state_dict's OrderedDict carries metadata we do not need.
    return {key: value.detach() for key, value in module.state_dict().items()}


def _builder(name: str):
    if name == "SparseCodingLayer":
        return _layer_record
    if name == "CodePredictor":
        return _predictor
    estimators = _estimators()
    cls = getattr(estimators, name, None) if estimators is not None else None
    # Only a class defined in diffsc.estimators with the protocol: a name read
    # from the file never reaches anything else.
    if _is_estimator_class(cls, estimators):
        return lambda record: _estimator(cls, record)
    return None


def _is_estimator_class(cls, estimators) -> bool:
    return (
        estimators is not None
        and isinstance(cls, type)
        and cls.__module__ == estimators.__name__
        and all(hasattr(cls, method) for method in ("get_params", "_fitted_state", "_set_fitted_state"))
    )


def _layer(config: dict, state: dict, prefix: str = "") -> SparseCodingLayer:
    """A layer of the right shapes and settings; the caller then loads ``state``."""
    # strength and prior_mean pass the constructor's checks as exp(log);
    # load_state_dict then copies the stored logarithms exactly (exp∘log may round).
    return SparseCodingLayer(
        state[prefix + "basis"],
        strength=state[prefix + "log_strength"].exp(),
        prior_mean=state[prefix + "log_prior_mean"].exp(),
        **_decode(config),
    )


def _layer_record(record: dict) -> SparseCodingLayer:
    layer = _layer(record["config"], record["state"])
    layer.load_state_dict(record["state"])
    return layer


def _predictor(record: dict) -> CodePredictor:
    coder = _layer(record["coder_config"], record["state"], prefix="coder.")
    model = CodePredictor(coder, **_decode(record["config"]))
    model.load_state_dict(record["state"])
    return model


def _estimator(cls, record: dict):
    model = cls(**_decode(record["params"]))
    model._set_fitted_state(_decode(record["state"]))
    return model


def _estimators():
    """The module :mod:`diffsc.estimators`, or None where it is not there."""
    try:
        return importlib.import_module(".estimators", __package__)
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.estimators":  # a missing dependency is a real error
            raise
        return None


# --- plain data that torch.load(weights_only=True) reads back ---------------

# Marks an encoded numpy array or RandomState; a model's own dictionaries may not use it.
_TAG = "__diffsc_type__"


def _encode(value, where: str):
    """``value`` as tensors, primitives, lists, tuples and dicts only."""
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars would be pickled as numpy objects
    if type(value) in _PRIMITIVES:
        return value
    if isinstance(value, torch.Tensor):
        # clone: a view would save its whole underlying storage.
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            native = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))  # torch: native order only
            return {_TAG: "ndarray", "data": torch.from_numpy(native).clone()}
        if value.dtype.kind in "UO":  # e.g. string class labels
            return {_TAG: "ndarray", "data": _encode(value.tolist(), where), "dtype": value.dtype.str}
    if type(value) is np.random.RandomState:
        # sklearn's random_state may be one; its full state keeps get_params() exact.
        return {_TAG: "RandomState", "state": _encode(value.get_state(legacy=True), where)}
    if type(value) in (list, tuple):
        return type(value)(_encode(item, where) for item in value)
    if type(value) is dict:
        if _TAG in value:
            raise TypeError(f"{where}: a dictionary may not use the key {_TAG!r}")
        for key in value:
            if type(key) not in _PRIMITIVES:
                raise TypeError(f"{where}: cannot save a dictionary key of type {type(key).__name__}")
        return {key: _encode(item, f"{where} {key!r}") for key, item in value.items()}
    raise TypeError(f"{where}: cannot save a value of type {type(value).__name__}")


def _decode(value):
    if isinstance(value, dict):
        kind = value.get(_TAG)
        if kind == "ndarray":
            data = value["data"]
            if isinstance(data, torch.Tensor):
                return data.cpu().numpy()
            return np.array(data, dtype=np.dtype(value["dtype"]))
        if kind == "RandomState":
            random_state = np.random.RandomState()
            random_state.set_state(_decode(value["state"]))
            return random_state
        if kind is not None:
            raise ValueError(f"unknown encoded type {kind!r}")
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(item) for item in value)
    return value


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; best effort elsewhere)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
