"""Smoke runs of the benchmarks so they cannot rot (numbers are not asserted)."""

import importlib
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["gaussian", "softmax", "poisson", "bernoulli"])
def test_solver_choice_smoke(family, capsys):
    rows = _load("solver_choice").main(["--smoke", "--family", family])
    methods = {(prior, method) for prior, method, *_ in rows}
    l1_default = "diffsc default (gram)" if family == "gaussian" else "diffsc default (prox_newton)"
    assert {("kl", "diffsc default (newton_cg)"), ("l1", l1_default), ("l1", "diffsc active_set"),
            ("l1", "diffsc prox_newton")} <= methods
    # Every diffsc row reached the requested tolerance on the same problem.
    for prior, method, seconds, residual, note in rows:
        if method.startswith("diffsc"):
            assert residual <= 1e-6 and seconds > 0, (prior, method, residual)
    assert "ratio" in capsys.readouterr().out


def test_robustness_smoke(capsys):
    done, total = _load("robustness").main(["--smoke"])
    assert sum(total.values()) == 2 * 4 * 3 * 5  # dtypes x families x priors x settings
    # The mild settings converge everywhere; the sweep's hard corners are reported, not asserted.
    assert all(done[key] == total[key] for key in total if key[1] in (0.5, 5.0))
    assert "fully converged" in capsys.readouterr().out


def test_weak_kl_smoke(capsys):
    results = _load("weak_kl").main(["--smoke"])
    assert sorted(results) == ["float32", "float64"]
    assert all(batches == 20 and 0 <= done <= batches and steps > 0 for done, _, batches, steps in results.values())
    out = capsys.readouterr().out
    assert "batches converged" in out and "lam 1e-6, 30x60, seed 1, float32" in out


def test_robustness_l1_smoke(capsys):
    done, total = _load("robustness").main(["--smoke", "--priors", "l1"])
    assert sum(total.values()) == 2 * 3 * 2 * 4  # dtypes x families x priors x strengths
    # the default (proximal Newton on the CPU) converged on every batch of the 5-seed sweep
    assert done == total
    assert "solved in" in capsys.readouterr().out


def test_robustness_gaussian_l1_smoke(capsys):
    done, total = _load("robustness").main(["--smoke", "--priors", "gaussian_l1"])
    assert sum(total.values()) == 2 * 1 * 2 * 4  # dtypes x families x priors x strengths
    assert done == total  # the compiled Gram solver, its pivots included
    assert "solved in" in capsys.readouterr().out


def test_profile_smooth_smoke():
    out = _load("profile_smooth").main(["--size", "64x256", "--prior", "kl", "--n", "300"])
    assert out["seconds"] > 0 and 0 < out["mm_share"] < 1
    assert out["steps_max"] >= 1 and min(out["products_per_step"]) >= 1


def test_l1_per_code_smoke(capsys):
    rows = _load("l1_per_code").main(["--smoke"])
    assert [(r["problem"], r["dtype"]) for r in rows] == [("64x256", "float32"), ("64x256", "float64")]
    # the planted codes hold about 7.5% of the 256 atoms
    assert all(r["us_a_code"] > 0 and r["iterations"] >= 1 and 10 < r["support"] < 30 for r in rows)
    assert "one thread, the loop alone" in capsys.readouterr().out


def test_flops_counts_matrix_products_by_dtype():
    flops = _load("flops")
    a, b = torch.randn(5, 7), torch.randn(7, 3, dtype=torch.float64)
    with flops.MatmulFlops() as counted:
        a @ b.float()
        torch.addmm(torch.zeros(5, 3, dtype=torch.float64), a.double(), b)
        (a * 2).sum()  # elementwise: not counted
        bool((a > 0).any())  # a host read
    assert counted.flops == {torch.float32: 2 * 5 * 7 * 3, torch.float64: 2 * 5 * 7 * 3}
    # mm, _to_copy (float), addmm, zeros, _to_copy (double), mul, sum, gt, any, the read
    assert (counted.ops, counted.syncs) == (10, 1)


def test_flops_smoke(capsys):
    row, small = _load("flops").main(["--smoke", "--rows", "auto,100"])
    assert (row["rows"], small["rows"]) == (300, 100)  # auto: the CPU's 512, here the whole batch
    assert "300/300 converged" in small["note"]
    # float64 codes: B^T x and the last steps' objectives in float64, the first steps and CG in float32
    assert row["gflop_f32"] > 0 and row["gflop_f64"] > 0 and row["seconds"] > 0
    assert row["achieved_GFLOPs"] == pytest.approx((row["gflop_f32"] + row["gflop_f64"]) / row["seconds"])
    assert "300/300 converged" in row["note"]
    assert "FLOP/s" in capsys.readouterr().out


def test_ridge_start_smoke(capsys):
    newton_cg = importlib.import_module("diffsc.solvers.newton_cg")
    rows = _load("ridge_start").main(["--smoke"])
    assert len(rows) == 1 and rows[0]["converged"]
    assert rows[0]["ridge_seconds"] > 0 and rows[0]["plain_steps"] >= 1
    assert newton_cg.RIDGE_START  # switched back on for the other tests
    assert "ridge start" in capsys.readouterr().out


def test_fused_rows_smoke(capsys):
    newton_cg = importlib.import_module("diffsc.solvers.newton_cg")
    default = newton_cg.FUSED_ROWS
    rows = _load("fused_rows").main(["--smoke"])
    assert [r["n"] for r in rows] == [1, 4] and all(r["converged"] for r in rows)
    assert all(r["fused_ms"] > 0 and r["chunk_ms"] > 0 and r["fused_steps"] >= 1 for r in rows)
    assert all(r["backward_fused_ms"] > 0 and r["backward_chunk_ms"] > 0 for r in rows)
    hessian_cg = importlib.import_module("diffsc.hessian_cg")
    assert newton_cg.FUSED and newton_cg.FUSED_ROWS == default  # set back for the other tests
    assert hessian_cg.FUSED_CG_ROWS == 16
    assert "fused loop" in capsys.readouterr().out


def test_blas_threads_smoke(capsys):
    rows = _load("blas_threads").main(["--smoke"])
    assert [(r["family"], r["prior"]) for r in rows] == [("gaussian", "signed_kl"), ("softmax", "kl")]
    assert all(r["one_thread_s"] > 0 and r["default_threads_s"] > 0 for r in rows)
    assert "one thread" in capsys.readouterr().out


def test_lbfgsb_restarts_smoke(capsys):
    rows = _load("lbfgsb_restarts").main(["--smoke"])
    assert [r["restarts"] for r in rows] == [0, 3]
    assert all(r["seconds"] > 0 and 0 <= r["worst_residual"] < 1e-3 and 0 <= r["rows_short"] <= 3 for r in rows)
    assert "with and without restarts" in capsys.readouterr().out


def test_flops_smoke_softmax_l1(capsys):
    rows = _load("flops").main(["--smoke", "--family", "softmax", "--priors", "l1",
                                "--solvers", "active_set,prox_newton"])
    assert [r["note"].split(",")[0] for r in rows] == ["solver active_set", "solver prox_newton"]
    assert all(r["problem"] == "5000x100" and r["ops"] > 0 and "20/20 converged" in r["note"] for r in rows)


def test_batch_sizes_smoke(capsys):
    rows = _load("batch_sizes").main(["--smoke"])
    methods = {(r["n"], r["prior"], r["method"]) for r in rows}
    assert {(n, "kl", "diffsc") for n in (1, 4)} <= methods
    assert (1, "signed_kl", "scipy L-BFGS-B per example") in methods and (4, "l1", "sklearn lasso_cd") in methods
    assert all(r["seconds"] > 0 and r["reached"] for r in rows)  # every method reaches the accuracy
    assert all(r["ratio"] == 1 for r in rows if r["method"] == "diffsc")
    steps = [r for r in rows if r["method"] == "diffsc forward+backward"]  # a layer's training step
    assert len(steps) == 6 and all(r["note"].startswith("backward ") for r in steps)
    assert "per_input_ms" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="resident set is read from Linux's /proc")
def test_peak_memory_counts_a_spike_freed_inside_the_block():
    harness = _load("harness")
    with harness.PeakMemory("cpu") as memory:
        spike = torch.ones(2**24, dtype=torch.float64)  # 128 MiB, touched
        del spike
    assert memory.peak >= 120 * 2**20, memory.peak
    with harness.PeakMemory("cpu") as after:
        pass
    assert after.peak < 16 * 2**20, after.peak  # the mark was reset: the spike is not counted again
