"""The Figure 1 script runs in quick mode and its curves match SPEC §1.3."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import trapezoid
from scipy.special import wrightomega

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "figure1.py"
LAM, P = 0.5, 0.1  # the script's defaults, passed explicitly


def _load_script():
    spec = importlib.util.spec_from_file_location("figure1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure1")
    args = ["--quick", "--out", str(out), "--strength", str(LAM), "--prior-mean", str(P)]
    _load_script().main(args)
    for name in ("figure1.png", "figure1.csv", "figure1_density.csv"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "figure1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_prior = {}
    for row in rows:
        by_prior.setdefault(row["prior"], []).append(
            [float(row["x"]), float(row["code"]), float(row["offset"])]
        )
    return {name: np.array(values).T for name, values in by_prior.items()}, out


def test_writes_all_priors(curves):
    data, _ = curves
    assert set(data) == {"uniform", "l2", "l1", "kl", "signed_kl"}
    for x, code, offset in data.values():
        assert x.size > 10
        np.testing.assert_allclose(offset, x - code, atol=1e-12)


def test_uniform_offset_is_zero(curves):
    x, code, offset = curves[0]["uniform"]
    np.testing.assert_allclose(offset, 0.0, atol=1e-10)


def test_l2_is_linear_shrinkage(curves):
    x, code, _ = curves[0]["l2"]
    np.testing.assert_allclose(code, x / (1 + LAM), rtol=0, atol=1e-6)


def test_l1_is_soft_threshold(curves):
    x, code, _ = curves[0]["l1"]
    soft = np.sign(x) * np.maximum(np.abs(x) - LAM, 0.0)
    np.testing.assert_allclose(code, soft, rtol=0, atol=1e-6)


def test_kl_is_lambert_w(curves):
    x, code, _ = curves[0]["kl"]
    # lam * W0((p/lam) exp(x/lam)), with wrightomega(z) = W0(exp(z)).
    exact = LAM * wrightomega(np.log(P / LAM) + x / LAM).real
    np.testing.assert_allclose(code, exact, rtol=0, atol=1e-6)


def test_signed_kl_solves_its_optimality_condition(curves):
    x, code, _ = curves[0]["signed_kl"]
    np.testing.assert_allclose(code + LAM * np.arcsinh(code / (2 * P)), x, rtol=0, atol=1e-6)
    assert np.all(np.diff(code) > 0)  # a smooth, strictly increasing shrinkage


def test_densities_are_normalised(curves):
    _, out = curves
    with open(out / "figure1_density.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["prior"] for row in rows} == {"l1", "l2", "signed_kl"}
    for name in ("l1", "l2", "signed_kl"):
        w, density = np.array(
            [[float(r["w"]), float(r["density"])] for r in rows if r["prior"] == name]
        ).T
        assert np.all(density >= 0)
        assert trapezoid(density, w) == pytest.approx(1.0, abs=1e-9)
