"""Saving and loading models: round trips, a fresh process, atomic writes, bad files."""

import copy
import importlib
import json
import os
import pickle
import re
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

import diffsc
from diffsc.persistence import FORMAT_VERSION, ModelFileError, load, save
from helpers import random_basis, random_inputs

D, K = 6, 4
DTYPE = torch.float64


def make_layer(family="gaussian", learn_strength=False, learn_prior_mean=False, dtype=DTYPE):
    g = torch.Generator().manual_seed(0)
    return diffsc.SparseCodingLayer(
        random_basis(D, K, g, dtype),
        family=family,
        strength=torch.linspace(0.05, 0.2, K, dtype=dtype),  # per atom: a tensor, not a float, goes through
        prior_mean=0.02,
        learn_strength=learn_strength,
        learn_prior_mean=learn_prior_mean,
        tol=1e-10 if dtype == torch.float64 else None,  # None: float32's own default
    )


def make_predictor(task="classification"):
    g = torch.Generator().manual_seed(1)
    model = diffsc.CodePredictor(make_layer(learn_strength=True), 3, task)
    with torch.no_grad():  # seeded values instead of nn.Linear's global-generator draw
        model.head.weight.copy_(torch.randn(3, K, generator=g, dtype=DTYPE))
        model.head.bias.copy_(torch.randn(3, generator=g, dtype=DTYPE))
        model.code_mean.copy_(torch.rand(K, generator=g, dtype=DTYPE))
        model.code_scale.copy_(torch.rand(K, generator=g, dtype=DTYPE) + 0.5)
    return model


def inputs(family="gaussian", n=5, seed=2):
    return random_inputs(family, n, D, torch.Generator().manual_seed(seed))


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def rewrite(path, edit):
    """Load the raw payload, change it, write it back (a hand-crafted bad file)."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


# --- round trips in this process ----------------------------------------------


@pytest.mark.parametrize("family", ["gaussian", "softmax"])
@pytest.mark.parametrize("learn", [(False, False), (True, False), (True, True)], ids=["fixed", "lam", "lam+p"])
def test_layer_round_trip(tmp_path, family, learn):
    layer = make_layer(family, *learn)
    path = tmp_path / "layer.pt"
    save(layer, str(path))  # a str path as well as a Path
    loaded = load(path)
    assert type(loaded) is diffsc.SparseCodingLayer
    assert loaded.config() == layer.config()
    assert_same_state(loaded, layer)
    for name, learnable in zip(("log_strength", "log_prior_mean"), learn):
        assert isinstance(getattr(loaded, name), torch.nn.Parameter) == learnable
        assert (name in dict(loaded.named_parameters())) == learnable
    assert isinstance(loaded.basis, torch.nn.Parameter) and loaded.basis.requires_grad
    x = inputs(family)
    assert torch.equal(loaded(x), layer(x))


def test_float32_layer_keeps_its_dtype(tmp_path):
    layer = make_layer(dtype=torch.float32)
    save(layer, tmp_path / "layer.pt")
    loaded = load(tmp_path / "layer.pt")
    assert loaded.basis.dtype == torch.float32
    x = inputs().float()
    assert torch.equal(loaded(x), layer(x))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predictor_round_trip(tmp_path, task):
    model = make_predictor(task)
    save(model, tmp_path / "model.pt")
    loaded = load(tmp_path / "model.pt", map_location=torch.device("cpu"))
    assert type(loaded) is diffsc.CodePredictor
    assert loaded.config() == model.config()
    assert loaded.coder.config() == model.coder.config()
    assert_same_state(loaded, model)
    assert isinstance(loaded.coder.log_strength, torch.nn.Parameter)
    x = inputs()
    assert torch.equal(loaded(x), model(x))


def test_file_records_versions(tmp_path):
    save(make_layer(), tmp_path / "layer.pt")
    payload = torch.load(tmp_path / "layer.pt", weights_only=True)
    assert payload["format"] == "diffsc-model"
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["diffsc_version"] == diffsc.__version__
    assert payload["torch_version"] == str(torch.__version__)
    assert payload["class"] == "SparseCodingLayer"


def test_map_location_none_keeps_devices(tmp_path):
    save(make_layer(), tmp_path / "layer.pt")
    assert load(tmp_path / "layer.pt", map_location=None).basis.device.type == "cpu"


# --- a fresh process ----------------------------------------------------------

# Loads each model and writes its outputs on the saved inputs to .npy files.
FRESH = """
import json, sys
import numpy as np, torch
from diffsc.persistence import load
for model_path, x_path, method, out_path in json.loads(sys.argv[1]):
    model = load(model_path)
    x = np.load(x_path)
    if method == "__call__":
        out = model(torch.from_numpy(x)).detach().numpy()
    else:
        out = getattr(model, method)(x)
    np.save(out_path, out)
"""


def test_save_then_load_in_a_fresh_process_gives_identical_outputs(tmp_path, request):
    cases = [(make_layer(learn_strength=True), "__call__"), (make_predictor(), "__call__")]
    if _estimators_module() is not None:
        cases += [(request.getfixturevalue("transformer"), "transform"),
                  (request.getfixturevalue("classifier"), "predict_proba")]
    x = inputs().numpy()
    np.save(tmp_path / "x.npy", x)
    jobs, expected = [], []
    for i, (model, method) in enumerate(cases):
        save(model, tmp_path / f"model{i}.pt")
        jobs.append([str(tmp_path / f"model{i}.pt"), str(tmp_path / "x.npy"), method, str(tmp_path / f"out{i}.npy")])
        out = model(torch.from_numpy(x)).detach().numpy() if method == "__call__" else getattr(model, method)(x)
        expected.append(out)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", FRESH, json.dumps(jobs)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for i, want in enumerate(expected):
        got = np.load(tmp_path / f"out{i}.npy")
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), f"case {i} differs"  # bit for bit


# --- atomic writes --------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, error):
    path = tmp_path / "model.pt"
    old = make_layer()
    save(old, path)
    before = path.read_bytes()

    def failing_save(obj, file):
        file.write(b"PK\x03\x04 half a file")  # fail midway through writing
        raise error

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(type(error)) as info:
        save(make_layer(learn_strength=True), path)
    assert info.value is error  # raised unchanged
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]
    monkeypatch.undo()
    assert_same_state(load(path), old)


def test_failed_save_to_a_new_path_creates_nothing(tmp_path, monkeypatch):
    def failing_save(obj, file):
        file.write(b"partial")
        raise OSError("no space left")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="^no space left$"):
        save(make_layer(), tmp_path / "model.pt")
    assert os.listdir(tmp_path) == []


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.pt"
    save(make_layer(), path)
    save(make_predictor(), path)
    assert type(load(path)) is diffsc.CodePredictor
    assert os.listdir(tmp_path) == ["model.pt"]


def test_save_into_a_missing_directory(tmp_path):
    path = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError) as info:
        save(make_layer(), path)
    assert str(info.value) == f"[Errno 2] cannot save {path}: no such directory: '{path.parent}'"


class MyLayer(diffsc.SparseCodingLayer):
    pass


@pytest.mark.parametrize(
    "model, name",
    [
        (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
        (MyLayer(torch.eye(3, dtype=DTYPE)), f"{__name__}.MyLayer"),
        ({"basis": torch.eye(2)}, "builtins.dict"),
    ],
    ids=["torch module", "subclass", "dict"],
)
def test_save_refuses_other_objects(tmp_path, model, name):
    with pytest.raises(TypeError) as info:
        save(model, tmp_path / "model.pt")
    assert str(info.value) == (
        f"model: cannot save a {name}; expected a SparseCodingLayer, a CodePredictor "
        "or an estimator of diffsc.estimators"
    )
    assert os.listdir(tmp_path) == []


# --- bad files --------------------------------------------------------------------

NOT_ZIP = "not a diffsc model file (not the zip archive that torch.save writes); the file may be truncated"


def test_missing_file(tmp_path):
    path = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError) as info:
        load(path)
    assert info.value.filename == str(path)
    assert str(info.value) == f"[Errno 2] No such file or directory: '{path}'"


def _write_random(path):
    path.write_bytes(np.random.default_rng(0).bytes(500))


def _write_empty(path):
    path.write_bytes(b"")


def _truncate(path):
    save(make_layer(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cut_last_bytes(path):
    save(make_layer(), path)
    path.write_bytes(path.read_bytes()[:-10])


def _flip_a_bit(path):
    layer = make_layer()
    save(layer, path)
    data = bytearray(path.read_bytes())
    i = data.find(layer.basis.detach().numpy().tobytes())  # the basis's raw bytes in the archive
    assert i > 0
    data[i + 3] ^= 0x10
    path.write_bytes(bytes(data))


def _plain_dict(path):
    torch.save({"basis": torch.eye(3)}, path)


def _plain_tensor(path):
    torch.save(torch.eye(3), path)


def _unsafe_pickle(path):
    # A torch file whose pickle needs a global that weights_only refuses to import.
    torch.save({"format": "diffsc-model", "extra": types.SimpleNamespace(a=1)}, path)


def _other_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")


def _pickle_file(path):
    path.write_bytes(pickle.dumps({"format": "diffsc-model"}))


@pytest.mark.parametrize(
    "make, message",
    [
        (_write_random, NOT_ZIP),
        (_write_empty, NOT_ZIP),
        (_pickle_file, NOT_ZIP),
        (_truncate, NOT_ZIP),
        (_cut_last_bytes, NOT_ZIP),
        (_flip_a_bit, "corrupt file (checksum mismatch in its entry 'archive/data/0')"),
        (_plain_dict, "not a diffsc model file (a torch file without the 'diffsc-model' marker)"),
        (_plain_tensor, "not a diffsc model file (a torch file without the 'diffsc-model' marker)"),
        (_unsafe_pickle, "corrupt or not a diffsc model file (torch.load failed: UnpicklingError)"),
        (_other_zip, "corrupt or not a diffsc model file (torch.load failed: RuntimeError)"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_unreadable_files(tmp_path, make, message):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert str(info.value) == f"{path}: {message}"
    assert isinstance(info.value, ValueError)


def test_a_newer_format_version_names_both_versions(tmp_path):
    path = tmp_path / "model.pt"
    save(make_layer(), path)
    rewrite(path, lambda p: p.update(format_version=FORMAT_VERSION + 1, diffsc_version="9.0"))
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert str(info.value) == (
        f"{path}: written in model format version {FORMAT_VERSION + 1} (by diffsc 9.0), but diffsc "
        f"{diffsc.__version__} reads format versions up to {FORMAT_VERSION}; upgrade diffsc to load it"
    )


def _set(key, value):
    return lambda payload: payload.update({key: value})


def _drop_state(key):
    return lambda payload: payload["model"]["state"].pop(key)


def _bad_head(payload):
    payload["model"]["state"]["head.weight"] = torch.zeros(5, K, dtype=DTYPE)


@pytest.mark.parametrize(
    "model, edit, message",
    [
        (make_layer, _set("format_version", "1"), "corrupt file (invalid format version '1')"),
        (make_layer, _set("format_version", 0), "corrupt file (invalid format version 0)"),
        (make_layer, _set("class", None), "corrupt file (no model class or record)"),
        (make_layer, _set("model", [1, 2]), "corrupt file (no model class or record)"),
        (make_layer, _set("class", "Pipeline"),
         f"unknown model class 'Pipeline' (not in diffsc {diffsc.__version__})"),
        # Imported into diffsc.estimators but no estimator of ours: never rebuilt from a file.
        (make_layer, _set("class", "BaseEstimator"),
         f"unknown model class 'BaseEstimator' (not in diffsc {diffsc.__version__})"),
        (make_layer, _drop_state("basis"),
         "corrupt or incompatible file, cannot rebuild the SparseCodingLayer (KeyError: 'basis')"),
        (make_predictor, _bad_head,
         "corrupt or incompatible file, cannot rebuild the CodePredictor (RuntimeError: Error(s) in loading "
         "state_dict for CodePredictor:\n\tsize mismatch for head.weight: copying a param with shape "
         "torch.Size([5, 4]) from checkpoint, the shape in current model is torch.Size([3, 4]).)"),
    ],
    ids=["version str", "version 0", "no class", "bad record", "unknown class", "imported class", "missing tensor",
         "wrong shape"],
)
def test_inconsistent_files(tmp_path, model, edit, message):
    path = tmp_path / "model.pt"
    save(model(), path)
    rewrite(path, edit)
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert str(info.value) == f"{path}: {message}"


# --- estimators: the protocol, with a stand-in, and the real ones -----------------


class StandIn(BaseEstimator):
    """An estimator of diffsc.estimators as persistence sees it: params and fitted state."""

    def __init__(self, alpha=0.1, weights=None, random_state=None):
        self.alpha = alpha
        self.weights = weights
        self.random_state = random_state

    def fit(self, X=None, y=None):
        self.state_ = {
            "basis": torch.arange(6, dtype=DTYPE).reshape(2, 3),
            "classes": np.array(["cat", "dog"]),
            "labels": np.array(["a", 1, None], dtype=object),
            "counts": np.arange(3, dtype=np.uint32)[::-1],  # a strided view, unsigned
            "big_endian": np.arange(3, dtype=">f8"),
            "scalar": np.float64(0.5),
            "history": [{"epoch": 0, "loss": float("nan"), "accuracy": None}],
            "shape": (2, 3),
        }
        return self

    def _fitted_state(self):
        return self.state_

    def _set_fitted_state(self, state):
        self.state_ = state


StandIn.__module__ = "diffsc.estimators"


@pytest.fixture
def stand_in(monkeypatch):
    """StandIn as a class of diffsc.estimators (a stub module where that does not exist)."""
    try:
        module = importlib.import_module("diffsc.estimators")
    except ModuleNotFoundError:
        module = types.ModuleType("diffsc.estimators")
        monkeypatch.setitem(sys.modules, "diffsc.estimators", module)
    monkeypatch.setattr(module, "StandIn", StandIn, raising=False)
    return StandIn


def test_estimator_protocol_round_trip(tmp_path, stand_in):
    model = stand_in(alpha=np.array([0.1, 0.2]), weights=[1, (2, 3)], random_state=np.random.RandomState(5)).fit()
    save(model, tmp_path / "est.pt")
    loaded = load(tmp_path / "est.pt")
    assert type(loaded) is stand_in
    params = loaded.get_params()
    np.testing.assert_array_equal(params["alpha"], model.alpha)
    assert params["weights"] == [1, (2, 3)]
    assert params["random_state"].randint(1000, size=5).tolist() == model.random_state.randint(1000, size=5).tolist()
    got, want = loaded.state_, model.state_
    assert torch.equal(got["basis"], want["basis"])
    for key in ("classes", "labels", "counts"):
        assert type(got[key]) is np.ndarray and got[key].dtype == want[key].dtype
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["big_endian"], want["big_endian"])  # now in native order
    assert got["scalar"] == 0.5 and type(got["scalar"]) is float
    assert got["shape"] == (2, 3)
    assert got["history"][0]["accuracy"] is None and np.isnan(got["history"][0]["loss"])


def test_unfitted_estimator(tmp_path, stand_in):
    with pytest.raises(NotFittedError, match=r"^model: this StandIn is not fitted yet; call 'fit' before saving it$"):
        save(stand_in(), tmp_path / "est.pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(random_state=np.random.default_rng(0)),
         "model: StandIn parameter 'random_state': cannot save a value of type Generator"),
        (dict(weights={(1, 2): 3}), "model: StandIn parameter 'weights': cannot save a dictionary key of type tuple"),
        (dict(weights={"__diffsc_type__": 1}),
         "model: StandIn parameter 'weights': a dictionary may not use the key '__diffsc_type__'"),
    ],
    ids=["generator", "tuple key", "reserved key"],
)
def test_estimator_values_that_cannot_be_saved(tmp_path, stand_in, params, message):
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        save(stand_in(**params).fit(), tmp_path / "est.pt")
    assert os.listdir(tmp_path) == []


def test_estimator_whose_class_is_gone(tmp_path, stand_in, monkeypatch):
    save(stand_in().fit(), tmp_path / "est.pt")
    monkeypatch.delattr(sys.modules["diffsc.estimators"], "StandIn")
    with pytest.raises(ModelFileError) as info:
        load(tmp_path / "est.pt")
    path = tmp_path / "est.pt"
    assert str(info.value) == f"{path}: unknown model class 'StandIn' (not in diffsc {diffsc.__version__})"


def _estimator_data():
    g = np.random.default_rng(0)
    X = g.normal(size=(40, D))
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0.3).astype(int) + (X[:, 1] > 0.3).astype(int)]
    return X, y


def _estimators_module():
    try:
        return importlib.import_module("diffsc.estimators")
    except ModuleNotFoundError:
        return None


@pytest.fixture(scope="module")
def estimators():
    module = _estimators_module()
    if module is None:
        pytest.skip("diffsc.estimators is not there")
    return module


# Fitted once per module; tests that change a model work on a copy.
@pytest.fixture(scope="module")
def transformer(estimators):
    return estimators.SparseCoding(n_components=K, max_iter=3, random_state=0).fit(_estimator_data()[0])


@pytest.fixture(scope="module")
def online_transformer(estimators):
    X, _ = _estimator_data()
    model = estimators.SparseCoding(
        n_components=K, alpha=np.full(K, 0.05), method="online", batch_size=20, max_iter=2, random_state=0
    )
    return model.fit(X).partial_fit(X[:20])  # partial_fit leaves running statistics to save


@pytest.fixture(scope="module")
def classifier(estimators):
    X, y = _estimator_data()
    model = estimators.SparseCodingClassifier(
        n_components=K, max_iter=3, epochs=2, batch_size=16, learn_strength=True, random_state=0
    )
    return model.fit(X, y)


def _same_params(a, b):
    pa, pb = a.get_params(), b.get_params()
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key])


@pytest.mark.parametrize("name", ["transformer", "online_transformer"])
def test_sparse_coding_round_trip(tmp_path, estimators, request, name):
    model = copy.deepcopy(request.getfixturevalue(name))
    save(model, tmp_path / "coder.pt")
    loaded = load(tmp_path / "coder.pt")
    assert type(loaded) is estimators.SparseCoding
    _same_params(loaded, model)
    X, _ = _estimator_data()
    assert loaded.transform(X).tobytes() == model.transform(X).tobytes()
    np.testing.assert_array_equal(loaded.components_, model.components_)
    np.testing.assert_array_equal(loaded.objective_, model.objective_)
    assert loaded.n_iter_ == model.n_iter_
    # Both continue identically: any online statistics came back too.
    np.testing.assert_array_equal(loaded.partial_fit(X[20:]).components_, model.partial_fit(X[20:]).components_)


def test_classifier_round_trip(tmp_path, estimators, classifier):
    save(classifier, tmp_path / "clf.pt")
    loaded = load(tmp_path / "clf.pt")
    assert type(loaded) is estimators.SparseCodingClassifier
    _same_params(loaded, classifier)
    X, _ = _estimator_data()
    assert loaded.predict_proba(X).tobytes() == classifier.predict_proba(X).tobytes()
    assert loaded.classes_.dtype == classifier.classes_.dtype
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    np.testing.assert_array_equal(loaded.strength_, classifier.strength_)
    assert loaded.best_epoch_ == classifier.best_epoch_


def test_unfitted_real_estimator(tmp_path, estimators):
    with pytest.raises(NotFittedError, match=r"^model: this SparseCoding is not fitted yet; call 'fit' before saving it$"):
        save(estimators.SparseCoding(), tmp_path / "coder.pt")
    assert os.listdir(tmp_path) == []
