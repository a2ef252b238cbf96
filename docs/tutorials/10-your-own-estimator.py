# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. Your own model and your own estimator
#
# *Seed, sections 3 to 5.* {download}`Download this tutorial as a notebook <../_generated/notebooks/10-your-own-estimator.ipynb>`.
#
# The other tutorials use models the library provides. This one starts from a model you
# write yourself and does the three things the toolkit is for. First it **fits** a Gaussian
# $q$ to the model's posterior by stochastic gradient ascent on the ELBO, seed eq. (4),
#
# $$\max_{\theta,\lambda}\; \mathbb E_{z\sim q_\lambda}\left[\log
#   \frac{p_\theta(x, z)}{q_\lambda(z\mid x)}\right],$$
#
# with two estimators from the registry. Then it **diagnoses** their gradients: variance
# and signal-to-noise ratio, each with a standard error. Last, it writes an estimator **of
# your own** and **property-tests** it: is its mean the exact gradient? A deliberately wrong
# copy of it must fail the same test.

# %%
import os

import numpy as np
import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS, ElboEstimate, FactorisedModel, Model, attach_gradient
from estimators.diagnostics import diagnose
from estimators.testing import (REFERENCE_PROBLEMS, assert_unbiased, check_estimator,
                                check_unbiased, gaussian_grid_problem)
from experiments.explore import interact
from experiments.explore import your_own as yo

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
R = 4000 if SMOKE else 20_000  # replicate gradients behind each diagnostic
R_CHECK = 1000 if SMOKE else 4000  # replicates of each unbiasedness check (the default is 4000)

# %% [markdown]
# ## Your model: a class with `log_joint`
#
# An estimator of eq. (4) needs one thing from the model: $\log p_\theta(x, z)$ at the
# samples $z$, with the data $x$ held fixed. That is the whole protocol, `estimators.Model`:
#
# ```python
# class Model(Protocol):
#     def log_joint(self, z: torch.Tensor) -> torch.Tensor:
#         """log p(x, z), vectorised over every leading dimension of z."""
# ```
#
# *Vectorised over every leading dimension* is the one rule. An estimator draws $K$ samples
# for each of the independent problems in $q$'s batch, so $z$ arrives with shape
# `(K, *q.batch_shape, D)` and `log_joint` must return `(K, *q.batch_shape)`. A model that
# also has `prior` and `log_likelihood(z)` is an `estimators.FactorisedModel` too. That is
# the form of seed eq. (6), and it lets `pathwise_analytic_kl` take the KL to the prior in
# closed form.
#
# The model here is a statistician's model: a **probit regression** on the 23 space-shuttle
# launches before the Challenger accident. The outcome $y_n$ says whether any O-ring showed
# thermal distress, and the covariate is the temperature at launch
# ([Dalal, Fowlkes & Hoadley 1989](https://doi.org/10.1080/01621459.1989.10478858)). With
# $x_n = (t_n - 70\,°\mathrm F)/10\,°\mathrm F$ and the latent $z = (a, b)$, the model is
#
# $$y_n \mid a, b \sim \mathrm{Bernoulli}\bigl(\Phi(a + b\,x_n)\bigr), \qquad
#   (a, b) \sim \mathcal N(0, 2^2 I),$$
#
# so $\log p(y, z) = \sum_n \log\Phi\bigl((2y_n - 1)(a + b x_n)\bigr) + \log\mathcal N(z; 0, 4I)$.
# `torch.special.log_ndtr` computes $\log\Phi$ without underflow in the tails.

# %%
TEMPERATURE = torch.tensor([66, 70, 69, 68, 67, 72, 73, 70, 57, 63, 70, 78, 67, 53, 67, 75,
                            70, 81, 76, 79, 75, 76, 58], dtype=torch.float64)  # °F
DISTRESS = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0,
                         0, 0, 0, 0, 1, 0, 1], dtype=torch.float64)


class ProbitRegression:
    """y_n ~ Bernoulli(Phi(a + b x_n)), x_n = (t_n - 70) / 10, (a, b) ~ N(0, prior_scale^2 I)."""

    def __init__(self, temperature, distress, prior_scale=2.0):
        self.covariate = (temperature - 70) / 10
        self.sign = 2 * distress - 1  # log Phi(+-u): the likelihood of y = 1 and of y = 0
        self.prior_scale = prior_scale
        self.prior = Independent(Normal(torch.zeros(2, dtype=torch.float64),
                                        torch.full((2,), prior_scale, dtype=torch.float64)), 1)

    def log_likelihood(self, z):
        predictor = z[..., :1] + z[..., 1:] * self.covariate  # (..., 1) against (N,): (..., N)
        return torch.special.log_ndtr(self.sign * predictor).sum(-1)

    def log_joint(self, z):
        return self.prior.log_prob(z) + self.log_likelihood(z)


model = ProbitRegression(TEMPERATURE, DISTRESS)
print(f"a Model: {isinstance(model, Model)}; "
      f"a FactorisedModel: {isinstance(model, FactorisedModel)}")
for shape in [(2,), (5, 2), (5, 8, 2)]:
    z = torch.zeros(shape, dtype=torch.float64)
    print(f"log_joint of z with shape {shape} has shape {tuple(model.log_joint(z).shape)}")

# %% [markdown]
# The `isinstance` checks look only for the methods (`Model` is a runtime-checkable
# protocol), so nothing here inherits from the library. The shapes are what every estimator
# relies on: the leading dimensions pass through untouched.
#
# ## The exact answer, for once
#
# With two latents the evidence $\log p(y) = \log\int p(y, z)\,dz$, the integral of seed
# eq. (1) that is intractable in general, is a two-dimensional quadrature. The integrand comes
# from *one* call of `log_joint` on a $301\times 301$ grid of $z$, because the model is
# vectorised. The best $q$ the family allows needs no Monte Carlo either. Under a Gaussian $q$
# each predictor $a + b x_n$ is Gaussian, so the ELBO is a sum of 23 one-dimensional
# Gauss–Hermite sums (`yo.probit_elbo`), and BFGS maximises it.

# %%
posterior = yo.grid_posterior(model.log_joint, lower=(-3.5, -5.5), upper=(2.5, 1.5))
best = yo.best_gaussian(model.covariate, DISTRESS, model.prior_scale)
log_evidence = posterior["log_evidence"]
print(f"log p(y) = {log_evidence:.4f} "
      f"(density at the grid's edge: {posterior['edge']:.0e} of its peak)")
print(f"posterior mean (a, b) = {posterior['mean'].round(3)}, sd = {posterior['sd'].round(3)}")
print(f"best Gaussian q: mean {best['loc'].round(3)}, sd {best['scale'].round(3)}, "
      f"ELBO = {best['elbo']:.4f}")
print(f"KL(best q || posterior) = log p(y) - ELBO = {log_evidence - best['elbo']:.4f} nats")

# %% [markdown]
# The slope is negative: colder launches had more distress. The best Gaussian's ELBO sits
# 0.037 nats below $\log p(y)$. By seed eq. (3) that gap is
# $D_{KL}(q\,\|\,p(z\mid y))$, the price of a Gaussian $q$ for a posterior that is not quite
# Gaussian. The best $q$ is also a little narrower than the posterior (sd 0.31 and 0.54
# against 0.32 and 0.57): minimising $D_{KL}(q\,\|\,p)$ penalises mass where the posterior
# has little. These are the targets for the fits below.
#
# ## Fitting $q$ by stochastic gradient ascent
#
# Seed section 4 writes the update $\theta_{i+1} = \theta_i + \alpha_i \nabla_{\theta_i}
# \log p_{\theta_i}(x\mid z)$. Here the gradient is of the ELBO with respect to $q$'s
# parameters $\lambda = (\mu, \log\sigma)$, and an estimator replaces it by an unbiased
# estimate, so this is Robbins and Monro's stochastic approximation
# ([1951](https://doi.org/10.1214/aoms/1177729586)): the iterates settle only if the steps
# $\alpha_i$ shrink. Adam scales each coordinate's step, and its base step falls linearly to
# zero.
#
# Independent runs form a batch dimension. $q$'s parameters carry a leading dimension of 8,
# so $q$ has batch shape `(8,)`, the model broadcasts, and one backward pass of the summed
# surrogate moves 8 runs at once. Both estimators take $K = 1$ sample per step: `pathwise`
# (seed section 5.2) and `score_function` (section 5.1). Every 10 steps each run's $q$ is
# scored with the exact ELBO. Panel (a) of the figure draws the exact gap
# $\log p(y) - \mathrm{ELBO} = D_{KL}(q\,\|\,p(z\mid y))$ on a log scale. No Gaussian can
# take it below the dashed line.

# %%
RUNS, STEPS = 8, (100 if SMOKE else 400)
steps = np.arange(10, STEPS + 1, 10)


def fit(estimator, num_samples=1, seed=0):
    """RUNS runs of Adam on the surrogate from q = N(0, I): the exact ELBO of each run's q every
    10 steps (checkpoints, RUNS), and the final loc and scale (RUNS, 2)."""
    torch.manual_seed(seed)
    loc = torch.zeros(RUNS, 2, dtype=torch.float64, requires_grad=True)
    log_scale = torch.zeros(RUNS, 2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / STEPS)
    trace = []
    for step in range(1, STEPS + 1):
        q = Independent(Normal(loc, log_scale.exp()), 1)
        estimate = estimator(model, q, num_samples)
        optimizer.zero_grad()
        (-estimate.surrogate.sum()).backward()  # ascend: minimise minus the surrogate
        optimizer.step()
        schedule.step()
        if step % 10 == 0:
            with torch.no_grad():
                trace.append(yo.probit_elbo(loc, log_scale, model.covariate, DISTRESS,
                                            model.prior_scale).numpy())
    return np.array(trace), (loc.detach().numpy(), log_scale.detach().exp().numpy())


def summarise(name, trace):
    final = trace[-1]
    print(f"{name:22s} exact ELBO after {STEPS} steps: {final.mean():8.3f} ± "
          f"{final.std(ddof=1) / np.sqrt(RUNS):.3f} (mean ± s.e. over {RUNS} runs), "
          f"worst run {final.min():.3f}; best Gaussian {best['elbo']:.3f}")


traces, fits = {}, {}
for name in ("pathwise", "score_function"):
    traces[name], fits[name] = fit(ESTIMATORS[name])
    summarise(name, traces[name])

figure = yo.draw_fit(steps, traces, best, log_evidence, posterior, fits)

# %% [markdown]
# The two estimators had the same model, $K$, steps and schedule. The `pathwise` runs fall
# steadily towards the dashed line; at full size (`STEPS = 400`) every one ends within 0.07
# nats of the best Gaussian. The `score_function` runs stay nats above it, not tenths, and
# disagree with one another. Their $q$'s in panel (b) are scattered around the posterior, most of
# them too wide. Both estimators are unbiased, so the difference is their noise, and that is
# what the diagnostics measure.
#
# ## Diagnose: variance and SNR, with standard errors
#
# `estimators.diagnostics.diagnose` draws $R$ independent gradient estimates at a fixed $q$
# in **one backward pass**. It gives each replicate its own copy of $\lambda$ (a leading
# dimension $R$), so $q$'s batch holds $R$ independent problems. The gradient of the summed
# surrogate with respect to copy $r$ is then estimate $r$. It needs a
# `build(lam, theta) -> (model, q)` that makes $q$ from those copies. It reports each
# coordinate's mean, variance and signal-to-noise ratio $|\mathbb E\hat g|/\mathrm{sd}(\hat g)$
# ([Rainforth et al. 2018](https://arxiv.org/abs/1802.04537)), each with its standard error. If
# you give it the exact gradient, it also reports the bias and its $z$-score.
#
# The exact gradient at any $q$ comes from the library. `gaussian_grid_problem` turns the
# model into a *reference problem*, with the ELBO's gradient by the trapezoidal rule over $q$'s
# noise. The same object serves the unbiasedness check further down.

# %%
def build(lam, theta):
    return model, Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)


start = {"loc": [0.0, 0.0], "log_scale": [0.0, 0.0]}  # where the fits above started
at_best = {"loc": best["loc"], "log_scale": np.log(best["scale"])}
problems = {"q = N(0, I)": gaussian_grid_problem("probit_at_start", build, start, {}),
            "best Gaussian q": gaussian_grid_problem("probit_at_best", build, at_best, {})}


def show(label, estimator, problem):
    stats = diagnose(estimator, problem.build, problem.lam, num_replicates=R, num_samples=1,
                     exact_lambda=problem.exact_gradient()["lambda"])["lambda"]
    for parameter, s in stats.items():
        for i in range(2):
            print(f"  {label:22s} {parameter + f'[{i}]':12s}"
                  f" {s.mean[i]:+8.3f} ± {s.mean_se[i]:5.3f}"
                  f"  {problem.exact_gradient()['lambda'][parameter][i]:+8.3f}"
                  f"  {s.z[i]:+5.1f}  {s.variance[i]:9.2f} ± {s.variance_se[i]:7.2f}"
                  f"  {s.snr[i]:6.3f} ± {s.snr_se[i]:5.3f}")


torch.manual_seed(1)
for where, problem in problems.items():
    print(f"at {where}, R = {R}, K = 1")
    print(f"  {'estimator':22s} {'coordinate':12s} {'mean ± s.e.':>16s}  {'exact':>7s}  {'z':>5s}"
          f"  {'variance ± s.e.':>19s}  {'SNR ± s.e.':>14s}")
    for name in ("pathwise", "score_function"):
        show(name, ESTIMATORS[name], problem)

# %% [markdown]
# What to notice:
#
# - Every mean agrees with the exact gradient: all $|z|$ are about 2 or less.
# - At $q = \mathcal N(0, I)$ the score function's variances are about 10 to 30 times the pathwise
#   ones, and its SNR is three to six times lower (about 0.1 to 0.2 against 0.4 to 1.2). One
#   score-function step is mostly noise, which is what the fits showed.
# - At the best $q$ the exact gradient is zero, so every SNR is zero up to its standard
#   error. The noise is still there: the variances are between 2 and 11 for `pathwise` and in
#   the hundreds or thousands for `score_function`. That is why the step size must shrink for
#   the iterates to settle.
#
# ## Your own estimator
#
# An estimator is any callable `(model, q, num_samples, **options) -> ElboEstimate(elbo,
# surrogate)`. `elbo` is the estimate of the objective, one per batch entry. `surrogate`
# has the same value, and its gradient is the estimator's gradient. Write it with
# `attach_gradient(elbo, term)`, which has the *value* of `elbo` and the *gradient* of
# `term` (Pyro's trick: `elbo.detach() + term - term.detach()`).
#
# This one is the seed's score function (section 5.1) with a baseline of our own. Tutorial 4
# showed that any baseline $b$ independent of $z_k$ keeps
#
# $$\hat g = \frac1K\sum_k \bigl(f(z_k) - b\bigr)\nabla_\lambda \log q_\lambda(z_k),
#   \qquad f = \log p(x, z) - \log q(z),$$
#
# unbiased, and that it helps most when $b$ is close to $\mathbb E_q f$, the ELBO. A
# statistician's first guess at $\mathbb E_q f(z)$ is the delta method: $f$ at $q$'s mean,
# $b = f(\mu)$. That costs one more call of the model, and it depends on $\lambda$ but not on
# any $z_k$.

# %%
def score_function_centred(model, q, num_samples):
    """The score function with the learning signal at q's mean as its baseline.

    Approximates:  the gradient of E_q[log p(x, z) - log q(z)]   (seed eq. 4)
    With:          lambda: mean_k (f(z_k) - f(mu)) grad log q(z_k); theta: mean_k grad_theta
                   log p(x, z_k); f = log p(x, z) - log q(z), z_k ~ q, mu = E_q[z]
                   (seed section 5.1, eq. 8)
    Requires:      q.log_prob differentiable in its parameters; q.mean; log p(x, z) defined at
                   mu. Unbiased: f(mu) does not depend on z_k.
    """
    with torch.no_grad():
        z = q.sample((num_samples,))  # no path from lambda to z: lambda's gradient is the score's
    log_q = q.log_prob(z)
    log_joint = model.log_joint(z)  # at fixed z, its gradient is theta's estimate
    signal = (log_joint - log_q).detach()
    centre = q.mean.unsqueeze(0)  # one more "sample", at mu: (1, *batch, D)
    baseline = (model.log_joint(centre) - q.log_prob(centre)).detach()[0]
    elbo = signal.mean(0)
    term = log_joint.mean(0) + ((signal - baseline) * log_q).mean(0)
    return ElboEstimate(elbo, attach_gradient(elbo, term))


torch.manual_seed(1)
for where, problem in problems.items():
    print(f"at {where}, R = {R}, K = 1")
    show("score_function_centred", score_function_centred, problem)

traces["score_function_centred"], _ = fit(score_function_centred)
summarise("score_function_centred", traces["score_function_centred"])

# %% [markdown]
# At $q = \mathcal N(0, I)$ the baseline about halves the score function's variances. It stays
# well above the pathwise estimator there, which uses what a score function cannot: the
# derivative of $\log p$ in $z$. At the best $q$ the picture turns. The variances fall from
# hundreds or thousands to between about 0.5 and 2, *below* the pathwise estimator's. There
# $q$ is nearly the posterior, so $f(z) = \log p(y) + \log p(z\mid y) - \log q(z)$ is nearly
# the constant $\log p(y)$, and $f(\mu)$ removes that level. The pathwise estimator keeps
# the noise of its $-\nabla_\lambda \log q$ term, which is zero in mean; `stl` drops it
# (Roeder et al. 2017). Trained like the others, the new estimator closes most of the gap
# that `score_function` left: its runs end well above `score_function`'s, though still below
# `pathwise`'s.
#
# The $|z|$-scores are small, but four $z$-scores from one run are weak evidence of
# unbiasedness. The next section tests it properly.
#
# ## Is it unbiased? Property-test it
#
# `estimators.testing.check_unbiased` runs the estimator on a *reference problem*: a model
# and a $q$ whose ELBO gradient is known exactly, with respect to $q$'s parameters ($\lambda$)
# and the model's ($\theta$). It draws $R$ replicate gradients in one pass and tests each
# coordinate's mean against the exact value. Start with the library's Bayesian logistic
# regression. Its model has parameters $\theta$ (an intercept and the log prior scale), so
# the estimator's $\theta$ gradient is tested as well.

# %%
report = check_unbiased(score_function_centred, REFERENCE_PROBLEMS["logistic_regression"],
                        num_replicates=R_CHECK, seed=0)
print(report)

# %% [markdown]
# Each row is one coordinate: the exact gradient, the mean of the $R$ estimates, its standard
# error, $z = (\text{mean} - \text{exact})/\text{s.e.}$, the **detectable bias** and the
# verdict. The header gives the **threshold**: the false-positive rate $10^{-3}$ is split
# evenly over the 6 coordinates, so a coordinate fails when $|z|$ exceeds about 3.8 (Student's
# $t$ with $R - 1$ degrees of freedom at level $10^{-3}/6$). No coordinate exceeds it.
#
# `check_estimator` runs the same check on every reference problem of a kind of $q$ the
# estimator takes. A plain function is taken to want a continuous $q$. The rate is split over
# the problems too, and the problems it skips are listed with the reason. The last check uses
# our own probit model, made a reference problem above.

# %%
print(check_estimator(score_function_centred, num_replicates=R_CHECK, seed=0))
print()
own = check_unbiased(score_function_centred, problems["q = N(0, I)"], num_replicates=R_CHECK,
                     seed=0)
print(f"{own.problem}: {own.table().splitlines()[-1]}")

# %% [markdown]
# It passes on the conjugate Gaussians in 1, 2 and 5 dimensions, on the Gaussian mixtures
# in 1 and 2 dimensions, on the logistic regression and on our probit model. The three
# discrete problems are skipped, with the reason. That is right for this estimator: the mean
# of a Bernoulli or categorical $q$ is not a value the model is defined at. To check an
# estimator on them, give it a `q_kinds` attribute or pass `kinds=`.
#
# ## A wrong twin fails
#
# Now the same estimator with one plausible slip: the baseline's `.detach()` is forgotten.
# The value of the surrogate is unchanged, so every printed ELBO looks right. But its gradient
# gains the term $-\nabla b \cdot \frac1K\sum_k \log q(z_k)$, whose mean is
# $\nabla b \cdot H(q)$, not zero. The check should reject it.

# %%
def score_function_centred_leaky(model, q, num_samples):
    """WRONG on purpose: score_function_centred with the baseline's .detach() forgotten."""
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_joint = model.log_joint(z)
    signal = (log_joint - log_q).detach()
    centre = q.mean.unsqueeze(0)
    baseline = (model.log_joint(centre) - q.log_prob(centre))[0]  # the slip: no .detach()
    elbo = signal.mean(0)
    term = log_joint.mean(0) + ((signal - baseline) * log_q).mean(0)
    return ElboEstimate(elbo, attach_gradient(elbo, term))


wrong = check_unbiased(score_function_centred_leaky, "logistic_regression",
                       num_replicates=R_CHECK, seed=0)
print(wrong)
print()
try:
    assert_unbiased(score_function_centred_leaky, "logistic_regression",
                    num_replicates=R_CHECK, seed=0)
except AssertionError as error:
    print("AssertionError:", str(error).splitlines()[0])

# %% [markdown]
# Every coordinate is rejected, by more than ten standard errors, at the same $R$, seed and
# threshold at which the correct estimator passed. `assert_unbiased` is the form for a test
# suite: it raises an `AssertionError` that names the worst coordinate, its $z$, the threshold
# and the false-positive rate.
#
# ## What a verdict means
#
# Each coordinate's check is a two-sided one-sample $t$-test of "the estimator's mean is the
# exact gradient", on $R$ independent estimates. **False-positive rate.** The threshold $c$ is
# the $1 - \alpha/(2n)$ quantile of Student's $t$ with $R - 1$ degrees of freedom, for $n$
# coordinates. By Bonferroni's inequality, which needs no independence between the
# coordinates, a correct estimator fails the whole check with probability at most $\alpha$.
# The approximation is in the null distribution of each statistic: it is Student's $t$ for
# normal estimates, and close to it when the central limit theorem has taken hold of the
# replicate mean. Skewed estimates, such as a score function's, need more replicates for that;
# the project measured the actual rates, see the [testing page](../testing.md). **Power.** If one
# coordinate's mean is off by $\delta$, its statistic is approximately noncentral $t$ with
# noncentrality $\delta\sqrt R/\sigma$, $\sigma$ the sd of one estimate. It exceeds $c$ with
# probability about 0.9 when $\delta = (c + t_{0.9})\,\sigma/\sqrt R$, $t_{0.9}$ the 0.9
# quantile of the same $t$. That is the **detectable bias** the report prints, with $\sigma$
# estimated from the replicates: the minimal detectable effect of a power analysis, one per
# coordinate. A pass is therefore not a proof of unbiasedness. It says that a bias as large as
# the detectable bias, in any one coordinate, would have been caught nine times in ten. To
# halve that size, take four times the replicates. The seed is fixed, so a rerun gives the
# same verdict. Rerunning with new seeds until a check passes would multiply the
# false-positive rate.
#
# The control below draws that power curve at the $R$ you choose. The black curve is exact
# for normal estimates. The points are the fraction of 200 checks that reject when the
# estimates are real ones, resampled from 20,000 single-sample `score_function` gradients on
# the logistic regression, with a bias added (±2 s.e.). In Jupyter the slider moves $R$;
# each move redraws in about 0.15 s on a 2-core CPU (0.4 s at most).

# %%
interact(yo.POWER_CONTROL, num_replicates=4000)

# %% [markdown]
# At $R = 4000$ the curve crosses 0.9 at the dashed line, 0.080 sd of one estimate, and the
# measured points follow it: 0.94 ± 0.02 of the checks reject a bias of that size. Panel (b)
# has slope $-\frac12$. Move the slider to $R = 50$: the detectable bias is 0.76 sd, and at
# half of it only 0.04 ± 0.01 of the real checks reject, against 0.10 for normal estimates;
# 50 skewed estimates do not yet have a normal mean. At the detectable bias itself they still
# reject 0.92 ± 0.02 of the time. At zero bias the curve is at
# $\alpha/n = 1.7\times10^{-4}$, too small to see.
#
# ## In your continuous integration
#
# The same check from the command line, over every applicable reference problem. It prints
# the table above and exits with status 0 when every check passes, 1 when one fails (that
# problem's coordinates follow the table) and 2 on bad input:
#
# ```bash
# python -m estimators.testing mypackage.estimators:score_function_centred
# python -m estimators.testing mypackage.estimators:score_function_centred --replicates 16000
# ```
#
# Or, in a pytest suite, one line per problem:
#
# ```python
# def test_score_function_centred_is_unbiased():
#     assert_unbiased(score_function_centred, "logistic_regression", seed=0)
# ```
#
# The [testing page](../testing.md) has the rest: hypothesis strategies that draw problems,
# `enumerated_problem` for a model with discrete latents, and the check's measured power and
# false-positive rate.
#
# ## Try this
#
# - Make the baseline depend on the samples: replace `q.mean.unsqueeze(0)` with
#   `z.mean(0, keepdim=True)`, the centre of the $K$ draws, and check it with
#   `num_samples=8`. The baseline now depends on each $z_k$, and the check fails. With $K = 1$
#   the baseline *is* $f(z_1)$, every $\lambda$ gradient is exactly zero, and the check
#   rejects it at the floating-point tolerance.
# - Fit with eight samples a step, `fit(ESTIMATORS["score_function"], num_samples=8)`: each
#   step's variance is eight times smaller, and at full size the runs end about 0.1 nats
#   from the best Gaussian instead of 1.6. The pathwise estimator is still closer.
# - Ask how few replicates would do: `check_unbiased(score_function_centred_leaky,
#   "logistic_regression", num_replicates=31)` is refused in one line that names the smallest
#   $R$ that means anything here, 32. At $R = 32$ the leaky twin still fails (at each of the
#   seeds 0 to 4), because its bias in $\theta$ is nearly two standard deviations of one
#   estimate, and the detectable bias at that $R$ is one, by construction.
