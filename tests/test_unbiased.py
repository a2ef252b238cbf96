"""Every estimator of the registry is unbiased for the gradient of its objective.

Ground truth is exact: Gaussian expectations of polynomials and of cos in closed form
(PolynomialTarget, CosineTarget) and the conjugate model's ELBO in closed form (ConjugateGaussian);
autograd of those closed forms gives the exact gradient with respect to q's parameters (lambda) and
the model's (theta). Replicates come from :func:`estimators.diagnostics.replicate_gradients`, one
vectorised pass; :func:`estimators.diagnostics.gradient_statistics` gives per-coordinate z-scores
with standard errors.

Statistical checks: fixed seeds; each test function (each parametrised case) spends a
1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE (conftest), Bonferroni-split across
its coordinates by ``z_threshold(number of coordinates)``. A deliberately biased estimator must
fail the same check, and the tests at the end assert that it does.
"""

import importlib
import itertools
import math

import pytest
import torch
from torch.distributions import Independent, Normal, OneHotCategorical, kl_divergence

from conftest import z_threshold
from estimators import ESTIMATORS, EmaBaseline, score_function
from estimators.base import ElboEstimate, attach_gradient, log_mean_exp
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.targets import (ConjugateGaussian, CosineTarget, PolynomialTarget,
                                WithStandardPrior)

DIM = 2
NUM_REPLICATES = 4000
F64 = torch.float64  # module constants are made at import, before conftest's float64 default
LAMBDA = {"loc": torch.tensor([0.4, -0.7], dtype=F64), "log_scale": torch.tensor([-0.3, 0.2], dtype=F64)}


# name -> (model from theta, theta). Each model's exact_elbo(loc, scale) is in closed form.
TARGETS = {
    "polynomial": (lambda t: WithStandardPrior(PolynomialTarget(t["coefficients"]), DIM),
                   {"coefficients": torch.tensor([0.3, -0.5, 0.4, 0.15, -0.1], dtype=F64)}),
    "cosine": (lambda t: WithStandardPrior(CosineTarget(t["amplitude"], 2.0), DIM),
               {"amplitude": torch.tensor(1.5, dtype=F64)}),
    "conjugate": (lambda t: ConjugateGaussian(torch.tensor([0.5, -1.0]), t["prior_loc"],
                                              prior_scale=1.2, noise_scale=0.8),
                  {"prior_loc": torch.tensor([0.2, -0.3], dtype=F64)}),
}


def gaussian_q(lam):
    return Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)


def build_for(target):
    make_model, _ = TARGETS[target]
    return lambda lam, theta: (make_model(theta), gaussian_q(lam))


def exact_gradient(target):
    """d/dlambda and d/dtheta of the closed-form ELBO, by autograd."""
    make_model, theta = TARGETS[target]
    lam = {n: v.clone().requires_grad_(True) for n, v in LAMBDA.items()}
    theta = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    elbo = make_model(theta).exact_elbo(lam["loc"], lam["log_scale"].exp())
    names, leaves = [*lam, *theta], [*lam.values(), *theta.values()]
    return dict(zip(names, torch.autograd.grad(elbo, leaves)))


def replicate(estimator, target, num_samples, seed, num_replicates=NUM_REPLICATES, **options):
    """All replicate gradients by name (lambda then theta), each (R, *shape)."""
    _, theta = TARGETS[target]
    torch.manual_seed(seed)
    grads = replicate_gradients(estimator, build_for(target), LAMBDA, theta,
                                num_replicates=num_replicates, num_samples=num_samples, **options)
    return {**grads.lambda_, **grads.theta}


def options_for(name, target, num_samples, seed):
    """score_function_ema as the registry intends: a state carried over from an earlier step
    (drawn under its own seed, so that the state does not depend on the tests run before)."""
    if name != "score_function_ema":
        return {}
    state = EmaBaseline()
    model, q = build_for(target)(LAMBDA, TARGETS[target][1])
    torch.manual_seed(seed)
    ESTIMATORS[name](model, q, num_samples, state=state)  # the earlier step: independent samples
    return {"state": state}


def z_scores(estimator, target, num_samples, seed, **options):
    """Per-coordinate z-scores of the replicate mean against the exact ELBO gradient."""
    exact = exact_gradient(target)
    grads = replicate(estimator, target, num_samples, seed, **options)
    return torch.cat([gradient_statistics(grads[n], exact[n]).z.flatten() for n in exact])


def num_coordinates(target):
    return sum(v.numel() for v in LAMBDA.values()) + sum(v.numel() for v in TARGETS[target][1].values())


# The targets here take a Gaussian q: the entries for continuous q's. The estimators of discrete
# latents only (q_kinds without "continuous") are checked against exact sums over the outcomes
# of Bernoulli and categorical q's in tests/test_discrete.py.
CONTINUOUS = {n: e for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds}
# (name, num_samples): every such entry unbiased for the ELBO; IWAE-bound ones at K = 1,
# where that bound is the ELBO, unless they need more samples (vimco: K >= 2 for its baselines),
# in which case they are checked against dreg for the K-sample bound below.
ELBO_CASES = [(n, max(2, e.min_samples)) for n, e in CONTINUOUS.items() if e.objective == "elbo"]
ELBO_CASES += [(n, 1) for n, e in CONTINUOUS.items() if e.objective == "iwae" and e.min_samples == 1]
IWAE_ONLY = [n for n, e in CONTINUOUS.items() if e.objective == "iwae" and e.min_samples > 1]


def test_every_registry_entry_is_checked():
    assert {n for n, _ in ELBO_CASES} | set(IWAE_ONLY) == set(CONTINUOUS)
    assert IWAE_ONLY == ["vimco"]
    # and the rest, in tests/test_discrete.py
    assert set(ESTIMATORS) - set(CONTINUOUS) == {"enumeration", "gumbel_softmax",
                                                  "straight_through", "rebar", "relax", "arm",
                                                  "disarm"}


@pytest.mark.statistical
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name,num_samples", ELBO_CASES)
def test_elbo_gradient_is_unbiased(name, num_samples, target):
    z = z_scores(ESTIMATORS[name], target, num_samples, seed=1,
                 **options_for(name, target, num_samples, seed=2))
    assert z.numel() == num_coordinates(target)
    assert z.abs().max() < z_threshold(z.numel()), f"{name} on {target}: z = {z.tolist()}"


def self_baselined(signal, log_q):
    """A wrong baseline b_k = 0.5 f(z_k): it depends on its own sample, which biases the estimate."""
    return signal - 0.5 * signal


@pytest.mark.statistical
@pytest.mark.parametrize("target", list(TARGETS))
def test_the_check_rejects_a_baseline_that_depends_on_its_own_sample(target):
    def biased(model, q, num_samples):
        return score_function(model, q, num_samples, baseline=self_baselined)

    z = z_scores(biased, target, 2, seed=2)
    assert z.abs().max() > z_threshold(z.numel())


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["measure_valued", "measure_valued_coupled"])
def test_the_check_rejects_a_measure_valued_gradient_with_the_wrong_constant(name, monkeypatch):
    # The mean's weak derivative is 1 / (sigma sqrt(2 pi)) times the Weibull pair; 1 / (sigma
    # sqrt(pi)), a plausible slip, scales every d/dmu by sqrt 2 and must fail the same check.
    monkeypatch.setattr(importlib.import_module("estimators.measure_valued"), "MEAN_CONSTANT",
                        1 / math.sqrt(math.pi))
    z = z_scores(ESTIMATORS[name], "polynomial", 2, seed=1)
    assert z.abs().max() > z_threshold(z.numel())


def two_sample_z(first, second):
    """z-scores of the difference of two independent replicate means, per coordinate."""
    out = []
    for name in first:
        a, b = gradient_statistics(first[name]), gradient_statistics(second[name])
        out.append(((a.mean - b.mean) / (a.mean_se.pow(2) + b.mean_se.pow(2)).sqrt()).flatten())
    return torch.cat(out)


IWAE_SAMPLES = 5
_DREG = {}


def dreg_replicates(target):
    """dreg's replicates at K = 5, seed 4: the reference of every K-sample-bound check, drawn once."""
    if target not in _DREG:
        _DREG[target] = replicate(ESTIMATORS["dreg"], target, IWAE_SAMPLES, seed=4)
    return _DREG[target]


@pytest.mark.statistical
@pytest.mark.parametrize("target", ["conjugate", "cosine"])
def test_iwae_and_dreg_agree_in_mean_for_the_k_sample_bound(target):
    # No closed form for the gradient of the K-sample bound: two estimators of it, unbiased by
    # different arguments, must agree with each other (independent replicates, two-sample z-test).
    iwae = replicate(ESTIMATORS["iwae"], target, IWAE_SAMPLES, seed=3)
    z = two_sample_z(iwae, dreg_replicates(target))
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


@pytest.mark.statistical
@pytest.mark.parametrize("target", ["conjugate", "cosine"])
@pytest.mark.parametrize("name", IWAE_ONLY)
def test_vimco_and_dreg_agree_in_mean_for_the_k_sample_bound(name, target):
    # VIMCO is a score-function estimator of the same K-sample bound: it must agree with dreg.
    first = replicate(ESTIMATORS[name], target, IWAE_SAMPLES, seed=3)
    z = two_sample_z(first, dreg_replicates(target))
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


def vimco_with_its_own_sample_in_the_baseline(model, q, num_samples):
    """A wrong VIMCO: log w_k replaced by the mean of all K log-weights, its own included."""
    z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_weights = model.log_joint(z) - log_q
    bound = log_mean_exp(log_weights, 0)
    detached = log_weights.detach()
    table = detached.unsqueeze(0).repeat(num_samples, *[1] * detached.dim())
    index = torch.arange(num_samples)
    table[index, index] = detached.mean(0, keepdim=True).expand_as(detached)
    signal = bound.detach() - log_mean_exp(table, 1)
    term = (signal * log_q).sum(0) + (torch.softmax(detached, 0) * log_weights).sum(0)
    return ElboEstimate(bound, attach_gradient(bound, term))


@pytest.mark.statistical
def test_the_agreement_check_rejects_a_vimco_baseline_that_uses_its_own_sample():
    wrong = replicate(vimco_with_its_own_sample_in_the_baseline, "conjugate", IWAE_SAMPLES, seed=3)
    z = two_sample_z(wrong, dreg_replicates("conjugate"))
    assert z.abs().max() > z_threshold(z.numel())


# The K-sample bound of a discrete q, exactly: q = OneHotCategorical over C outcomes, and the
# expectation over the K independent draws is a sum over all C^K outcomes, by autograd.

DISCRETE_LOGITS = torch.tensor([0.3, -0.6, 0.1], dtype=F64)
DISCRETE_TABLE = torch.tensor([-1.0, 0.5, -2.0], dtype=F64)  # log p(x, c), unnormalised
DISCRETE_SAMPLES = 3


class TableModel:
    """log p(x, z) = sum_c z_c table_c for a one-hot z; theta is the table."""

    def __init__(self, table):
        self.table = table

    def log_joint(self, z):
        return (z * self.table).sum(-1)


def exact_discrete_bound_gradient():
    logits = DISCRETE_LOGITS.clone().requires_grad_(True)
    table = DISCRETE_TABLE.clone().requires_grad_(True)
    log_q = torch.log_softmax(logits, -1)
    log_weights = table - log_q
    bound = sum(log_q[list(c)].sum().exp() * log_mean_exp(log_weights[list(c)], 0)
                for c in itertools.product(range(len(logits)), repeat=DISCRETE_SAMPLES))
    return torch.autograd.grad(bound, [logits, table])


def discrete_bound_z(estimator, seed):
    exact_logits, exact_table = exact_discrete_bound_gradient()
    torch.manual_seed(seed)
    grads = replicate_gradients(
        estimator, lambda lam, theta: (TableModel(theta["table"]),
                                       OneHotCategorical(logits=lam["logits"])),
        {"logits": DISCRETE_LOGITS}, {"table": DISCRETE_TABLE},
        num_replicates=NUM_REPLICATES, num_samples=DISCRETE_SAMPLES)
    return torch.cat([gradient_statistics(grads.lambda_["logits"], exact_logits).z,
                      gradient_statistics(grads.theta["table"], exact_table).z])


@pytest.mark.statistical
def test_vimco_is_unbiased_for_the_exact_k_sample_bound_of_a_discrete_q():
    z = discrete_bound_z(ESTIMATORS["vimco"], seed=8)
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


@pytest.mark.statistical
def test_the_exact_bound_check_rejects_a_vimco_baseline_that_uses_its_own_sample():
    z = discrete_bound_z(vimco_with_its_own_sample_in_the_baseline, seed=8)
    assert z.abs().max() > z_threshold(z.numel())


@pytest.mark.statistical
def test_the_agreement_check_tells_the_iwae_bound_from_the_elbo():
    # The same check must reject a pair with different means: at K = 5 the ELBO's gradient
    # (pathwise) is not the K-sample bound's (dreg).
    elbo = replicate(ESTIMATORS["pathwise"], "conjugate", IWAE_SAMPLES, seed=5)
    dreg = replicate(ESTIMATORS["dreg"], "conjugate", IWAE_SAMPLES, seed=6)
    z = two_sample_z(elbo, dreg)
    assert z.abs().max() > z_threshold(z.numel())


# Analytic KL, as pathwise_analytic_kl uses it, against a Monte Carlo estimate.

KL_SAMPLES = 20_000


def kl_z_scores(kl_under_test):
    q = Independent(Normal(torch.tensor([[0.0, 0.0], [0.5, -1.0], [2.0, 1.0]]),
                           torch.tensor([[1.0, 1.0], [0.5, 2.0], [0.3, 0.7]])), 1)
    prior = Independent(Normal(torch.tensor([[0.3, 0.0], [0.0, 0.0], [-1.0, 0.5]]),
                               torch.tensor([[1.0, 0.5], [1.0, 1.0], [1.5, 1.0]])), 1)
    torch.manual_seed(7)
    z = q.sample((KL_SAMPLES,))
    terms = q.log_prob(z) - prior.log_prob(z)
    estimate, se = terms.mean(0), terms.std(0) / KL_SAMPLES**0.5
    return (estimate - kl_under_test(q, prior)) / se


@pytest.mark.statistical
def test_analytic_kl_matches_monte_carlo():
    z = kl_z_scores(kl_divergence)
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


@pytest.mark.statistical
def test_the_kl_check_rejects_the_reversed_kl():
    z = kl_z_scores(lambda q, prior: kl_divergence(prior, q))
    assert z.abs().max() > z_threshold(z.numel())
