"""Deterministic identities every estimator of the registry must satisfy.

Hypothesis draws the parameters (derandomized, no example database: see conftest). Nothing here is
statistical: each check holds exactly, up to floating-point rounding, for every sample.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import (Categorical, Independent, MixtureSameFamily, MultivariateNormal,
                                 Normal, OneHotCategorical, StudentT)

from estimators import (ESTIMATORS, ElboEstimate, EstimatorError, attach_gradient, iwae,
                        measure_valued, measure_valued_coupled, pathwise, score_function,
                        score_function_autodiff, stl, vimco)
from estimators.measure_valued import MEAN_CONSTANT, standard_weak_derivative_pairs
from estimators.targets import ConjugateGaussian
from estimators.vimco import leave_one_out_bounds

DIM = 2
finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)
log_scales = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
positive = st.floats(0.3, 3.0, allow_nan=False, allow_infinity=False)
seeds = st.integers(0, 2**31 - 1)


def vectors(elements, size=DIM):
    return st.lists(elements, min_size=size, max_size=size)


def gaussian_q(loc, log_scale):
    return Independent(Normal(loc, log_scale.exp()), 1)


def leaf(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


def samples_for(estimator):
    return max(2, estimator.min_samples)


# The entries that take a continuous q: every check below hands them a Gaussian one. The
# estimators of discrete latents only (q_kinds without "continuous") refuse it, and
# tests/test_discrete.py checks them on Bernoulli and categorical q's.
CONTINUOUS = {n: e for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(loc=vectors(finite), log_scale=vectors(log_scales), x=vectors(finite), seed=seeds,
       batch=st.integers(1, 3))
def test_surrogate_value_is_the_estimate_with_batch_shape_and_q_dtype(dtype, loc, log_scale, x,
                                                                      seed, batch):
    model = ConjugateGaussian(torch.tensor(x, dtype=dtype), torch.zeros(DIM, dtype=dtype))
    loc = torch.tensor(loc, dtype=dtype).expand(batch, DIM).clone().requires_grad_(True)
    log_scale = torch.tensor(log_scale, dtype=dtype).expand(batch, DIM).clone().requires_grad_(True)
    q = gaussian_q(loc, log_scale)
    for name, estimator in CONTINUOUS.items():
        torch.manual_seed(seed)
        estimate = estimator(model, q, samples_for(estimator))
        assert follows_the_contract(estimate, q), name


def follows_the_contract(estimate, q):
    """Shapes q.batch_shape, q's dtype, a surrogate with the estimate's value and a gradient."""
    return (estimate.elbo.shape == q.batch_shape == estimate.surrogate.shape
            and estimate.elbo.dtype == estimate.surrogate.dtype == q.mean.dtype
            and torch.equal(estimate.surrogate.detach(), estimate.elbo.detach())
            and estimate.surrogate.requires_grad)


def test_the_contract_check_rejects_a_surrogate_without_the_value_trick():
    model = ConjugateGaussian(torch.tensor([0.5, -1.0]), torch.zeros(2))
    q = gaussian_q(torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True))
    torch.manual_seed(0)
    right = ESTIMATORS["score_function"](model, q, 3)
    assert follows_the_contract(right, q)
    z = q.sample((3,))
    log_q = q.log_prob(z)
    signal = (model.log_joint(z) - log_q).detach()
    raw = ElboEstimate(signal.mean(0), (signal * log_q).mean(0))  # the gradient, not the value
    assert not follows_the_contract(raw, q)
    assert not follows_the_contract(ElboEstimate(raw.elbo.float(), raw.elbo.float()), q)


@given(loc=vectors(finite), log_scale=vectors(log_scales), x=vectors(finite),
       prior_loc=vectors(finite), seed=seeds)
def test_iwae_with_one_sample_is_the_pathwise_elbo(loc, log_scale, x, prior_loc, seed):
    results = []
    for estimator in (iwae, pathwise):
        params = [leaf(loc), leaf(log_scale), leaf(prior_loc)]
        model = ConjugateGaussian(torch.tensor(x), params[2])
        torch.manual_seed(seed)  # the same noise for both
        estimate = estimator(model, gaussian_q(params[0], params[1]), 1)
        results.append((estimate.elbo.detach(), torch.autograd.grad(estimate.surrogate, params)))
    (value_iwae, grads_iwae), (value_pathwise, grads_pathwise) = results
    assert torch.allclose(value_iwae, value_pathwise, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads_iwae, grads_pathwise):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@given(x=vectors(finite), prior_loc=vectors(finite), prior_scale=positive, noise_scale=positive,
       seed=seeds)
def test_stl_gradient_is_zero_at_the_exact_posterior_and_pathwise_is_not(x, prior_loc, prior_scale,
                                                                          noise_scale, seed):
    model = ConjugateGaussian(torch.tensor(x), torch.tensor(prior_loc), prior_scale, noise_scale)
    posterior = model.posterior()
    loc = posterior.base_dist.loc.detach().clone().requires_grad_(True)
    log_scale = posterior.base_dist.scale.log().detach().clone().requires_grad_(True)
    scale = log_scale.exp().detach()

    torch.manual_seed(seed)
    grads = torch.autograd.grad(stl(model, gaussian_q(loc, log_scale), 1).surrogate, [loc, log_scale])
    # log p(x, z) - log q(z) = log p(x) for every z, so the path term vanishes and STL keeps nothing.
    size = 1.0 + x_abs(x) / noise_scale**2 + x_abs(prior_loc) / prior_scale**2
    for grad in grads:
        assert grad.abs().max() <= 1e-12 * size / scale.min() ** 2

    torch.manual_seed(seed)
    q = gaussian_q(loc, log_scale)
    grad_loc, grad_log_scale = torch.autograd.grad(pathwise(model, q, 1).surrogate, [loc, log_scale])
    torch.manual_seed(seed)
    noise = ((q.rsample((1,))[0] - loc) / scale).detach()
    # Pathwise keeps the score term -grad log q(z) at fixed z: -e/sigma and 1 - e^2 (for log sigma).
    assert torch.allclose(grad_loc, -noise / scale, rtol=1e-9, atol=1e-9)
    assert torch.allclose(grad_log_scale, 1 - noise.pow(2), rtol=1e-9, atol=1e-9)
    # ... and far above the rounding bound that STL met: that bound tells the two apart.
    assert grad_loc.abs().max() > 1e-12 * size / scale.min() ** 2


def x_abs(values):
    return max(abs(v) for v in values)


def hand_derived(kind, mu, sigma, x, m0, s0, n, z):
    """Single-sample gradients (d/dmu, d/dsigma, d/dm0) of the Normal-Normal model in one dimension.

    q = N(mu, sigma^2), one sample z = mu + sigma e;
    log p(x, z) = log N(z; m0, s0^2) + log N(x; z, n^2), f(z) = log p(x, z) - log q(z),
    g(z) = d/dz log p(x, z) = -(z - m0)/s0^2 + (x - z)/n^2.
      pathwise:        d/dmu = g(z);   d/dsigma = g(z) e + 1/sigma   (log q(mu + sigma e) = c - log sigma - e^2/2)
      score (seed):    d/dmu = f e/sigma;   d/dsigma = f (e^2 - 1)/sigma   (seed section 5.1:
                       f grad log q, with d log q/dmu = e/sigma, d log q/dsigma = (e^2 - 1)/sigma)
      score_autodiff:  d/dmu = (f - 1) e/sigma;   d/dsigma = (f - 1)(e^2 - 1)/sigma
                       (f grad log q plus grad f at fixed z = -grad log q)
      all:             d/dm0 = (z - m0)/s0^2
    """
    e = (z - mu) / sigma
    if kind == "pathwise":
        g = -(z - m0) / s0**2 + (x - z) / n**2
        want = [g, g * e + 1 / sigma]
    else:
        f = normal_normal_signal(mu, sigma, x, m0, s0, n, z)
        shift = 1.0 if kind == "score_autodiff" else 0.0
        want = [(f - shift) * e / sigma, (f - shift) * (e**2 - 1) / sigma]
    return want + [(z - m0) / s0**2]


def normal_normal_signal(mu, sigma, x, m0, s0, n, z):
    """f(z) = log N(z; m0, s0^2) + log N(x; z, n^2) - log N(z; mu, sigma^2), by hand."""
    log_joint = (-0.5 * math.log(2 * math.pi * s0**2) - (z - m0) ** 2 / (2 * s0**2)
                 - 0.5 * math.log(2 * math.pi * n**2) - (x - z) ** 2 / (2 * n**2))
    return log_joint - (-0.5 * math.log(2 * math.pi * sigma**2) - (z - mu) ** 2 / (2 * sigma**2))


def _normal_normal(mu, sigma, m0, s0, n, x):
    mu_leaf, sigma_leaf, m0_leaf = leaf([mu]), leaf([sigma]), leaf([m0])
    model = ConjugateGaussian(torch.tensor([x]), m0_leaf, s0, n)
    q = Independent(Normal(mu_leaf, sigma_leaf), 1)
    return model, q, [mu_leaf, sigma_leaf, m0_leaf]


def _gradients(estimator, model, q, leaves, seed, num_samples=1):
    torch.manual_seed(seed)
    grads = torch.autograd.grad(estimator(model, q, num_samples).surrogate, leaves,
                                allow_unused=True)
    return [torch.zeros(1) if g is None else g for g in grads]


def matches_hand_derived(estimator, kind, mu, sigma, x, m0, s0, n, seed):
    """Whether the estimator's single-sample gradient equals :func:`hand_derived` for its sample."""
    model, q, leaves = _normal_normal(mu, sigma, m0, s0, n, x)
    grads = _gradients(estimator, model, q, leaves, seed)
    torch.manual_seed(seed)  # the sample the estimator drew: score functions sample, pathwise rsample
    z = (q.rsample if kind == "pathwise" else q.sample)((1,)).item()
    want = hand_derived(kind, mu, sigma, x, m0, s0, n, z)
    return all(got.item() == pytest.approx(w, rel=1e-9, abs=1e-9) for got, w in zip(grads, want))


@given(mu=finite, sigma=positive, x=finite, prior_loc=finite, prior_scale=positive,
       noise_scale=positive, seed=seeds)
def test_single_sample_gradients_equal_hand_derived_ones(mu, sigma, x, prior_loc, prior_scale,
                                                         noise_scale, seed):
    parameters = (mu, sigma, x, prior_loc, prior_scale, noise_scale, seed)
    assert matches_hand_derived(pathwise, "pathwise", *parameters)
    assert matches_hand_derived(score_function, "score", *parameters)
    assert matches_hand_derived(score_function_autodiff, "score_autodiff", *parameters)


def score_term_only(model, q, num_samples):
    """A wrong score function: the seed's lambda-gradient, and no theta-gradient at all."""
    z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    signal = (model.log_joint(z) - log_q).detach()
    elbo = signal.mean(0)
    return ElboEstimate(elbo, attach_gradient(elbo, (signal * log_q).mean(0)))


def test_the_hand_derived_check_rejects_wrong_gradients():
    parameters = (0.3, 0.8, 1.0, -0.5, 1.2, 0.7, 3)
    assert not matches_hand_derived(score_term_only, "score", *parameters)
    assert not matches_hand_derived(stl, "pathwise", *parameters)  # STL drops a mean-zero term
    # The two forms of the score function differ by -grad_lambda log q(z): each check tells them apart.
    assert not matches_hand_derived(score_function_autodiff, "score", *parameters)
    assert not matches_hand_derived(score_function, "score_autodiff", *parameters)


def measure_valued_hand_derived(mu, sigma, x, m0, s0, n, z, pairs, mean_constant=MEAN_CONSTANT):
    """(d/dmu, d/dsigma, d/dm0) of the measure-valued estimator with one sample, by hand.

    pairs = (e_mu+, e_mu-, e_sigma+, e_sigma-): d/dmu = mean_constant [f(mu + sigma e_mu+) -
    f(mu + sigma e_mu-)] / sigma, d/dsigma = [f(mu + sigma e_sigma+) - f(mu + sigma e_sigma-)] /
    sigma (Mohamed et al. 2020, section 6); d/dm0 = (z - m0)/s0^2 at the sample z of q.
    """
    f = [normal_normal_signal(mu, sigma, x, m0, s0, n, mu + sigma * e) for e in pairs]
    return [mean_constant * (f[0] - f[1]) / sigma, (f[2] - f[3]) / sigma, (z - m0) / s0**2]


def matches_measure_valued(estimator, coupled, mu, sigma, x, m0, s0, n, seed, **constants):
    model, q, leaves = _normal_normal(mu, sigma, m0, s0, n, x)
    grads = _gradients(estimator, model, q, leaves, seed)
    torch.manual_seed(seed)  # the estimator's draws, in its order: q's sample, then the pairs
    z = q.sample((1,))
    pairs = standard_weak_derivative_pairs(z.shape, z.dtype, coupled=coupled).flatten().tolist()
    want = measure_valued_hand_derived(mu, sigma, x, m0, s0, n, z.item(), pairs, **constants)
    return all(got.item() == pytest.approx(w, rel=1e-9, abs=1e-9) for got, w in zip(grads, want))


@given(mu=finite, sigma=positive, x=finite, prior_loc=finite, prior_scale=positive,
       noise_scale=positive, seed=seeds)
def test_measure_valued_single_sample_gradients_equal_hand_derived_ones(
        mu, sigma, x, prior_loc, prior_scale, noise_scale, seed):
    parameters = (mu, sigma, x, prior_loc, prior_scale, noise_scale, seed)
    assert matches_measure_valued(measure_valued, False, *parameters)
    assert matches_measure_valued(measure_valued_coupled, True, *parameters)


def test_the_measure_valued_check_rejects_a_wrong_constant_and_the_wrong_coupling():
    parameters = (0.3, 0.8, 1.0, -0.5, 1.2, 0.7, 3)
    assert not matches_measure_valued(measure_valued, False, *parameters,
                                      mean_constant=1 / math.sqrt(math.pi))
    assert not matches_measure_valued(measure_valued, True, *parameters)
    assert not matches_measure_valued(measure_valued_coupled, False, *parameters)


def coupled_pairs_reuse_their_variate(seed):
    torch.manual_seed(seed)
    pairs = standard_weak_derivative_pairs((2000,), torch.float64, coupled=True)
    uniform = pairs[3] / pairs[2]
    return (torch.equal(pairs[1], -pairs[0]) and bool((pairs[0] > 0).all())
            and bool(((uniform >= 0) & (uniform <= 1)).all()))


def test_coupled_pairs_share_one_variate_and_uncoupled_ones_do_not():
    # Coupled: e_mu- = -e_mu+ (one Weibull draw), e_sigma- = u e_sigma+ with u in [0, 1].
    assert coupled_pairs_reuse_their_variate(seed=4)
    torch.manual_seed(4)
    independent = standard_weak_derivative_pairs((2000,), torch.float64, coupled=False)
    assert not torch.equal(independent[1], -independent[0])
    assert not bool(((independent[3] / independent[2]).abs() <= 1).all())


def direct_leave_one_out_bounds(log_weights, own_sample=False):
    """L_{-k} by a K x K table: row k is log w with entry k replaced by the mean of the others'
    log w (with ``own_sample``, wrongly, by the mean of all K, entry k included)."""
    num_samples = log_weights.shape[0]
    table = log_weights.unsqueeze(0).repeat(num_samples, *[1] * log_weights.dim())
    index = torch.arange(num_samples)
    if own_sample:
        replaced = log_weights.mean(0, keepdim=True).expand_as(log_weights)
    else:
        replaced = (log_weights.sum(0, keepdim=True) - log_weights) / (num_samples - 1)
    table[index, index] = replaced
    return torch.logsumexp(table, 1) - math.log(num_samples)


@given(values=st.lists(st.floats(-30.0, 30.0, allow_nan=False), min_size=2, max_size=9),
       moved=st.floats(-30.0, 30.0, allow_nan=False))
def test_vimco_baselines_equal_the_direct_table_and_ignore_their_own_sample(values, moved):
    log_weights = torch.tensor(values).unsqueeze(-1)  # (K, 1): a batch of one
    baselines = leave_one_out_bounds(log_weights)
    assert torch.allclose(baselines, direct_leave_one_out_bounds(log_weights), rtol=1e-12,
                          atol=1e-12)
    changed = log_weights.clone()
    changed[0] = moved  # sample 0's weight moves: its own baseline L_{-0} must not
    assert torch.allclose(leave_one_out_bounds(changed)[0], baselines[0], rtol=1e-12, atol=1e-12)


def test_the_vimco_baseline_check_rejects_a_baseline_that_uses_its_own_sample():
    log_weights = torch.tensor([[0.5], [-1.0], [2.0]])
    changed = log_weights.clone()
    changed[0] = -3.0
    wrong = direct_leave_one_out_bounds(log_weights, own_sample=True)
    assert not torch.allclose(direct_leave_one_out_bounds(changed, own_sample=True)[0], wrong[0])
    assert not torch.allclose(leave_one_out_bounds(log_weights), wrong)


@given(loc=vectors(finite), log_scale=vectors(log_scales), x=vectors(finite), seed=seeds,
       num_samples=st.integers(2, 6))
def test_vimco_value_is_the_k_sample_bound_of_the_same_draws(loc, log_scale, x, seed, num_samples):
    # sample and rsample of a Normal draw the same noise, so iwae and vimco see the same z.
    model = ConjugateGaussian(torch.tensor(x), torch.zeros(DIM))
    q = gaussian_q(leaf(loc), leaf(log_scale))
    values = []
    for estimator in (iwae, vimco):
        torch.manual_seed(seed)
        values.append(estimator(model, q, num_samples).elbo.detach())
    assert torch.allclose(values[0], values[1], rtol=1e-12, atol=1e-12)


# Misuse: one line naming the problem and the fix.

def _model():
    return ConjugateGaussian(torch.tensor([0.5, -1.0]), torch.zeros(2))


def _q():
    return gaussian_q(torch.zeros(2), torch.zeros(2))


def _raises(estimator, model, q, num_samples, *fragments):
    with pytest.raises(EstimatorError) as info:
        estimator(model, q, num_samples)
    message = str(info.value)
    assert "\n" not in message
    assert estimator.name in message
    for fragment in fragments:
        assert fragment in message, message


PATHWISE = [e for e in ESTIMATORS.values() if e.needs_rsample]


@pytest.mark.parametrize("q", [
    MixtureSameFamily(Categorical(logits=torch.zeros(3)),
                      Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)),
    OneHotCategorical(logits=torch.zeros(2)),
], ids=["mixture", "one-hot-categorical"])
def test_pathwise_estimators_refuse_a_q_without_rsample(q):
    assert PATHWISE
    for estimator in PATHWISE:
        _raises(estimator, _model(), q, 2, "has no rsample", "score-function estimator")


def test_score_function_estimators_accept_a_q_without_rsample():
    q = MixtureSameFamily(Categorical(logits=torch.zeros(3)),
                          Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1))
    accepting = [e for e in ESTIMATORS.values() if not e.needs_rsample
                 and not e.needs_diagonal_gaussian and "mixture" in e.q_kinds]
    assert {"score_function", "score_function_autodiff", "vimco"} <= {e.name for e in accepting}
    for estimator in accepting:
        assert estimator(_model(), q, max(2, estimator.min_samples)).elbo.shape == ()


GAUSSIAN_ONLY = [e for e in ESTIMATORS.values() if e.needs_diagonal_gaussian]


@pytest.mark.parametrize("q", [
    MixtureSameFamily(Categorical(logits=torch.zeros(3)),
                      Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)),
    Independent(StudentT(3.0, torch.zeros(2), torch.ones(2)), 1),
    MultivariateNormal(torch.zeros(2), torch.eye(2)),
], ids=["mixture", "student-t", "full-covariance"])
def test_measure_valued_estimators_refuse_a_q_that_is_not_a_diagonal_gaussian(q):
    assert {e.name for e in GAUSSIAN_ONLY} == {"measure_valued", "measure_valued_coupled"}
    for estimator in GAUSSIAN_ONLY:
        _raises(estimator, _model(), q, 2, "must be a diagonal Gaussian", "score-function estimator")
        estimator(_model(), _q(), 2)  # a diagonal Gaussian is accepted


def test_analytic_kl_without_a_registered_pair():
    class StudentPrior(ConjugateGaussian):
        @property
        def prior(self):
            return Independent(StudentT(3.0, self.prior_loc, self.prior_scale.expand(2)), 1)

    model = StudentPrior(torch.tensor([0.5, -1.0]), torch.zeros(2))
    _raises(ESTIMATORS["pathwise_analytic_kl"], model, _q(), 2, "no analytic KL", "register_kl",
            "'pathwise'")
    ESTIMATORS["pathwise"](model, _q(), 2)  # the suggested fix works


@pytest.mark.parametrize("name", [n for n, e in CONTINUOUS.items() if e.min_samples > 1])
def test_leave_one_out_and_optimal_baselines_need_two_samples(name):
    _raises(ESTIMATORS[name], _model(), _q(), 1, "num_samples >= 2", "got 1")
    ESTIMATORS[name](_model(), _q(), 2)


@pytest.mark.parametrize("wrong", ["summed over samples", "per coordinate"])
def test_log_joint_of_the_wrong_shape(wrong):
    class Wrong(ConjugateGaussian):
        def log_joint(self, z):
            log_joint = super().log_joint(z)
            return log_joint.sum(0) if wrong == "summed over samples" else log_joint.unsqueeze(-1).expand(z.shape)

    for estimator in CONTINUOUS.values():
        if estimator.name == "pathwise_analytic_kl":  # uses log_likelihood, checked below
            continue
        _raises(estimator, Wrong(torch.tensor([0.5, -1.0]), torch.zeros(2)), _q(), 3,
                "log_joint returned shape", "expected (num_samples, *q.batch_shape) = (3,)")


def test_log_likelihood_of_the_wrong_shape():
    class Wrong(ConjugateGaussian):
        def log_likelihood(self, z):
            return super().log_likelihood(z).sum(0)

    _raises(ESTIMATORS["pathwise_analytic_kl"], Wrong(torch.tensor([0.5, -1.0]), torch.zeros(2)),
            _q(), 3, "log_likelihood returned shape", "expected")


def test_nan_in_q_parameters():
    loc = torch.tensor([0.0, float("nan")])
    q = Independent(Normal(loc, torch.ones(2), validate_args=False), 1)
    for estimator in CONTINUOUS.values():
        _raises(estimator, _model(), q, 2, "contains NaN", "loc")
