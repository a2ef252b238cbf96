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
# # 1. Maximum likelihood is KL minimisation
#
# *Seed, section 1.* {download}`Download this tutorial as a notebook <../_generated/notebooks/01-maximum-likelihood.ipynb>`.
#
# The seed starts from the estimator every statistician knows, and rewrites it. Subtracting the
# true log density $\log p(x_i)$, a constant in $\theta$, and dividing by $N$ changes nothing:
#
# $$\max_\theta \sum_{i=1}^N \log \hat p_\theta(x_i)
#   = \max_\theta \frac1N \sum_{i=1}^N \log \frac{\hat p_\theta(x_i)}{p(x_i)}
#   \xrightarrow{N} \max_\theta \mathbb{E}_{x\sim p}\left[\log \frac{\hat p_\theta(x)}{p(x)}\right]
#   = \min_\theta D_{KL}(p \,\|\, \hat p_\theta).$$
#
# So maximum likelihood maximises a Monte Carlo estimate of $-D_{KL}(p\,\|\,\hat p_\theta)$, and as
# $N$ grows its answer goes to the member of the model family *closest to p in KL*, whether or
# not p is in the family. This page checks both halves of that sentence on a case where every
# number is exact.
#
# The true $p$ is a mixture, $0.3\,\mathcal N(-2, 0.6^2) + 0.7\,\mathcal N(1, 1)$; the model
# family is the Gaussians $\mathcal N(\mu, \sigma^2)$, which cannot match it.

# %%
import os

import numpy as np

from experiments.explore import interact
from experiments.explore import maximum_likelihood as ml

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version

mean, var = ml.moments()
print(f"E_p[x] = {mean:.3f}, Var_p[x] = {var:.3f}, H(p) = {ml.entropy():.4f} nats")
print(f"KL(p || N(E_p[x], Var_p[x])) = {ml.kl_to_gaussian(mean, np.sqrt(var)):.4f} nats")

# %% [markdown]
# For a Gaussian model the KL has a closed form up to the entropy of $p$,
#
# $$D_{KL}(p\,\|\,\mathcal N(\mu,\sigma^2)) = \log(\sigma\sqrt{2\pi}) +
#   \frac{\operatorname{Var}_p[x] + (\mathbb E_p[x]-\mu)^2}{2\sigma^2} - H(p),$$
#
# and $H(p)$ is one call of `scipy.integrate.quad`. The KL is smallest at
# $\mu^* = \mathbb E_p[x]$, $\sigma^{*2} = \operatorname{Var}_p[x]$: **moment matching**. The
# 0.118 nats left there are the price of the wrong family; no amount of data removes them.
#
# ## The likelihood curve estimates the KL curve
#
# Below, the black curve is the exact $-D_{KL}(p\,\|\,\mathcal N(\mu, \sigma^{*2}))$ as $\mu$
# moves; the blue curve is the seed's average log ratio $\frac1N\sum_i \log \hat p_\theta(x_i) /
# p(x_i)$ for $N$ draws. The blue curve's peak is the maximum-likelihood estimate $\hat\mu$ (the
# sample mean); the black curve's peak is $\mu^*$.

# %%
interact(ml.LIKELIHOOD, n=30)

# %% [markdown]
# With 30 points the blue curve is a noisy, shifted copy of the black one, and its peak misses
# $\mu^* = 0.10$. Move the slider (in Jupyter) to $N = 10{,}000$: the two curves lie on top of
# each other. Each move redraws in a fraction of a second: the Gaussian log-likelihood depends
# on the data only through $\sum x_i$ and $\sum x_i^2$, so a whole grid of $\mu$ costs one pass.
#
# ## The fitted model approaches the closest member in KL
#
# Fit $(\hat\mu, \hat\sigma)$ by maximum likelihood to many independent data sets of each size,
# and measure how far each fit is from $p$ with the exact KL:

# %%
rng = np.random.default_rng(0)
fits = 50 if SMOKE else 400
best = ml.kl_to_gaussian(mean, np.sqrt(var))
print(f"KL(p || fitted Gaussian), mean ± s.e. over {fits} fits; the best Gaussian's is {best:.5f}")
print(f"theory: N x excess -> tr(J^-1 K) / 2 = {ml.excess_constant():.3f} as N grows")
print(f"{'N':>6} {'KL':>9} {'± s.e.':>9} {'excess':>9} {'N x excess ± s.e.':>18}")
for n in (10, 100, 1000, 10000):
    kls = np.array([ml.kl_to_gaussian(*ml.ml_fit(ml.sample_p(n, rng))) for _ in range(fits)])
    se = kls.std(ddof=1) / np.sqrt(fits)
    excess = kls.mean() - best
    print(f"{n:6d} {kls.mean():9.5f} {se:9.1e} {excess:9.5f} {n * excess:11.2f} ± {n * se:.2f}")

# %% [markdown]
# The KL of the fitted Gaussian falls towards 0.1178, the smallest any Gaussian can reach, and the
# excess shrinks like $1/N$: the last column, $N$ times the excess, settles near the constant
# the theory gives. That is the familiar $O(1/N)$ excess risk of a maximum-likelihood fit; for a
# misspecified family the constant is Takeuchi's $\operatorname{tr}(J^{-1}K)/2$ (it would be
# $k/2 = 1$ for $k = 2$ parameters if $p$ were Gaussian; this flat, bimodal $p$ gives less). What maximum likelihood cannot do is go below 0.1178: for that the *family* must
# change. Section 2 of the seed changes it, by adding a latent variable.
#
# ## Try this
#
# - Change `ml.TRUE_P["weights"]` to `(0.5, 0.5)` and rerun the page: the minimum KL grows,
#   because an even mixture of two separated bumps is further from every Gaussian.
# - Set `ml.TRUE_P` to a single component (`weights=(1.0,)`, `locs=(1.0,)`, `scales=(1.0,)`):
#   now $p$ is in the family, the best KL is 0, and the excess is all there is.
# - The study `python -m experiments seed-ideas` repeats this with a two-component mixture model
#   fitted by EM as well; its figure `seed-ideas-ml-kl` shows the mixture's KL going to 0.
