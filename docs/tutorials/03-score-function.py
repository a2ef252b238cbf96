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
# # 3. The score-function estimator
#
# *Seed, section 5.1.* {download}`Download this tutorial as a notebook <../_generated/notebooks/03-score-function.ipynb>`.
#
# For the model's parameters $\theta$ the gradient of the ELBO passes through the expectation,
# because $q_\lambda$ does not depend on $\theta$. For the variational parameters $\lambda$ the
# seed stops at its equation (7):
#
# $$\nabla_\lambda \mathbb E_{z\sim q}\left[\log\frac{p_\theta(x,z)}{q_\lambda(z|x)}\right]
#   = \int \nabla_\lambda\left(q_\lambda(z|x)\log\frac{p_\theta(x,z)}{q_\lambda(z|x)}\right)dz
#   \quad (7)$$
#
# "in its current form the integral is not an expectation with respect to $q_\lambda(z|x)$
# anymore". Section 5.1 makes it one again. This page checks each step of that derivation by
# code, then asks the question the seed answers in one sentence: *why is the variance of this
# estimator so high?* Last, it compares the seed's form of the estimator with the form autograd
# writes.
#
# The model is one where every number is exact: $z \sim \mathcal N(0, 1)$,
# $x \mid z \sim \mathcal N(z, 1)$, one observation $x = 0.8$, so the posterior is
# $\mathcal N(0.4, \tfrac12)$; the variational family is $q = \mathcal N(\mu, \sigma^2)$ with
# $\lambda = (\mu, \sigma)$.

# %%
import os

import numpy as np
import torch
from scipy import integrate, stats
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from experiments import score_forms
from experiments.explore import interact
from experiments.explore import score_function as sfx
from experiments.quadrature import score_function_moments

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
R = 4000 if SMOKE else 100_000  # independent single-sample estimates behind each measured number

model = sfx.model()  # the score-forms study's model, in float64
post_mean, post_sd = sfx.posterior()
log_evidence = model.log_evidence().item()
print(f"posterior p(z | x) = N({post_mean:.3f}, {post_sd:.4f}²),  log p(x) = {log_evidence:.4f}")

# %% [markdown]
# ## The log-derivative trick
#
# The seed splits (7) into two integrals, applies the product rule, and uses one fact twice:
#
# $$\int \nabla_\lambda q_\lambda(z|x)\,dz = \nabla_\lambda \int q_\lambda(z|x)\,dz
#   = \nabla_\lambda 1 = 0 .$$
#
# Written with $\nabla_\lambda q = q\,\nabla_\lambda \log q$, that fact says the **score**
# $s(z) = \nabla_\lambda \log q_\lambda(z)$ has mean zero under $q$. Check it at
# $q = \mathcal N(1, 0.5^2)$, by quadrature and by Monte Carlo. Each of the $R$ draws below gets
# its own copy of $(\mu, \sigma)$, so one backward pass gives $R$ separate per-sample scores.

# %%
mu, sigma = 1.0, 0.5
loc = torch.full((R,), mu, dtype=torch.float64, requires_grad=True)
scale = torch.full((R,), sigma, dtype=torch.float64, requires_grad=True)
q = Normal(loc, scale)
torch.manual_seed(0)
z = q.sample()
score_mu, score_sigma = torch.autograd.grad(q.log_prob(z).sum(), [loc, scale])

print(f"R = {R} draws from q")
for name, score, formula in [("μ", score_mu, lambda z: (z - mu) / sigma**2),
                             ("σ", score_sigma, lambda z: ((z - mu) ** 2 / sigma**2 - 1) / sigma)]:
    exact, _ = integrate.quad(lambda z: stats.norm.pdf(z, mu, sigma) * formula(z), -np.inf, np.inf)
    se = score.std().item() / np.sqrt(R)
    print(f"E_q[∂/∂{name} log q]: quadrature {exact:+.1e};  Monte Carlo "
          f"{score.mean().item():+.4f} ± {se:.4f};  sd of one score {score.std().item():.3f}")

# %% [markdown]
# The quadrature gives zero to rounding and the Monte Carlo mean is within a couple of standard
# errors of it. Notice the last column: each single score is large, with standard deviation
# $1/\sigma = 2$ for $\mu$ and $\sqrt2/\sigma = 2.8$ for $\sigma$. It is pure noise around zero,
# and the estimator will multiply it by the learning signal.
#
# With the fact in hand the seed's algebra ends at equation (8) and the expectation after it:
#
# $$\nabla_\lambda\,\mathrm{ELBO}
#   = \int \nabla_\lambda q_\lambda(z|x)\,\bigl(\log p_\theta(x,z) - \log q_\lambda(z|x)\bigr)\,dz
#   \quad (8)
#   \;=\; \mathbb E_{z\sim q}\bigl[\nabla_\lambda \log q_\lambda(z|x)\; f(z)\bigr],
#   \qquad f = \log p_\theta(x,z) - \log q_\lambda(z|x).$$
#
# Check the identity on this model: the left side by autograd of the ELBO in closed form, the
# right side by quadrature of $\mathbb E_q[f\,s]$
# (`experiments.quadrature.score_function_moments`).

# %%
loc = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
scale = torch.tensor([sigma], dtype=torch.float64, requires_grad=True)
exact_gradient = torch.autograd.grad(model.exact_elbo(loc, scale), [loc, scale])
exact_gradient = np.array([g.item() for g in exact_gradient])
by_quadrature = score_function_moments(model.log_joint, mu, sigma)["g"][0]
print(f"∇ ELBO by autograd of the closed form: d/dμ {exact_gradient[0]:+.10f}, "
      f"d/dσ {exact_gradient[1]:+.10f}")
print(f"E_q[f ∇ log q] by quadrature:          d/dμ {by_quadrature[0]:+.10f}, "
      f"d/dσ {by_quadrature[1]:+.10f}")

# %% [markdown]
# The two agree to ten digits, so the derivation holds. The registry's `score_function` is its
# Monte Carlo version, $\frac1K\sum_k f(z_k)\,\nabla_\lambda\log q(z_k)$ with $z_k \sim q$.
# `replicate_gradients` draws $R$ independent single-sample ($K = 1$) estimates in one pass, and
# `gradient_statistics` compares their mean with the exact gradient.

# %%
def build(lam, theta):
    return model, Independent(Normal(lam["loc"], lam["scale"]), 1)


start = {"loc": torch.tensor([[mu]], dtype=torch.float64),
         "scale": torch.tensor([[sigma]], dtype=torch.float64)}
torch.manual_seed(1)
grads = replicate_gradients(ESTIMATORS["score_function"], build, start, num_replicates=R,
                            num_samples=1)
print(f"R = {R} single-sample estimates of score_function:")
for k, p in enumerate(("loc", "scale")):
    s = gradient_statistics(grads.lambda_[p].squeeze(-1), torch.tensor([exact_gradient[k]]))
    print(f"d/d{'μσ'[k]}: mean {s.mean.item():+.3f} ± {s.mean_se.item():.3f} "
          f"(exact {exact_gradient[k]:+.3f}, z = {s.z.item():+.2f});  "
          f"sd of one estimate {s.variance.sqrt().item():.2f}")

# %% [markdown]
# The estimator is unbiased: its mean lies within about two standard errors of the exact
# gradient. But the standard deviation of a single estimate is several times the
# gradient it estimates, so a single sample often has the wrong sign.
#
# ## Why its variance is high
#
# The seed says only that "empirically the variance of this estimator is very high". For one
# sample the variance is exact:
#
# $$\operatorname{Var}\bigl[f(z)\,s(z)\bigr] = \mathbb E_q\bigl[f^2 s^2\bigr] - g^2,
#   \qquad g = \mathbb E_q[f s].$$
#
# The score $s$ is zero-mean noise of size $1/\sigma$, and the estimator multiplies it by the
# *whole* learning signal $f$, including every part of $f$ that does not depend on $\lambda$.
# The clearest case is $q$ equal to the posterior. There
# $f(z) = \log p(x) + \log p(z\mid x) - \log q(z) = \log p(x)$ for every $z$, so the gradient is
# exactly zero, yet each estimate is $\log p(x)\,s(z)$.

# %%
at_posterior = sfx.exact_at(offset=0.0, scale=1.0)
print(f"q = posterior: exact gradient {at_posterior['gradient'].round(12) + 0}, "
      f"single-sample variance d/dμ {at_posterior['score_function'][0]:.4f}, "
      f"d/dσ {at_posterior['score_function'][1]:.4f}")
print(f"  log p(x)² E[s_μ²] = log p(x)² / σ² = {log_evidence**2 / post_sd**2:.4f}")
print(f"  log p(x)² E[s_σ²] = 2 log p(x)² / σ² = {2 * log_evidence**2 / post_sd**2:.4f}")
for c in (10.0, 100.0):
    shifted = sfx.exact_at(offset=0.0, scale=1.0, shift=c)
    print(f"log p(x, z) + {c:5.0f}: gradient unchanged, variance d/dμ "
          f"{shifted['score_function'][0]:10.1f}")

away = sfx.exact_at(offset=2.0, scale=0.6)
snr = np.abs(away["gradient"]) / np.sqrt(away["score_function"])
print(f"q = N(μ* + 2 sd, (0.6 sd)²), for (d/dμ, d/dσ): gradient {away['gradient'].round(3)}, "
      f"variance {away['score_function'].round(1)}")
print(f"  signal-to-noise |g| / sd {snr.round(2)}; "
      f"K for a standard error of 10% of |g|: {np.ceil(100 / snr**2).astype(int)}")

# %% [markdown]
# At the posterior the gradient is zero but the variance is $\log p(x)^2 E[s^2]$ = 4.06 for
# $\mu$: the estimator carries the evidence itself as noise. A constant $c$ added to
# $\log p(x, z)$ leaves the gradient alone, but the variance grows like $(\log p(x) + c)^2$: 147
# at $c = 10$, about 19,400 at $c = 100$. An unnormalised likelihood, such as a sum of squared
# errors without its $\log 2\pi$ terms, is such a shift. Away from the posterior, at
# $q = \mathcal N(\mu^* + 2\,\mathrm{sd}, (0.6\,\mathrm{sd})^2)$, the signal-to-noise ratio of
# one sample is 0.34 for $\mu$ and 0.12 for $\sigma$: about 860 and 6,800 samples are needed
# before the standard error is a tenth of the gradient. Tutorial 4 subtracts a **baseline**
# from $f$ to remove the part of $f$ that is only noise.
#
# ## The seed's form against the autodiff form
#
# When the seed reaches (8), the term $\int \nabla_\lambda q_\lambda\,dz$ "disappears"
# because it is zero in expectation: it is not estimated at all. A program that samples $z$,
# detaches it, and lets autograd differentiate $\log p(x,z) - \log q_\lambda(z)$ (the surrogate
# of a stochastic computation graph) keeps it: per sample it adds
# $-\nabla_\lambda \log q_\lambda(z_k)$, which has mean zero but is not zero. So the autodiff
# form is the seed's form with a constant baseline of 1: $(f(z_k) - 1)\,\nabla_\lambda\log
# q(z_k)$. The registry has both, `score_function` and `score_function_autodiff`. On the same
# draw they differ by exactly
# $-s(z)$:

# %%
loc = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
scale = torch.tensor([sigma], dtype=torch.float64, requires_grad=True)
q = Independent(Normal(loc, scale), 1)
one_estimate = {}
for name in ("score_function", "score_function_autodiff"):
    torch.manual_seed(2)  # the same z for both
    surrogate = ESTIMATORS[name](model, q, 1).surrogate
    one_estimate[name] = np.array([g.item() for g in torch.autograd.grad(surrogate, [loc, scale])])
torch.manual_seed(2)
score = torch.autograd.grad(q.log_prob(q.sample((1,))).sum(), [loc, scale])
difference = one_estimate["score_function_autodiff"] - one_estimate["score_function"]
print(f"score_function          {one_estimate['score_function'].round(6)}")
print(f"score_function_autodiff {one_estimate['score_function_autodiff'].round(6)}")
print(f"difference              {difference.round(6)}   −∇ log q(z) = "
      f"{-np.array([s.item() for s in score]).round(6)}")

# %% [markdown]
# Both forms are unbiased. Their variances differ by the baseline:
# $\operatorname{Var}(b) = E[f^2s^2] - 2b\,E[f s^2] + b^2 E[s^2] - g^2$, which is
# `score_forms.exact_variances`. Here it is beside $R$ measured estimates of each, at three
# locations of $q$ with $\sigma$ the posterior's:

# %%
offsets = np.array([-2.0, 0.0, 2.0])
exact = score_forms.exact_variances(model.log_joint, post_mean + post_sd * offsets, post_sd)
print(f"single-sample variance: exact [measured ± s.e., R = {R}] and z")
print(f"{'offset':>6}  {'form':24s} {'d/dμ: exact [measured] z':>28s} "
      f"{'d/dσ: exact [measured] z':>28s}")
for name in ("score_function", "score_function_autodiff"):
    measured = sfx.measure(name, offsets, 1.0, num_replicates=R, seed=3)
    for i, offset in enumerate(offsets):
        cells = []
        for k, p in enumerate(("loc", "scale")):
            row = measured[p]
            z = (row.variance[i].item() - exact[name][i, k]) / row.variance_se[i].item()
            cells.append(f"{exact[name][i, k]:6.2f} [{row.variance[i].item():6.2f} ± "
                         f"{row.variance_se[i].item():5.2f}] {z:+.1f}")
        print(f"{offset:+6.1f}  {name:24s} {cells[0]:>28s} {cells[1]:>28s}")
ratio = exact["score_function_autodiff"] / exact["score_function"]
print("autodiff / seed, exact: d/dμ", ratio[:, 0].round(2), " d/dσ", ratio[:, 1].round(2))

# %% [markdown]
# The measured variances agree with the exact ones within their standard errors (the $z$
# columns), and here the autodiff form is worse everywhere: 2.9 times the seed's variance at the
# posterior, 1.25 to 1.4 times two posterior standard deviations away. Since the variance is a
# parabola in $b$, a baseline of 1 helps exactly when the optimal constant
# $b^* = E[f s^2]/E[s^2]$ lies above $\tfrac12$. On this model $b^*$ is close to
# $\log p(x) = -1.43$ (it equals it at the posterior), so subtracting 1 moves the wrong way.
#
# ## Explore: the scale and location of q
#
# The figure below draws the exact variance curves of both forms against the location of $q$
# for one scale $\sigma$, with Monte Carlo points ($R = 2000$ each, ±2 s.e.) and the current
# $q$ marked. In Jupyter three sliders move `scale` ($\sigma$ in posterior standard deviations),
# `offset` (the distance of $\mu$ from the posterior mean, in the same units) and `shift` (a
# constant $c$ added to $\log p(x, z)$). The moments are computed once on a grid, by one
# adaptive quadrature, so each move redraws in about 0.3 s on a 2-core CPU. That time includes
# the 26 fresh Monte Carlo points.

# %%
interact(sfx.VARIANCE, scale=1.0, offset=0.0)

# %% [markdown]
# Both curves have their minimum where $q$ sits over the posterior and rise steeply as $q$
# moves away: at two posterior standard deviations the variance is about ten times larger.
# Narrowing $q$ (scale 0.4) raises every curve, because the score grows like $1/\sigma$.
# Widening it (scale 2) raises them too, because $f$ then spreads over the posterior's tails.
#
# ## Try this
#
# - Move `shift` to 3 or more (or call `sfx.exact_at(0.0, 1.0, shift=3.0)`): now
#   $b^* = \log p(x) + c$ is above $\tfrac12$ and the autodiff form has the *smaller* variance.
#   The ordering of the two forms depends on an additive constant of the likelihood, which
#   the gradient does not see.
# - Change the number of samples to `num_samples=10` in the `replicate_gradients` call above:
#   the standard deviation of an estimate falls by $\sqrt{10}$, and the $z$ of the mean stays
#   within about ±2.
# - The study `python -m experiments score-forms` draws the same curves with $R = 100{,}000$ and
#   a panel of the variance ratio against $c$.
