"""estimators.diagnostics against answers known in closed form.

The problem: log p(x, z) = sum_d z_d^2 (PolynomialTarget with coefficients (0, 0, 1)) and
q = N(mu, diag sigma^2), so with z = mu + sigma e the pathwise estimate with K samples is
    d/dmu_d        = mean_k 2 (mu_d + sigma_d e_k)                  mean 2 mu,         variance 4 sigma^2 / K
    d/dlog sigma_d = mean_k [2 (mu_d + sigma_d e_k) sigma_d e_k + 1]  mean 2 sigma^2 + 1, variance (4 mu^2 sigma^2 + 8 sigma^4) / K
(the +1 is the entropy's gradient; d log q(mu + sigma e)/dmu = 0 at fixed e), and the gradient
with respect to the coefficient of z^p is sum_d E[z_d^p].

Statistical checks: fixed seeds; each test function spends a 1/STATISTICAL_BUDGET share of the
suite's FALSE_POSITIVE_RATE (conftest), Bonferroni-split across its coordinates by
``z_threshold``. Each check has a twin that feeds it a wrong answer and asserts that it rejects
(test_lambda_and_theta_are_reported_apart makes two checks, so spends two shares).
"""

import pytest
import torch
from torch.distributions import Independent, Normal

from conftest import z_threshold
from estimators import ESTIMATORS
from estimators.base import ElboEstimate
from estimators.diagnostics import (chunk_sizes, diagnose, gradient_statistics, group_summary,
                                    replicate_gradients)
from estimators.targets import PolynomialTarget
from experiments import benchmark_diagnostics

MU = torch.tensor([0.7, -1.2], dtype=torch.float64)
SIGMA = torch.tensor([0.5, 1.5], dtype=torch.float64)
COEFFICIENTS = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
NUM_SAMPLES = 2
NUM_REPLICATES = 20_000
LAMBDA = {"loc": MU, "log_scale": SIGMA.log()}
THETA = {"coefficients": COEFFICIENTS}

EXACT_MEAN = {"loc": 2 * MU, "log_scale": 2 * SIGMA**2 + 1}
EXACT_VARIANCE = {"loc": 4 * SIGMA**2 / NUM_SAMPLES,
                  "log_scale": (4 * MU**2 * SIGMA**2 + 8 * SIGMA**4) / NUM_SAMPLES}


def build(lam, theta):
    coefficients = theta["coefficients"] if theta else COEFFICIENTS
    return (PolynomialTarget(coefficients),
            Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1))


def pathwise_replicates(seed, estimator=ESTIMATORS["pathwise"], num_replicates=NUM_REPLICATES):
    torch.manual_seed(seed)
    return replicate_gradients(estimator, build, LAMBDA, THETA, num_replicates=num_replicates,
                               num_samples=NUM_SAMPLES)


def variance_z(grads, exact_variance):
    z = []
    for name, exact in exact_variance.items():
        stats = gradient_statistics(grads[name])
        z.append(((stats.variance - exact) / stats.variance_se).flatten())
    return torch.cat(z)


@pytest.mark.statistical
def test_variance_matches_the_closed_form_within_its_standard_error():
    z = variance_z(pathwise_replicates(seed=10).lambda_, EXACT_VARIANCE)
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


@pytest.mark.statistical
def test_the_variance_check_rejects_a_formula_that_forgets_to_divide_by_k():
    wrong = {name: value * NUM_SAMPLES for name, value in EXACT_VARIANCE.items()}
    z = variance_z(pathwise_replicates(seed=10).lambda_, wrong)
    assert z.abs().max() > z_threshold(z.numel())


@pytest.mark.statistical
def test_total_variance_is_the_trace():
    stats = gradient_statistics(pathwise_replicates(seed=11).lambda_["loc"])
    exact = EXACT_VARIANCE["loc"].sum()
    assert abs(stats.total_variance - exact) / stats.total_variance_se < z_threshold(1)
    assert torch.allclose(stats.total_variance, stats.variance.sum())
    # twin: the trace of a variance that forgets its 1/K is rejected
    assert abs(stats.total_variance - exact * NUM_SAMPLES) / stats.total_variance_se > z_threshold(1)


def snr_z(grads, exact_snr):
    stats = gradient_statistics(grads)
    return (stats.snr - exact_snr) / stats.snr_se


@pytest.mark.statistical
def test_snr_is_mean_over_standard_deviation():
    grads = pathwise_replicates(seed=12).lambda_
    exact = {n: EXACT_MEAN[n].abs() / EXACT_VARIANCE[n].sqrt() for n in EXACT_MEAN}
    z = torch.cat([snr_z(grads[n], exact[n]) for n in exact])
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()
    # The formula itself, on the numbers: |mean| / sd with the unbiased variance.
    stats = gradient_statistics(grads["loc"])
    assert torch.allclose(stats.snr, grads["loc"].mean(0).abs() / grads["loc"].std(0))


@pytest.mark.statistical
def test_the_snr_check_rejects_mean_over_variance():
    grads = pathwise_replicates(seed=12).lambda_
    wrong = {n: EXACT_MEAN[n].abs() / EXACT_VARIANCE[n] for n in EXACT_MEAN}
    z = torch.cat([snr_z(grads[n], wrong[n]) for n in wrong])
    assert z.abs().max() > z_threshold(z.numel())


@pytest.mark.statistical
def test_bias_is_zero_against_the_exact_gradient_and_detected_against_a_wrong_one():
    grads = pathwise_replicates(seed=13).lambda_
    right = torch.cat([gradient_statistics(grads[n], EXACT_MEAN[n]).z for n in EXACT_MEAN])
    assert right.abs().max() < z_threshold(right.numel()), right.tolist()
    # A plausible mistake: the exact gradient without the entropy's +1 for log sigma.
    wrong = gradient_statistics(grads["log_scale"], EXACT_MEAN["log_scale"] - 1)
    assert wrong.z.abs().max() > z_threshold(right.numel())
    assert torch.allclose(wrong.bias, wrong.mean - (EXACT_MEAN["log_scale"] - 1))
    assert torch.equal(wrong.bias_se, wrong.mean_se)


def test_a_deterministic_gradient_has_zero_bias_up_to_rounding_and_no_more():
    grads = pathwise_replicates(seed=14, num_replicates=100).theta["coefficients"]
    assert torch.equal(grads[:, 0], torch.full((100,), 2.0))  # d/dc_0 of sum_d c_0 z_d^0: exactly 2
    assert gradient_statistics(grads[:, 0], 2.0).z.abs() < 1
    assert gradient_statistics(grads[:, 0], 2.0 + 1e-9).z.abs() > 1e3


def test_float32_deterministic_gradients_get_the_float32_rounding_floor():
    # 0.1 in float32 is 0.1 + 1.5e-9: a rounding error, not a bias, of float32 gradients. The
    # floor used to be float64's (the gradients are cast before the statistics), giving z ~ 5e5.
    grads = torch.full((100,), 0.1, dtype=torch.float32)
    assert gradient_statistics(grads, 0.1).z.abs() < 1
    # A bias of 1e-4 is far beyond float32's rounding at 0.1 (about 1.5e-6 here): still caught.
    assert gradient_statistics(grads, 0.1 + 1e-4).z.abs() > 10


@pytest.mark.statistical
def test_lambda_and_theta_are_reported_apart():
    exact_theta = {"coefficients": torch.stack([torch.tensor(2.0), MU.sum(),
                                                (MU**2 + SIGMA**2).sum()])}
    torch.manual_seed(15)
    report = diagnose(ESTIMATORS["pathwise"], build, LAMBDA, THETA, num_replicates=NUM_REPLICATES,
                      num_samples=NUM_SAMPLES, exact_lambda=EXACT_MEAN, exact_theta=exact_theta)
    assert set(report) == {"lambda", "theta"}
    assert set(report["lambda"]) == {"loc", "log_scale"}
    assert set(report["theta"]) == {"coefficients"}
    z = torch.cat([s.z.flatten() for group in report.values() for s in group.values()])
    assert z.numel() == 7
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()
    # theta's own variance: d/dc_p = mean_k sum_d z_d^p, so Var d/dc_1 = sum_d sigma_d^2 / K.
    theta = report["theta"]["coefficients"]
    expected = (SIGMA**2).sum() / NUM_SAMPLES
    assert abs(theta.variance[1] - expected) / theta.variance_se[1] < z_threshold(1)
    # twin: the same variance without its 1/K is rejected
    assert abs(theta.variance[1] - expected * NUM_SAMPLES) / theta.variance_se[1] > z_threshold(1)


def shared_noise_pathwise(group):
    """A wrong vectorisation: each run of ``group`` neighbouring replicates shares one noise draw."""

    def estimator(model, q, num_samples):
        replicates, dim = q.batch_shape[0], q.event_shape[0]
        noise = torch.randn(num_samples, -(-replicates // group), dim)
        noise = noise.repeat_interleave(group, dim=1)[:, :replicates]
        z = q.base_dist.loc + q.base_dist.scale * noise
        elbo = (model.log_joint(z) - q.log_prob(z)).mean(0)
        return ElboEstimate(elbo, elbo)

    return estimator


def loop_gradients(estimator, count, seed):
    """Gradient estimates one at a time: fresh leaves, one backward() each."""
    torch.manual_seed(seed)
    rows = []
    for _ in range(count):
        lam = {n: v.clone().requires_grad_(True) for n, v in LAMBDA.items()}
        _, q = build(lam, None)
        estimator(PolynomialTarget(COEFFICIENTS), q, NUM_SAMPLES).surrogate.backward()
        rows.append(torch.cat([lam["loc"].grad, lam["log_scale"].grad]))
    return torch.stack(rows)


def independence_z(estimator, seed):
    """Two-sample z of vectorised against looped variances; z of neighbouring replicates' correlation."""
    grads = pathwise_replicates(seed, estimator, num_replicates=4000).lambda_
    vectorised = torch.cat([grads["loc"], grads["log_scale"]], -1)
    looped = loop_gradients(ESTIMATORS["pathwise"], 300, seed + 1)
    a, b = gradient_statistics(vectorised), gradient_statistics(looped)
    variance = (a.variance - b.variance) / (a.variance_se.pow(2) + b.variance_se.pow(2)).sqrt()
    even, odd = vectorised[0::2], vectorised[1::2]
    even, odd = even - even.mean(0), odd - odd.mean(0)
    correlation = (even * odd).mean(0) / (even.std(0) * odd.std(0))
    return variance, correlation * even.shape[0] ** 0.5


@pytest.mark.statistical
def test_replicates_are_independent_and_distributed_as_a_loop_of_backward_calls():
    variance, correlation = independence_z(ESTIMATORS["pathwise"], seed=16)
    z = torch.cat([variance, correlation])
    assert z.abs().max() < z_threshold(z.numel()), z.tolist()


@pytest.mark.statistical
def test_the_independence_check_rejects_replicates_that_share_their_noise():
    # Noise shared by all replicates: their variance collapses. Shared by pairs: the variance is
    # right, but neighbours are perfectly correlated.
    for group, caught_by in ((4000, "variance"), (2, "correlation")):
        variance, correlation = independence_z(shared_noise_pathwise(group), seed=16)
        z = {"variance": variance, "correlation": correlation}[caught_by]
        assert z.abs().max() > z_threshold(variance.numel() + correlation.numel()), group


def test_replicate_gradients_refuses_one_replicate_and_a_q_without_the_replicate_dimension():
    with pytest.raises(ValueError, match="num_replicates must be >= 2"):
        replicate_gradients(ESTIMATORS["pathwise"], build, LAMBDA, num_replicates=1, num_samples=1)

    def unreplicated(lam, theta):
        return build({n: v[0] for n, v in lam.items()}, None)

    with pytest.raises(ValueError, match=r"batch shape \(R, \.\.\.\)"):
        replicate_gradients(ESTIMATORS["pathwise"], unreplicated, LAMBDA, num_replicates=3,
                            num_samples=1)


def _cost_functions_sizes(total, chunk):
    """The chunk sizes of the loop experiments/cost_functions.py had before chunk= existed."""
    sizes, remaining = [], total
    while remaining > 0:
        size = min(chunk, remaining)
        if remaining - size == 1:
            size -= 1
        sizes.append(size)
        remaining -= size
    return sizes


def _gmm_vi_sizes(total, chunk):
    """The chunk sizes of experiments/gmm_vi.py's former loop, range(0, R, chunk)."""
    return [min(chunk, total - start) for start in range(0, total, chunk)]


def test_chunks_hold_at_most_chunk_replicates_never_one_in_order():
    for total in range(2, 40):
        for chunk in range(2, total + 2):
            sizes = chunk_sizes(total, chunk)
            assert sum(sizes) == total and min(sizes) >= 2, (total, chunk, sizes)
            # Only chunk 2 with an odd total needs a larger pass: a last one of 3.
            allowed = chunk + 1 if chunk == 2 and total % 2 else chunk
            assert max(sizes) <= allowed, (total, chunk, sizes)
            # Where the former loops made no pass of one, they made these very passes.
            for old in (_cost_functions_sizes(total, chunk), _gmm_vi_sizes(total, chunk)):
                if min(old) >= 2:
                    assert sizes == old, (total, chunk, sizes, old)
    assert chunk_sizes(7, 2) == [2, 2, 3]
    assert chunk_sizes(7, 3) == [3, 2, 2]
    assert chunk_sizes(5, None) == [5] and chunk_sizes(5, 9) == [5]
    with pytest.raises(ValueError, match="chunk must be >= 2"):
        chunk_sizes(5, 1)


@pytest.mark.parametrize("total, chunk", [(10, 4), (9, 3), (7, 3), (7, 2), (5, 2), (6, 6)])
def test_a_chunked_call_gives_exactly_the_numbers_of_passes_drawn_one_after_another(total, chunk):
    # The reference is what the studies' hand-written loops did: one unchunked call per pass, in
    # order, from the same seed, concatenated. Same numbers, not only the same distribution.
    torch.manual_seed(17)
    passes = []
    chunked = replicate_gradients(ESTIMATORS["pathwise"], build, LAMBDA, THETA,
                                  num_replicates=total, num_samples=NUM_SAMPLES, chunk=chunk,
                                  on_chunk=passes.append)
    assert passes == chunk_sizes(total, chunk)
    torch.manual_seed(17)
    parts = [replicate_gradients(ESTIMATORS["pathwise"], build, LAMBDA, THETA,
                                 num_replicates=size, num_samples=NUM_SAMPLES)
             for size in passes]
    assert torch.equal(chunked.elbo, torch.cat([p.elbo for p in parts]))
    for group in ("lambda_", "theta"):
        for name, value in getattr(chunked, group).items():
            expected = torch.cat([getattr(p, group)[name] for p in parts])
            assert value.shape[0] == total and torch.equal(value, expected), (group, name)


def test_group_summary_averages_the_snr_over_parameters_that_vary():
    torch.manual_seed(18)
    noisy = 3.0 + torch.randn(50, 4)
    blank = torch.zeros(50, 2)  # an always-blank pixel's weights: no signal, no noise
    summary = group_summary({"noisy": noisy, "blank": blank})
    stats = gradient_statistics(noisy)
    assert summary["num_parameters"] == 6 and summary["num_varying"] == 4
    assert summary["mean_snr"] == pytest.approx(stats.snr.mean().item(), rel=1e-12)
    assert summary["total_variance"] == pytest.approx(stats.total_variance.item(), rel=1e-12)


def test_benchmark_prints_a_ratio_for_each_estimator(capsys):
    argv = ["--replicates", "8", "--loop-replicates", "2", "--repeats", "1", "--no-compile",
            "--estimator", "pathwise", "score_function_loo", "score_function_ema"]
    assert benchmark_diagnostics.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert set(rows) == {"pathwise", "score_function_loo", "score_function_ema"}
    assert rows["pathwise"][1] == "1" and rows["score_function_loo"][1] == "2"  # K raised to 2
    for row in rows.values():
        assert row[-1].endswith("x") and float(row[-1][:-1]) > 0  # vectorised / loop
    assert rows["pathwise"][-3].endswith("x")  # vectorised / vmap
    assert rows["score_function_ema"][-3] == "n/a"  # vmap cannot carry its state: said below
    assert any(line.startswith("  score_function_ema: vmap n/a") for line in lines[5:])


def vmap_and_replicated(name, seed):
    """vmap(grad(...)) of the benchmark on noise drawn as replicate_gradients draws it."""
    config = benchmark_diagnostics.Config(num_replicates=6)
    model = benchmark_diagnostics.WithStandardPrior(
        benchmark_diagnostics.GaussianMixtureTarget.ring(dtype=torch.float64), 2, torch.float64)
    gradient, lam, shape = benchmark_diagnostics.vmap_gradient(name, model, config)
    torch.manual_seed(seed)
    replicated = replicate_gradients(
        ESTIMATORS[name], lambda lam_r, _: (model, benchmark_diagnostics.gaussian_q(**lam_r)),
        {n: v[0] for n, v in lam.items()}, num_replicates=6, num_samples=shape[1])
    torch.manual_seed(seed)
    noise = torch.randn(shape[1], shape[0], shape[2]).movedim(0, 1)  # (K, R, D), as q.sample draws
    return gradient(lam, noise), replicated.lambda_


def test_the_vmap_peer_computes_the_same_estimator():
    # The peer the benchmark times is the same estimator: fed the replicated pass's noise, it
    # gives the replicated pass's gradients; fed other noise, it does not.
    for name in ("pathwise", "score_function", "vimco"):
        by_vmap, replicated = vmap_and_replicated(name, seed=20)
        for parameter, value in replicated.items():
            torch.testing.assert_close(by_vmap[parameter], value, rtol=1e-10, atol=1e-12)
    by_vmap, replicated = vmap_and_replicated("pathwise", seed=20)
    torch.manual_seed(21)
    other, _ = vmap_and_replicated("pathwise", seed=21)
    assert not torch.allclose(other["loc"], replicated["loc"])


def test_the_compiled_pass_gives_the_eager_numbers():
    # Seeded alike, compile=True draws what the eager pass draws and computes the same gradients
    # to rounding; a different seed does not. measure_valued is the hard case: draws of its own
    # besides q's sample (made in order, outside the compiled graph), a theta-gradient and a
    # lambda-gradient from different terms. (Compiling takes seconds, so one estimator here;
    # the benchmark checks every estimator it times in the same way.)
    for name in ("pathwise",):
        passes = []
        for compile, seed in ((False, 22), (True, 22), (True, 23)):
            torch.manual_seed(seed)
            passes.append(replicate_gradients(ESTIMATORS[name], build, LAMBDA, THETA,
                                              num_replicates=5, num_samples=2, compile=compile))
        eager, compiled, reseeded = passes
        torch.testing.assert_close(compiled.elbo, eager.elbo, rtol=1e-12, atol=1e-12)
        for group in ("lambda_", "theta"):
            for parameter, value in getattr(eager, group).items():
                torch.testing.assert_close(getattr(compiled, group)[parameter], value,
                                           rtol=1e-10, atol=1e-12)
        assert not torch.allclose(reseeded.lambda_["loc"], eager.lambda_["loc"]), name
    # ... and leaves torch.distributions' argument checks as they were (compiling turns them off)
    with pytest.raises(ValueError):
        Normal(torch.tensor(0.0), torch.tensor(-1.0))


def test_benchmark_help_and_bad_input(capsys):
    with pytest.raises(SystemExit) as info:
        benchmark_diagnostics.main(["--help"])
    assert info.value.code == 0
    assert "--loop-replicates" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        benchmark_diagnostics.main(["--estimator", "nope"])
    assert "unknown estimator nope; choose from" in capsys.readouterr().err
