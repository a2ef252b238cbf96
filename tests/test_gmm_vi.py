"""The gmm-vi study: exact gradients by quadrature, the 1/K law, unbiasedness, the discrete choice.

Statistical checks run with fixed seeds; each test spends a 1/STATISTICAL_BUDGET share of the
suite's false-positive rate (conftest.z_threshold, Bonferroni across its comparisons), and each is
shown able to fail: a deliberately wrong variant is rejected by the same check.
"""

import json
import math

import pytest
import torch
from scipy import integrate
from torch.distributions import Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.targets import GaussianMixtureTarget
from experiments import gmm_vi
from experiments.__main__ import main
from experiments.quadrature import gaussian_elbo, iwae_bound, mixture_elbo
from conftest import z_threshold

CONFIG = gmm_vi.Config()


def gaussian_closed_form(mu, sigma, loc, log_scale):
    """ELBO of q = N(loc, diag exp(2 log_scale)) against N(mu, diag sigma^2), by hand."""
    scale = log_scale.exp()
    cross = (Normal(mu, sigma).log_prob(loc) - scale.pow(2) / (2 * sigma.pow(2))).sum(-1)
    return cross + (log_scale + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


def closed_form_gradient(mu, sigma, loc, log_scale):
    loc, log_scale = loc.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    elbo = gaussian_closed_form(mu, sigma, loc, log_scale)
    return (elbo.detach(), *torch.autograd.grad(elbo.sum(), [loc, log_scale]))


@pytest.mark.parametrize("dim, product, method", [(1, False, "quad_vec"), (2, False, "quad_vec"),
                                                  (5, True, "quad_vec"), (5, True, "cubature")])
def test_quadrature_equals_the_gaussian_closed_form(dim, product, method):
    # A one-component "mixture" is a Gaussian: its ELBO and gradient are known by hand.
    generator = torch.Generator().manual_seed(dim)
    mu, sigma = torch.randn(dim, generator=generator), 0.5 + torch.rand(dim, generator=generator)
    loc, log_scale = torch.randn(dim, generator=generator), 0.3 * torch.randn(dim, generator=generator)
    if product:
        target = gmm_vi.ProductMixtureTarget(torch.zeros(dim, 1), mu[:, None], sigma[:, None])
        exact = gaussian_elbo(target.log_factors, loc, log_scale, product=True, method=method)
    else:
        target = GaussianMixtureTarget(torch.zeros(1), mu[None], sigma[None])
        exact = gaussian_elbo(target.log_joint, loc, log_scale, method=method)
    elbo, grad_loc, grad_log_scale = closed_form_gradient(mu, sigma, loc, log_scale)
    assert abs(exact.elbo - elbo) < 1e-8
    assert torch.allclose(exact.loc, grad_loc, atol=1e-8, rtol=0)
    assert torch.allclose(exact.log_scale, grad_log_scale, atol=1e-8, rtol=0)


def test_quadrature_of_a_mixture_agrees_with_scalar_quad():
    # The vector-valued rule against scipy's plain quad, one coordinate at a time.
    target = gmm_vi.one_dimensional_target(CONFIG)
    loc, log_scale = torch.tensor([0.4]), torch.tensor([-0.3])
    exact = gaussian_elbo(target.log_joint, loc, log_scale)

    def derivative(e):
        z = (loc + log_scale.exp() * e).requires_grad_(True)
        (grad,) = torch.autograd.grad(target.log_joint(z.reshape(1, 1)).sum(), z)
        return grad.item() * math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)

    by_quad, _ = integrate.quad(derivative, -math.inf, math.inf, epsabs=1e-12, epsrel=1e-12)
    assert abs(by_quad - exact.loc.item()) < 1e-8


def test_product_form_gradient_is_per_coordinate_quadrature():
    # The product-form rule, coordinate d, equals the 1-D rule on factor d alone.
    target = gmm_vi.ProductMixtureTarget.shifted_copies(gmm_vi.one_dimensional_target(CONFIG), 4)
    loc, log_scale = torch.linspace(-1, 1, 4), torch.full((4,), -0.2)
    joint = gaussian_elbo(target.log_factors, loc, log_scale, product=True)
    for d in range(4):
        factor = GaussianMixtureTarget(target.logits[d], target.locs[d, :, None],
                                       target.scales[d, :, None])
        alone = gaussian_elbo(factor.log_joint, loc[d:d + 1], log_scale[d:d + 1])
        assert abs(alone.loc.item() - joint.loc[d].item()) < 1e-9
        assert abs(alone.log_scale.item() - joint.log_scale[d].item()) < 1e-9


def test_mixture_logit_gradient_matches_finite_differences():
    target = gmm_vi.one_dimensional_target(CONFIG)
    logits, locs, scales = torch.tensor([0.3, -0.3]), torch.tensor([-1.0, 1.5]), torch.tensor([0.7, 0.9])
    _, gradient = mixture_elbo(target.log_joint, logits, locs, scales)
    step = 1e-5
    for c in range(2):
        shift = step * torch.eye(2)[c]
        plus = mixture_elbo(target.log_joint, logits + shift, locs, scales)[0]
        minus = mixture_elbo(target.log_joint, logits - shift, locs, scales)[0]
        assert abs((plus - minus) / (2 * step) - gradient[c].item()) < 1e-7


def test_quadrature_refuses_a_general_high_dimensional_target():
    target = GaussianMixtureTarget(torch.zeros(1), torch.zeros(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="product form"):
        gaussian_elbo(target.log_joint, torch.zeros(4), torch.zeros(4))


def _total_variance(name, num_samples, num_replicates, seed):
    torch.manual_seed(seed)
    target = gmm_vi.one_dimensional_target(CONFIG)
    grads = gmm_vi.gaussian_gradients(name, target, torch.tensor([0.3]), torch.tensor([-0.2]),
                                      num_samples, num_replicates)
    stats = gradient_statistics(grads)
    return stats.total_variance.item(), stats.total_variance_se.item()


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["pathwise", "score_function"])
def test_variance_falls_as_one_over_k(name):
    # K x Var(K) = Var(1) under the 1/K law; the same z-test rejects a 1/sqrt(K) law.
    num_samples, num_replicates = 16, 20_000
    one, one_se = _total_variance(name, 1, num_replicates, seed=0)
    many, many_se = _total_variance(name, num_samples, num_replicates, seed=1)
    threshold = z_threshold(2)  # the two estimators checked

    def z(power):
        factor = num_samples ** power
        return (factor * many - one) / math.hypot(factor * many_se, one_se)

    assert abs(z(1.0)) < threshold, f"{name}: K x Var(K) differs from Var(1), z = {z(1.0):.1f}"
    assert abs(z(0.5)) > threshold, f"{name}: the check cannot tell 1/K from 1/sqrt(K)"


@pytest.mark.parametrize("name", ["pathwise", "score_function_ema"])
def test_chunks_that_leave_one_replicate_over_run_and_draw_the_former_loops_numbers(name):
    # R % chunk == 1 (7 in chunks of 3) used to end with a chunk of one replicate and raise. The
    # passes are now 3, 2, 2, one after the other: the same numbers as unchunked calls in that
    # order (score_function_ema's warm-up and running state included).
    target = gmm_vi.one_dimensional_target(CONFIG)
    loc, log_scale = torch.tensor([0.3]), torch.tensor([-0.2])
    torch.manual_seed(12)
    chunked = gmm_vi.gaussian_gradients(name, target, loc, log_scale, 2, 7, chunk=3)
    torch.manual_seed(12)
    target_with_prior = gmm_vi.WithStandardPrior(target, 1, gmm_vi.DTYPE)
    options = {}
    if name == "score_function_ema":  # the warm-up call, on min(R, chunk) = 3 replicates
        state = gmm_vi.EmaBaseline()
        ESTIMATORS[name](target_with_prior, gmm_vi.gaussian_q(loc.expand(3, -1),
                                                             log_scale.expand(3, -1)), 2,
                         state=state)
        options = {"state": state}
    parts = []
    for size in (3, 2, 2):
        grads = replicate_gradients(
            ESTIMATORS[name], lambda lam, theta: (target_with_prior,
                                                  gmm_vi.gaussian_q(lam["loc"], lam["log_scale"])),
            {"loc": loc, "log_scale": log_scale}, num_replicates=size, num_samples=2, **options)
        parts.append(torch.cat([grads.lambda_["loc"], grads.lambda_["log_scale"]], -1))
    assert chunked.shape == (7, 2)
    assert torch.equal(chunked, torch.cat(parts))


def _max_abs_z(name, num_samples, seed, num_replicates=20_000):
    torch.manual_seed(seed)
    target = gmm_vi.one_dimensional_target(CONFIG)
    loc, log_scale = torch.tensor([0.3]), torch.tensor([-0.2])
    exact = gaussian_elbo(target.log_joint, loc, log_scale)
    grads = gmm_vi.gaussian_gradients(name, target, loc, log_scale, num_samples, num_replicates)
    stats = gradient_statistics(grads, torch.cat([exact.loc, exact.log_scale]))
    return stats.z.abs().max().item()


# Every registry entry that takes a Gaussian q (gmm_vi.GAUSSIAN: the estimators of discrete
# latents only are checked in test_discrete.py, and on this study's mixture q below) at its
# smallest K (iwae and dreg at K = 1, where they are the ELBO's). vimco needs K >= 2, where it
# estimates the K-sample bound's gradient, not the ELBO's: it is checked against the exact
# gradient of that bound below.
UNBIASED = [(name, ESTIMATORS[name].min_samples) for name in gmm_vi.GAUSSIAN
            if ESTIMATORS[name].objective == "elbo" or ESTIMATORS[name].min_samples == 1]
IWAE_AT_TWO = [name for name in gmm_vi.GAUSSIAN
               if ESTIMATORS[name].objective == "iwae" and ESTIMATORS[name].min_samples == 2]


@pytest.mark.statistical
@pytest.mark.parametrize("name, num_samples", UNBIASED)
def test_every_estimator_is_unbiased_on_the_mixture_target(name, num_samples):
    threshold = z_threshold(2 * len(UNBIASED))  # two coordinates per estimator
    assert _max_abs_z(name, num_samples, seed=10) < threshold


def test_every_estimator_is_checked_on_the_mixture_target():
    assert {n for n, _ in UNBIASED} | set(IWAE_AT_TWO) == set(gmm_vi.GAUSSIAN)
    assert set(gmm_vi.GAUSSIAN) == {n for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds}
    assert IWAE_AT_TWO == ["vimco"]


# q wide enough (log-scale 0.5) that the K = 2 bound's gradient is far from the ELBO's.
BOUND_LOC, BOUND_LOG_SCALE = 0.3, 0.5


@pytest.fixture(scope="module")
def two_sample_bound():
    """R = 20,000 vimco gradients at K = 2 (seed 13), the exact K = 2 bound's and the ELBO's."""
    torch.manual_seed(13)
    target = gmm_vi.one_dimensional_target(CONFIG)
    loc, log_scale = torch.tensor([BOUND_LOC]), torch.tensor([BOUND_LOG_SCALE])
    grads = {name: gmm_vi.gaussian_gradients(name, target, loc, log_scale, 2, 20_000)
             for name in IWAE_AT_TWO}
    exact = {"bound": iwae_bound(target.log_joint, BOUND_LOC, BOUND_LOG_SCALE, 2),
             "elbo": gaussian_elbo(target.log_joint, loc, log_scale)}
    return grads, {k: torch.cat([v.loc, v.log_scale]) for k, v in exact.items()}, exact["bound"]


def test_the_k_sample_bound_by_cubature_is_the_elbo_at_k_1_and_not_at_k_2(two_sample_bound):
    target = gmm_vi.one_dimensional_target(CONFIG)
    elbo = gaussian_elbo(target.log_joint, torch.tensor([BOUND_LOC]), torch.tensor([BOUND_LOG_SCALE]))
    one = iwae_bound(target.log_joint, BOUND_LOC, BOUND_LOG_SCALE, 1)
    for exact in (one.elbo - elbo.elbo, one.loc - elbo.loc, one.log_scale - elbo.log_scale):
        assert exact.abs().max() < 1e-8
    two = two_sample_bound[2]
    assert two.elbo > one.elbo + 0.01  # the bound tightens with K
    assert (two.log_scale - elbo.log_scale).abs().max() > 0.1


def _bound_z(two_sample_bound, name, against="bound"):
    grads, exact, _ = two_sample_bound
    return gradient_statistics(grads[name], exact[against]).z.abs().max().item()


@pytest.mark.statistical
@pytest.mark.parametrize("name", IWAE_AT_TWO)
def test_vimco_is_unbiased_for_the_exact_two_sample_bound(two_sample_bound, name):
    assert _bound_z(two_sample_bound, name) < z_threshold(2)


@pytest.mark.statistical
def test_the_two_sample_check_rejects_the_elbo_gradient_as_vimco_s_target(two_sample_bound):
    assert _bound_z(two_sample_bound, "vimco", against="elbo") > z_threshold(2)


@pytest.mark.statistical
def test_the_unbiasedness_check_rejects_a_biased_gradient():
    # iwae at K = 8 follows the importance-weighted bound, not the ELBO: the check must see it.
    assert _max_abs_z("iwae", 8, seed=11) > z_threshold(2 * len(UNBIASED))


def _logit_z(method, seed, **options):
    torch.manual_seed(seed)
    config = CONFIG.replace(num_replicates=4000)
    target = gmm_vi.one_dimensional_target(config)
    logits = torch.tensor(config.discrete_logits)
    locs = torch.tensor(config.discrete_locs)[:, None]
    log_scales = torch.tensor(config.discrete_scales).log()[:, None]
    _, exact = mixture_elbo(target.log_joint, logits, locs[:, 0], log_scales[:, 0].exp())
    # The score function sees the choice through the augmented latent (c, z); the registry's
    # estimators of a discrete choice take the mixture q itself.
    augmented = method.startswith("score_function")
    estimator = ESTIMATORS[method]

    def build(lam, theta):
        if not augmented:
            return target, gmm_vi.mixture_q(lam["logits"], lam["locs"], lam["log_scales"].exp())
        q = gmm_vi.ComponentAndPoint(lam["logits"], lam["locs"], lam["log_scales"].exp())
        return gmm_vi.AugmentedTarget(target, q.detached()), q

    grads = replicate_gradients(estimator, build,
                                {"logits": logits, "locs": locs, "log_scales": log_scales},
                                num_replicates=config.num_replicates, num_samples=8, **options)
    return gradient_statistics(grads.lambda_["logits"], exact).z[0].item()


@pytest.mark.statistical
def test_gumbel_softmax_is_biased_where_score_function_and_enumeration_are_not():
    threshold = z_threshold(2)  # score_function and enumeration
    assert abs(_logit_z("score_function", seed=20)) < threshold
    assert abs(_logit_z("enumeration", seed=21)) < threshold
    assert abs(_logit_z("gumbel_softmax", seed=22, temperature=5.0)) > threshold


def test_augmented_signal_equals_the_mixture_signal():
    # log p(z) + log q(c|z) - log q(c, z) = log p(z) - log q(z), for every sample.
    target = gmm_vi.one_dimensional_target(CONFIG)
    q = gmm_vi.ComponentAndPoint(torch.tensor([0.2, -0.1]), torch.tensor([[-1.0], [1.0]]),
                                 torch.tensor([[0.5], [0.8]]))
    sample = q.sample((50,))
    augmented = gmm_vi.AugmentedTarget(target, q.detached()).log_joint(sample) - q.log_prob(sample)
    direct = target.log_joint(sample[..., 1:]) - q.marginal.log_prob(sample[..., 1:])
    assert torch.allclose(augmented, direct, atol=1e-12)


TINY = ["--set", "num_replicates=40", "--set", "reference_replicates=40",
        "--set", "samples_grid=1,2", "--set", "scale_grid=0.5,2", "--set", "dim_grid=1,3",
        "--set", "fit_steps=6", "--set", "fit_eval_every=3", "--set", "fit_runs=2",
        "--set", "fit_dim=2", "--set", "temperatures=0.5,2"]


def test_end_to_end_writes_results_and_figures_then_redraws(tmp_path, monkeypatch):
    # The run saves its results and draws nothing here; the figures command then draws every
    # figure from the saved file alone (drawing them twice took most of this test's time).
    drawn = {}
    original = gmm_vi.save_figure

    def look_then_save(fig, paths, name, *args):
        drawn[name] = _bias_panels_and_legend(fig)
        return original(fig, paths, name, *args)

    with monkeypatch.context() as patch:
        patch.setattr(gmm_vi, "plot", lambda *args: [])
        assert main(["gmm-vi", "--quick", "--out", str(tmp_path), *TINY]) == 0
    results = tmp_path / "results" / "gmm-vi-quick.json"
    assert "pathwise" in gmm_vi.summary(json.loads(results.read_text()))
    assert not (tmp_path / "figures" / "gmm-vi-fit-quick.png").exists()
    monkeypatch.setattr(gmm_vi, "save_figure", look_then_save)
    assert main(["figures", "--from", str(tmp_path)]) == 0
    for name in ["samples", "scale", "dimension", "fit", "discrete"]:
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"gmm-vi-{name}-quick.{suffix}").stat().st_size > 0
    # The bias panels once shared a symlog axis (ticks 10^-1, 0, -10^-1) between the ELBO's
    # estimators and the K-sample bound's; now each objective has a linear panel of its own, and
    # the figure's legend still names every estimator.
    for name in ("gmm-vi-samples", "gmm-vi-scale", "gmm-vi-dimension"):
        scales, legend = drawn[name]
        assert scales == ["linear", "linear"], name
        assert set(gmm_vi.GAUSSIAN) <= legend, name


def _bias_panels_and_legend(fig):
    scales = [ax.get_yscale() for ax in fig.axes if ax.get_ylabel().startswith("bias")]
    legend = {t.get_text() for t in fig.legends[0].get_texts()} if fig.legends else set()
    return scales, legend


def test_bad_config_fails_with_one_line_naming_the_field(tmp_path):
    with pytest.raises(SystemExit, match="num_replicates must be >= 2"):
        main(["gmm-vi", "--quick", "--out", str(tmp_path), "--set", "num_replicates=1"])
