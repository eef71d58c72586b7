"""The torch layer and supervised fine-tuning through the codes."""

import pytest
import torch
from torch.func import functional_call

import diffsc
from diffsc.supervised import encode, fit_head
from helpers import problem_data

TIGHT = 1e-12  # inner solves for derivative checks


def test_layer_composes_with_torch_models_and_optimisers():
    x, basis = problem_data("gaussian", n=20, d=6, k=8)
    layer = diffsc.SparseCodingLayer(basis, prior="kl", learn_strength=True, learn_prior_mean=True)
    model = torch.nn.Sequential(layer, torch.nn.Linear(8, 3, dtype=torch.float64))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    before = layer.basis.detach().clone()
    y = torch.arange(20) % 3
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert layer.basis.grad is not None and layer.log_strength.grad is not None
    assert layer.log_prior_mean.grad is not None
    optimiser.step()
    layer.project_()
    assert not torch.equal(layer.basis.detach(), before)
    assert bool((layer.basis.norm(dim=0) <= 1 + 1e-12).all())
    assert bool(layer.strength > 0) and bool(layer.prior_mean > 0)
    assert layer.basis is dict(model.named_parameters())["0.basis"]


def test_fixed_strength_is_a_buffer_not_a_parameter():
    _, basis = problem_data("gaussian", k=4)
    layer = diffsc.SparseCodingLayer(basis, strength=0.2)
    assert [name for name, _ in layer.named_parameters()] == ["basis"]
    assert layer.strength.item() == pytest.approx(0.2)
    assert "log_strength" in layer.state_dict()


def test_layer_equals_sparse_code():
    x, basis = problem_data("softmax", n=5, d=7, k=4)
    layer = diffsc.SparseCodingLayer(basis, family="softmax", prior="signed_kl", strength=0.3)
    expected = diffsc.sparse_code(x, basis, family="softmax", prior="signed_kl", strength=0.3)
    # the layer holds log(lam): exp(log(0.3)) is 0.3 to one rounding
    torch.testing.assert_close(layer(x).detach(), expected, rtol=1e-12, atol=0)


def test_project_centres_softmax_atoms_and_shrinks_long_ones():
    basis = torch.tensor([[3.0, 0.1], [1.0, 0.2], [2.0, 0.3]], dtype=torch.float64)
    layer = diffsc.SparseCodingLayer(basis, family="softmax")
    layer.project_()
    b = layer.basis.detach()
    assert torch.allclose(b.sum(0), torch.zeros(2, dtype=torch.float64), atol=1e-15)
    assert b[:, 0].norm() == pytest.approx(1.0)
    assert b[:, 1].norm() < 1  # a short atom keeps its length once centred
    assert torch.allclose(b[:, 1], torch.tensor([-0.1, 0.0, 0.1], dtype=torch.float64))


def small_classifier(family, prior, learn=False, seed=0):
    x, basis = problem_data(family, n=12, d=6, k=5, seed=seed)
    coder = diffsc.SparseCodingLayer(
        basis, family=family, prior=prior, strength=0.2, learn_strength=learn, learn_prior_mean=learn, tol=TIGHT
    )
    model = diffsc.CodePredictor(coder, n_outputs=3)
    y = torch.arange(12) % 3
    fit_head(model, encode(coder, x), y, l2=1e-2)
    return model, x, y


@pytest.mark.parametrize("family,prior", [("gaussian", "kl"), ("softmax", "kl"), ("gaussian", "signed_kl")])
def test_classifier_loss_gradient_wrt_the_basis_matches_finite_differences(family, prior):
    model, x, y = small_classifier(family, prior, learn=True)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}

    def loss_of(name):
        def f(value):
            return model.loss(functional_call(model, {**params, name: value}, (x,)), y, l2=1e-2)
        return f

    for name in ("coder.basis", "coder.log_strength", "coder.log_prior_mean"):
        value = params[name].clone().requires_grad_()
        assert torch.autograd.gradcheck(loss_of(name), (value,), eps=1e-6, atol=1e-8, rtol=1e-5)


def test_classifier_gradient_under_l1_matches_finite_differences_along_a_direction():
    model, x, y = small_classifier("gaussian", "l1")
    basis = model.coder.basis
    loss = model.loss(model(x), y)
    (grad,) = torch.autograd.grad(loss, basis)
    direction = torch.randn(basis.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6  # small enough that no code changes its support
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            shifted = {"coder.basis": basis + sign * h * direction}
            values.append(model.loss(functional_call(model, shifted, (x,)), y))
    assert float((values[0] - values[1]) / (2 * h)) == pytest.approx(float((grad * direction).sum()), rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    parts = train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=0)
    return [torch.from_numpy(a) for a in parts]


def test_fine_tuning_lowers_the_training_loss_and_keeps_held_out_accuracy(digits):
    x_train, x_test, y_train, y_test = digits
    basis = diffsc.learn_basis(x_train, 50, prior="kl", strength=0.1, max_iter=15, seed=0).basis
    results = {}
    for fine_tune in (False, True):
        coder = diffsc.SparseCodingLayer(basis, prior="kl", strength=0.1, tol=1e-8)
        model = diffsc.CodePredictor(coder, n_outputs=10)
        history = diffsc.train_predictor(
            model, x_train, y_train, fine_tune=fine_tune, validation_fraction=0, epochs=8, lr=1e-3, l2=1e-3
        ).history
        with torch.no_grad():
            train_loss = float(model.loss(model(x_train), y_train, l2=1e-3))
            accuracy = float((model(x_test).argmax(-1) == y_test).double().mean())
        results[fine_tune] = (train_loss, accuracy, history)
    (loss0, acc0, _), (loss1, acc1, history1) = results[False], results[True]
    assert history1[0]["train_loss"] == pytest.approx(loss0, rel=1e-9)  # phase 1 is the head-only model
    assert loss1 < 0.8 * loss0, (loss0, loss1)
    assert acc1 >= acc0, (acc0, acc1)  # 540 held-out digits, fixed seed
    assert acc0 > 0.95


def test_early_stopping_restores_the_best_epoch(digits):
    x_train, _, y_train, _ = digits
    x, y = x_train[:300], y_train[:300]
    basis = diffsc.learn_basis(x, 20, prior="kl", max_iter=3).basis
    model = diffsc.CodePredictor(diffsc.SparseCodingLayer(basis, prior="kl", tol=1e-8), n_outputs=10)
    x_val, y_val = x_train[300:450], y_train[300:450]
    result = diffsc.train_predictor(model, x, y, x_val=x_val, y_val=y_val, epochs=6, lr=3e-2, patience=2)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == min(range(len(losses)), key=losses.__getitem__)
    with torch.no_grad():
        now = float(model.loss(model(x_val), y_val))
    assert now == pytest.approx(losses[result.best_epoch], rel=1e-9)
    assert all(h["val_accuracy"] is not None for h in result.history)


def test_regression_head_fine_tuning_lowers_the_squared_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64)
    y = torch.stack([x[:, 0].abs(), x[:, 1] * x[:, 2]], 1)  # not linear in x: codes help
    basis = diffsc.learn_basis(x, 16, prior="signed_kl", max_iter=5).basis
    coder = diffsc.SparseCodingLayer(basis, prior="signed_kl", tol=1e-8)
    model = diffsc.CodePredictor(coder, n_outputs=2, task="regression")
    result = diffsc.train_predictor(model, x, y, validation_fraction=0, epochs=15, lr=1e-2, batch_size=50)
    with torch.no_grad():
        final = float(model.loss(model(x), y, l2=1e-4))
    assert final < 0.9 * result.history[0]["train_loss"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "ranking"}, "task: must be one of ('classification', 'regression'), got 'ranking'"),
        ({"n_outputs": 0}, "n_outputs: must be a positive integer, got 0"),
    ],
)
def test_bad_predictor_arguments(kwargs, message):
    _, basis = problem_data("gaussian", k=4)
    args = {"n_outputs": 2, **kwargs}
    with pytest.raises(ValueError) as info:
        diffsc.CodePredictor(diffsc.SparseCodingLayer(basis), **args)
    assert str(info.value) == message


def test_validation_split_that_leaves_nothing_is_refused():
    x, basis = problem_data("gaussian", n=3, k=4)
    model = diffsc.CodePredictor(diffsc.SparseCodingLayer(basis), n_outputs=2)
    with pytest.raises(ValueError) as info:
        diffsc.train_predictor(model, x, torch.tensor([0, 1, 0]), validation_fraction=0.1)
    assert str(info.value) == (
        "validation_fraction: 0.1 of 3 examples leaves no validation or training set"
    )
