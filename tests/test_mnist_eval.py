"""MNIST evaluation: L_k against exact log-likelihoods, active units, vectorised gradients.

Most checks use a linear-Gaussian VAE (no hidden layers, Gaussian decoder), whose log p(x), ELBO
and posterior are known in closed form; with orthogonal decoder columns the exact posterior is a
diagonal Gaussian, which the encoder can represent exactly.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from conftest import z_threshold
from estimators import ESTIMATORS
from estimators.diagnostics import chunk_sizes
from experiments.mnist import evaluate
from experiments.mnist.models import VAE, Architecture

# Statistical checks (marked ``statistical``): fixed seeds; each test spends a
# 1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE (conftest.z_threshold),
# Bonferroni-split across its z-tests, its deliberately wrong variants counted too.

DATA_DIM, LATENT, NOISE_SCALE = 6, 2, 0.5


def linear_gaussian_vae(exact_posterior: bool = True) -> VAE:
    """x = W z + b + noise, W with orthogonal columns; encoder = exact posterior (or shifted)."""
    generator = torch.Generator().manual_seed(0)
    vae = VAE(Architecture((), LATENT), data_dim=DATA_DIM, likelihood="gaussian")
    basis, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT, generator=generator))
    weight = basis * torch.tensor([2.0, 0.7])  # orthogonal columns of norms 2 and 0.7
    bias = 0.3 * torch.randn(DATA_DIM, generator=generator)
    precision = 1 + weight.pow(2).sum(0) / NOISE_SCALE**2
    covariance = 1 / precision
    gain = covariance[:, None] * weight.T / NOISE_SCALE**2  # posterior mean = gain (x - b)
    with torch.no_grad():
        vae.decoder[0].weight.copy_(weight)
        vae.decoder[0].bias.copy_(bias)
        vae.decoder_log_scale.fill_(math.log(NOISE_SCALE))
        encoder = vae.encoder[0]
        encoder.weight.zero_()
        encoder.weight[:LATENT] = gain
        encoder.bias[:LATENT] = -gain @ bias
        # softplus(pre) + 1e-6 = posterior sd
        encoder.bias[LATENT:] = torch.log(torch.expm1(covariance.sqrt() - 1e-6))
        if not exact_posterior:
            encoder.bias[:LATENT] += torch.tensor([0.8, -0.5])
            encoder.bias[LATENT:] -= 0.7
    return vae


def exact_log_likelihood(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    weight, bias = vae.decoder[0].weight, vae.decoder[0].bias
    covariance = weight @ weight.T + torch.diag(vae.decoder_log_scale.exp().pow(2))
    return MultivariateNormal(bias, covariance).log_prob(x).detach()


def exact_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log p(x | z)] - KL(q || p) in closed form for the linear-Gaussian decoder."""
    weight, bias = vae.decoder[0].weight, vae.decoder[0].bias
    q = vae.posterior(x)
    variance = vae.decoder_log_scale.exp().pow(2)
    expected = Independent(Normal(q.mean @ weight.T + bias, variance.sqrt()), 1).log_prob(x)
    # E_q (x_i - w_i z - b_i)^2 = (x_i - w_i mu - b_i)^2 + sum_j W_ij^2 var_j
    expected = expected - 0.5 * (q.variance[:, None, :] * weight.pow(2)[None]
                                 / variance[None, :, None]).sum((-1, -2))
    return (expected - kl_divergence(q, vae.prior)).detach()


def _points(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, DATA_DIM, generator=torch.Generator().manual_seed(seed))


def test_log_likelihood_is_exact_when_q_is_the_posterior():
    # With q the exact posterior every importance weight equals p(x): L_k = log p(x) for every k.
    vae = linear_gaussian_vae(exact_posterior=True)
    x = _points(7, seed=1)
    truth = exact_log_likelihood(vae, x)
    torch.manual_seed(2)
    for k in (1, 3, 50):
        estimate = evaluate.importance_sampled_log_likelihood(vae, x, num_samples=k, chunk=2)
        assert torch.allclose(estimate, truth, atol=1e-9), k
    assert torch.allclose(exact_elbo(vae, x), truth, atol=1e-9)  # the closed forms agree
    # The same check rejects a q that is not the posterior.
    off = linear_gaussian_vae(exact_posterior=False)
    torch.manual_seed(3)
    estimate = evaluate.importance_sampled_log_likelihood(off, x, num_samples=1)
    assert not torch.allclose(estimate, truth, atol=1e-3)


def test_chunking_does_not_change_the_estimate():
    vae = linear_gaussian_vae(exact_posterior=False)
    x = _points(5, seed=2)
    torch.manual_seed(3)
    whole = evaluate.importance_sampled_log_likelihood(vae, x, num_samples=40, chunk=40,
                                                       batch_size=5)
    torch.manual_seed(3)
    # Chunks of 40 draw the same numbers in the same order as chunks of 8 within one batch.
    parts = evaluate.importance_sampled_log_likelihood(vae, x, num_samples=40, chunk=8,
                                                       batch_size=5)
    assert torch.allclose(whole, parts, atol=1e-10)


def test_a_long_likelihood_shows_its_progress_and_the_same_numbers(monkeypatch, capsys):
    vae = linear_gaussian_vae(exact_posterior=False)
    x = _points(5, seed=2)
    torch.manual_seed(3)
    quiet = evaluate.importance_sampled_log_likelihood(vae, x, num_samples=40, batch_size=2)
    assert "final L_40" not in capsys.readouterr().err
    monkeypatch.delenv("EXPERIMENTS_NO_PROGRESS", raising=False)
    torch.manual_seed(3)
    shown = evaluate.importance_sampled_log_likelihood(vae, x, num_samples=40, batch_size=2,
                                                       description="final L_40")
    err = capsys.readouterr().err
    assert "final L_40" in err and "0/3" in err  # 5 images in batches of 2
    assert torch.equal(quiet, shown)


def _repeated(num_repeats: int, seed: int = 4):
    x = _points(3, seed)
    return x, x.repeat(num_repeats, 1)


def _z_against(values: torch.Tensor, target: torch.Tensor) -> float:
    """z of the mean of per-repeat values (each the mean over the 3 points) against a target."""
    per_repeat = values.reshape(-1, 3).mean(-1)
    return ((per_repeat.mean() - target) / (per_repeat.std() / math.sqrt(len(per_repeat)))).item()


@pytest.mark.statistical
def test_one_sample_bound_is_the_elbo_in_expectation():
    # Seeds 5, 6, 7; three z-tests: L_1 and test_elbo against the ELBO, and L_2 (wrong) against it.
    Z = z_threshold(3)
    vae = linear_gaussian_vae(exact_posterior=False)
    x, repeated = _repeated(4000)
    elbo = exact_elbo(vae, x).mean()
    torch.manual_seed(5)
    one = evaluate.importance_sampled_log_likelihood(vae, repeated, num_samples=1)
    assert abs(_z_against(one, elbo)) < Z
    # test_elbo averages the same single-sample estimates; L_1's spread gives its standard error.
    torch.manual_seed(6)
    mean = evaluate.test_elbo(vae, repeated, batch_size=1000, estimator="pathwise")
    se = one.reshape(-1, 3).mean(-1).std() / math.sqrt(4000)
    assert abs((mean - elbo.item()) / se.item()) < Z
    # Deliberately wrong: L_2 is not the ELBO, and the same check says so.
    torch.manual_seed(7)
    two = evaluate.importance_sampled_log_likelihood(vae, repeated, num_samples=2)
    assert abs(_z_against(two, elbo)) > Z


def _k_sample_elbo(vae, x, k):
    """Deliberately wrong 'L_k': the mean of the log weights, which does not grow with k."""
    q = vae.posterior(x)
    z = q.sample((k,))
    return (vae.bind(x).log_joint(z) - q.log_prob(z)).mean(0).detach()


def _increase_z(lower: torch.Tensor, upper: torch.Tensor) -> float:
    difference = upper.reshape(-1, 3).mean(-1) - lower.reshape(-1, 3).mean(-1)
    return (difference.mean() / (difference.std() / math.sqrt(len(difference)))).item()


@pytest.mark.statistical
def test_bound_increases_with_k_towards_log_likelihood():
    # Seeds 9, 10; three z-tests: L_1 < L_10, L_10 < L_100, and the wrong estimate's non-increase.
    Z = z_threshold(3)
    vae = linear_gaussian_vae(exact_posterior=False)
    x, repeated = _repeated(2000, seed=8)
    torch.manual_seed(9)
    bounds = {k: evaluate.importance_sampled_log_likelihood(vae, repeated, num_samples=k)
              for k in (1, 10, 100)}
    assert _increase_z(bounds[1], bounds[10]) > Z
    assert _increase_z(bounds[10], bounds[100]) > Z
    truth = exact_log_likelihood(vae, x).mean()
    assert bounds[100].mean() < truth  # still a lower bound
    # The same check rejects an estimate that averages log weights instead of weights.
    torch.manual_seed(10)
    wrong = {k: _k_sample_elbo(vae, repeated, k) for k in (10, 100)}
    assert _increase_z(wrong[10], wrong[100]) < Z


def test_active_units_counts_a_varying_unit_and_not_a_constant_one():
    vae = linear_gaussian_vae(exact_posterior=True)
    with torch.no_grad():
        vae.encoder[0].weight[0] *= 0.01  # unit 0: posterior mean varies, but by < 1e-2
        vae.encoder[0].weight[1] = 0.0  # unit 1: posterior mean constant
    x = _points(500, seed=11)
    variances = evaluate.posterior_mean_variance(vae, x)
    assert variances[1] == 0 and 0 < variances[0] < 1e-2
    assert evaluate.active_units(vae, x) == 0
    with torch.no_grad():
        vae.encoder[0].weight[0] *= 100  # unit 0 active again
    assert evaluate.active_units(vae, x) == 1
    assert evaluate.active_units(vae, x, threshold=10.0) == 0


def tiny_vae(seed=12, likelihood="bernoulli") -> VAE:
    torch.manual_seed(seed)
    return VAE(Architecture((5,), 3), data_dim=8, likelihood=likelihood)


def _tiny_batch(seed=13):
    return (torch.rand(4, 8, generator=torch.Generator().manual_seed(seed)) < 0.4).double()


class _FixedNoiseNormal(Normal):
    """A Normal whose draws are given: the loop below replays the vectorised pass's noise."""

    def __init__(self, loc, scale, noise):
        super().__init__(loc, scale)
        self.noise = noise

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.noise

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("name", evaluate.estimator_names())
def test_vectorised_gradients_equal_a_loop_of_backward_calls(name, likelihood):
    if evaluate.estimator_for(name).extra_randomness:
        pytest.skip(f"{name} draws more than q's standard noise, so a loop cannot replay its "
                    "draws; tests/test_unbiased.py checks it")
    vae = tiny_vae(likelihood=likelihood)
    x = _tiny_batch()
    num_replicates, num_samples = 3, 2
    baseline = nn.Linear(8, 1)  # NVIL's b(x): any network of x, used detached

    def b(inputs):
        return baseline(inputs).squeeze(-1)

    torch.manual_seed(14)
    grads = evaluate.replicate_vae_gradients(vae, x, name, num_replicates, num_samples,
                                             baseline=b)
    torch.manual_seed(14)
    # The vectorised pass draws all replicates' standard-normal noise in one call of this shape.
    noise = torch.empty(num_samples, num_replicates, x.shape[0], 3).normal_()
    estimator = evaluate.estimator_for(name)
    options = {"baseline": b(x).detach()} if name == evaluate.NVIL else {}
    names = [n for n, _ in vae.named_parameters()]
    for r in range(num_replicates):  # the slow reference: one backward call per replicate
        q = vae.posterior(x)
        q = Independent(_FixedNoiseNormal(q.base_dist.loc, q.base_dist.scale, noise[:, r]), 1)
        surrogate = estimator(vae.bind(x), q, num_samples, **options).surrogate.mean()
        expected = torch.autograd.grad(surrogate, list(vae.parameters()), allow_unused=True)
        for param_name, want in zip(names, expected):
            got = {**grads.lambda_, **grads.theta}[param_name][r]
            want = torch.zeros_like(got) if want is None else want
            assert torch.allclose(got, want, rtol=1e-8, atol=1e-10), (param_name, r)


def test_replicate_chunks_are_the_same_estimator():
    # Chunks are drawn one after the other: 7 replicates in chunks of 3 are passes of 3, 2 and 2,
    # and give exactly the numbers of three unchunked calls of those sizes, in that order, from
    # the same seed; the same replicates in another order, or one pass twice, fail.
    vae, x = tiny_vae(), _tiny_batch()
    torch.manual_seed(15)
    whole = evaluate.replicate_vae_gradients(vae, x, "pathwise", 6, 2)
    assert whole.elbo.shape == (6,)
    torch.manual_seed(15)
    chunked = evaluate.replicate_vae_gradients(vae, x, "pathwise", 7, 2, replicate_chunk=3)
    assert chunked.elbo.shape == (7,)
    assert all(g.shape[0] == 7 for g in chunked.lambda_.values())
    torch.manual_seed(15)
    parts = [evaluate.replicate_vae_gradients(vae, x, "pathwise", size, 2) for size in (3, 2, 2)]
    assert torch.equal(chunked.elbo, torch.cat([p.elbo for p in parts]))
    for group in ("lambda_", "theta"):
        for name, value in getattr(chunked, group).items():
            expected = torch.cat([getattr(p, group)[name] for p in parts])
            assert torch.equal(value, expected), (group, name)
    # A chunk that holds every replicate is one pass: the unchunked numbers.
    torch.manual_seed(15)
    one_pass = evaluate.replicate_vae_gradients(vae, x, "pathwise", 6, 2, replicate_chunk=6)
    assert torch.equal(one_pass.elbo, whole.elbo)
    for name, value in whole.lambda_.items():
        assert torch.equal(one_pass.lambda_[name], value), name


def test_replicate_chunks_are_never_single_replicates():
    """An odd count in chunks of 2 must not leave a chunk of one replicate (no variance)."""
    for total in range(2, 40):
        for chunk in range(2, total + 1):  # a chunk of 1 is refused (below)
            sizes = chunk_sizes(total, chunk)  # what replicate_vae_gradients' passes hold
            assert sum(sizes) == total and min(sizes) >= 2, (total, chunk, sizes)
            assert max(sizes) <= max(chunk, 2) + 1, (total, chunk, sizes)
    with pytest.raises(ValueError, match="chunk must be >= 2"):
        evaluate.replicate_vae_gradients(tiny_vae(), _tiny_batch(), "pathwise", 5, 2,
                                         replicate_chunk=1)
    torch.manual_seed(15)
    grads = evaluate.replicate_vae_gradients(tiny_vae(), _tiny_batch(), "pathwise", 5, 2,
                                             replicate_chunk=2)
    assert grads.elbo.shape == (5,)


@pytest.mark.statistical
def test_score_function_has_more_encoder_variance_than_pathwise():
    # Seeds 16-19; two z-tests: score_function above pathwise, and not above itself (wrong claim).
    Z = z_threshold(2)
    vae, x = tiny_vae(seed=16), _tiny_batch(seed=17)
    stats = evaluate.gradient_variance(vae, x, ["score_function", "pathwise"], 400, 2, seed=18)
    again = evaluate.gradient_variance(vae, x, ["score_function"], 400, 2, seed=19)

    def z(a, b):  # a's total encoder variance above b's, in standard errors
        a, b = a["encoder"], b["encoder"]
        return (a["total_variance"] - b["total_variance"]) / math.hypot(
            a["total_variance_se"], b["total_variance_se"])

    assert z(stats["score_function"], stats["pathwise"]) > Z
    # Same check, deliberately wrong claim: score_function against itself (fresh draws).
    assert z(again["score_function"], stats["score_function"]) < Z
    for name in stats:
        for group in ("encoder", "decoder"):
            assert math.isfinite(stats[name][group]["mean_snr"])
    # Every registry name runs and reports both groups.
    every = evaluate.gradient_variance(vae, x, evaluate.estimator_names(), 4, 2,
                                       baseline=lambda inputs: inputs.sum(-1))
    continuous = {n for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds}
    assert set(every) == continuous | {evaluate.NVIL}


def test_elbo_takes_every_name_and_ema_needs_no_state():
    # score_function_ema without a state makes its own (b = 0); NVIL's baseline changes the
    # gradient only, so the bound needs none. Every name gives a finite bound.
    vae, x = tiny_vae(), _tiny_batch()
    for name in evaluate.estimator_names():
        torch.manual_seed(20)
        assert math.isfinite(evaluate.test_elbo(vae, x, batch_size=3, estimator=name,
                                                num_samples=2)), name


def test_bad_input_raises_a_clear_error():
    vae, x = tiny_vae(), _tiny_batch()
    with pytest.raises(ValueError, match="unknown estimator"):
        evaluate.gradient_variance(vae, x, ["nope"], 4, 2)
    with pytest.raises(ValueError, match="needs baseline"):
        evaluate.gradient_variance(vae, x, [evaluate.NVIL], 4, 2)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        evaluate.gradient_variance(vae, x, ["score_function_loo"], 4, 1)
    with pytest.raises(ValueError, match="pixels"):
        evaluate.test_elbo(vae, torch.zeros(3, 5), 2)
