"""Smoke run of benchmarks/codes.py: every section runs, and its accuracy columns are honest."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("l1", "kl", "softmax", "backward")


def _load():
    spec = importlib.util.spec_from_file_location("codes", ROOT / "benchmarks" / "codes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spams():
    try:
        import spams  # noqa: F401
    except ImportError:
        return False
    return True


def test_codes_smoke(tmp_path, capsys):
    codes = _load()
    results = codes.main(["--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out

    for section in SECTIONS:
        rows = results[section]
        assert rows, section
        assert f"codes {section}" in out
        for ext in ("csv", "json", "md"):
            assert (tmp_path / f"codes-{section}.{ext}").exists()
        assert len(json.loads((tmp_path / f"codes-{section}.json").read_text())["rows"]) == len(rows)
        for row in rows:
            for key in ("section", "problem", "method", "dtype", "device", "seconds", "ratio",
                        "reached", "peak_MB", "repeats", "note"):
                assert key in row, (section, key)
            assert row["section"] == section
            if row["repeats"]:  # a row that ran (not a failure or a skipped peer)
                assert row["seconds"] > 0, row

    # Every method that claims to have reached the accuracy did, by its own column.
    for row in results["l1"]:
        assert row["reached"] == (row["objective_gap"] <= codes.GAP), row
        assert row["objective_gap"] >= 0 or math.isnan(row["objective_gap"]), row
    for section in ("kl", "softmax", "backward"):
        for row in results[section]:
            assert row["reached"] == (row["residual"] <= codes.RESIDUAL), row

    # diffsc reached the accuracy everywhere it was asked to converge (the backward
    # section's fixed-iteration rows stop at their iteration count instead).
    for section in SECTIONS:
        for row in results[section]:
            # (diffsc's EG is the classic baseline, capped in time: it may stop short.)
            ours = row["method"].startswith(("diffsc", "forward", "backward")) and row["method"] != "diffsc eg"
            if ours and row.get("max_iter", "-") == "-":
                assert row["reached"], row

    # The ratio base is diffsc's default: ratio 1 on its own row.
    l1 = results["l1"]
    for row in l1:
        if (row["method"], row["dtype"]) == ("diffsc", "float32"):
            assert row["ratio"] == 1.0
    problems = {row["problem"] for row in l1}
    assert problems == {"16x32", "24x48"}

    # Peers ran on every problem.
    for problem in problems:
        methods = {(r["method"], r["dtype"]) for r in l1 if r["problem"] == problem and r["repeats"]}
        assert {("sklearn lasso_lars", "float64"), ("sklearn lasso_cd", "float64"),
                ("plain fista (torch)", "float32")} <= methods
        if _spams():
            assert {("spams lasso", "float64"), ("spams lasso", "float32")} <= methods
    for section in ("kl", "softmax"):
        assert any(r["method"].startswith("scipy L-BFGS-B") for r in results[section])
        assert any(r["method"] == "diffsc newton (factored)" for r in results[section])
        assert all("solver newton_cg" in r["note"] for r in results[section]
                   if r["method"] == "diffsc default" and r["prior"] != "l1")
        assert any(r["method"] == "diffsc eg" for r in results[section])

    targets = results["l1_targets"]
    assert [t["problem"] for t in targets] == sorted(problems)
    assert (tmp_path / "codes-l1-targets.csv").exists()

    # The backward section compares both backward modes at every iteration count.
    backward = results["backward"]
    for prior, solvers in (("l1", ["fista"]), ("kl", ["newton", "eg"])):
        for solver in solvers:
            for mode in ("implicit", "unrolled"):
                counts = [r["max_iter"] for r in backward if r["prior"] == prior
                          and r["method"] == f"{mode} {solver}"]
                assert counts == [10, 20, 30], (prior, solver, mode)
    # the other smoke size: forward, backward and both, no fixed-iteration runs
    other = [(r["prior"], r["method"]) for r in backward if r["problem"] == "24x48"]
    assert other == [(prior, method) for prior in ("l1", "kl") for method in
                     ("forward (default solver)", "backward implicit", "forward+backward implicit")]


def test_skipped_l1_peers_are_rows_that_say_so(tmp_path):
    # A GPU lease cannot wait for lasso_lars (about 20 minutes at N = 10,000).
    codes = _load()
    results = codes.main(["--smoke", "--only", "l1", "--sizes", "16x32", "--skip", "lasso_lars,lasso_cd",
                          "--out", str(tmp_path)])
    skipped = [r for r in results["l1"] if r["method"].startswith("sklearn")]
    assert len(skipped) == 2 and all(r["repeats"] == 0 and "skipped" in r["note"] for r in skipped)
    assert all(math.isnan(r["seconds"]) for r in skipped)
    (target,) = results["l1_targets"]
    assert target["lars_20x"] is None and math.isnan(target["lars_over_diffsc"])
    with pytest.raises(SystemExit):
        codes.main(["--smoke", "--only", "l1", "--skip", "lars"])


@pytest.mark.parametrize("family", ["gaussian", "softmax"])
@pytest.mark.parametrize("prior", ["kl", "signed_kl"])
def test_lbfgsb_objective_is_diffsc_objective(family, prior):
    # The L-BFGS-B peer minimises its own numpy objective: it must be F, with F's gradient.
    import numpy as np
    import torch

    codes = _load()
    x, basis = codes.harness.make_problem(3, 40, 12, seed=1, family=family)
    scorer = codes.Scorer(family, prior, x, basis, 0.05)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.001, 0.5, size=12) * (1 if prior == "kl" else rng.choice([-1, 1], size=12))
    b = scorer.basis.numpy()
    f, scale = codes._numpy_objective(family, prior, scorer.x[1].numpy(), b, b.T @ b, 0.05, codes.PRIOR_MEAN)
    value, grad = f(w)

    problem, row, wt = scorer.problem, scorer.x[1:2], torch.from_numpy(w)[None]
    expected = float(problem.objective(row, scorer.basis, scorer.lam, scorer.p, wt))
    grad_loss, _ = problem.loss_gradient(row, scorer.basis, wt)
    expected_grad = (grad_loss + scorer.lam * problem.prior.grad(wt, scorer.p))[0].numpy()
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)
    assert scale == pytest.approx(float((row @ scorer.basis).abs().max()))
    # and the peer reaches diffsc's codes
    solved = codes.lbfgsb(scorer, 3, 1e-6)
    assert scorer.residual(solved, 3) < 1e-3
