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
# # 2. Latent variables, the ELBO and its gap
#
# *Seed, sections 2–3.* {download}`Download this tutorial as a notebook <../_generated/notebooks/02-elbo-and-its-gap.ipynb>`.
#
# Tutorial 1 ended at a wall: no Gaussian comes closer than 0.118 nats to the mixture $p$, and
# no amount of data helps. Section 2 of the seed changes the family by adding a variable we never
# observe. For a discrete latent $z$ the **law of total probability** gives the density of $x$:
#
# $$p(x) = \sum_{k=1}^{M} p(x \mid z_k)\, p(z_k),
#   \qquad\text{for the mixture of Gaussians}\qquad
#   p(x) = \sum_{k=1}^{M} \pi_k\, \mathcal N(x \mid \mu_k, \Sigma_k).$$
#
# Tutorial 1's $p = 0.3\,\mathcal N(-2, 0.6^2) + 0.7\,\mathcal N(1, 1)$ is exactly such a model:
# the component $k$ is the latent variable. Observe one point, $x = -1$, and compute $\log p(x)$
# twice: as the log of the sum over $k$, and with torch's `MixtureSameFamily`.

# %%
import os

import numpy as np
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from estimators import ESTIMATORS
from experiments.explore import elbo, interact

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version

weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
locs = torch.tensor([-2.0, 1.0], dtype=torch.float64)
scales = torch.tensor([0.6, 1.0], dtype=torch.float64)
x = torch.tensor(elbo.SECTION_TWO["observation"], dtype=torch.float64)

log_joint = weights.log() + Normal(locs, scales).log_prob(x)  # log p(x, k), one per component
print("log p(x, k) for k = 1, 2:       ", log_joint.numpy().round(4))
print(f"log sum_k p(x, k)             = {torch.logsumexp(log_joint, 0):.6f}")
print(f"torch MixtureSameFamily        = {elbo.discrete_log_evidence():.6f}")
posterior = Categorical(logits=log_joint)  # Bayes: p(k | x) = p(x, k) / p(x)
print("posterior p(k | x), k = 1, 2:  ", posterior.probs.numpy().round(4))

# %% [markdown]
# Both give $\log p(x) = -2.4357$. The point $x=-1$ sits between the two components, and Bayes'
# rule splits the credit 57 : 43 between them, even though the first has only 30 % of the prior
# weight: it is the closer one.
#
# ## Jensen's inequality and the ELBO
#
# For a continuous $z$ the sum becomes the integral of seed eq. (1), which is rarely tractable.
# The seed's way round it (section 3) multiplies inside by $q_\lambda(z\mid x)/q_\lambda(z\mid
# x)$ for any distribution $q$ we like, and uses that $\log$ is concave:
#
# $$\log \mathbb E_{z\sim q}\left[\frac{p_\theta(x,z)}{q_\lambda(z\mid x)}\right]
#   \;\ge\; \mathbb E_{z\sim q}\left[\log\frac{p_\theta(x,z)}{q_\lambda(z\mid x)}\right].$$
#
# The left side is $\log p(x)$ **for every** $q$ (the $q$'s cancel inside the expectation); the
# right side is the evidence lower bound, the ELBO (eq. 4). Rewriting $p(x,z) = p(x)\,p(z\mid
# x)$ turns the difference into a KL divergence, seed eqs. (2)–(3):
#
# $$\log p_\theta(x) = \underbrace{\mathbb E_{q}\left[\log\frac{p_\theta(x,z)}{q_\lambda(z\mid x)}
#   \right]}_{\text{ELBO}(q)} + D_{KL}\big(q_\lambda(z\mid x)\,\|\,p_\theta(z\mid x)\big).$$
#
# With $k$ discrete every expectation is a two-term sum, so all three numbers are exact. The KL
# comes from torch's registry (`kl_divergence` of two `Categorical`s), not from the identity:

# %%
print(f"{'q(k=1)':>8} {'log E_q[p/q]':>13} {'ELBO':>9} {'gap':>8} {'KL(q||p(k|x))':>14} "
      f"{'gap - KL':>9}")
for first in (0.05, 0.3, float(posterior.probs[0]), 0.8, 0.99):
    q = Categorical(probs=torch.tensor([first, 1 - first], dtype=torch.float64))
    left = torch.logsumexp(log_joint, 0)  # log sum_k q_k p(x, k) / q_k: q cancels
    bound = (q.probs * (log_joint - q.probs.log())).sum()  # E_q[log p(x, k) - log q(k)]
    kl = kl_divergence(q, posterior)
    print(f"{first:8.3f} {left:13.6f} {bound:9.4f} {left - bound:8.4f} {kl:14.4f} "
          f"{left - bound - kl:9.1e}")

# %% [markdown]
# The ELBO is below $\log p(x)$ for every $q$, the gap equals the KL to the posterior to the
# last digit (the last column is rounding, $\sim 10^{-16}$), and the bound is tight, gap zero,
# exactly when $q$ *is* the posterior, $q(k{=}1) = 0.570$. The whole curve:

# %%
elbo.draw_discrete()

# %% [markdown]
# Maximising the ELBO over $q$ (the seed's $\max_\lambda$ of eq. 2) finds the posterior, and at
# the top the bound touches $\log p(x)$. At either end $q$ is certain of one component, and the
# gap is $-\log p(k \mid x)$ of the component it chose: 0.57 nats for $k = 1$, 0.84 for the
# less probable $k = 2$. The curve is not symmetric about the posterior: $D_{KL}(q\,\|\,p)$
# charges more for missing posterior mass than for spreading $q$ too evenly.
#
# ## A continuous latent, where the posterior has a closed form
#
# The seed's model has a continuous $z$. Take the simplest: $z \sim \mathcal N(0, 1)$ and
# $x \mid z \sim \mathcal N(z, 0.5^2)$ with $x = 1.5$, the library's
# `estimators.targets.ConjugateGaussian`. Here the ELBO of a Gaussian $q = \mathcal N(\mu_q,
# \sigma_q^2)$, the posterior $\mathcal N(1.2, 0.447^2)$ and $\log p(x)$ are all closed forms,
# and the KL between two Gaussians is in torch's registry. Check eq. (3) on 2,440 different
# $q$'s at once (a batch of $q$'s is a batch dimension, no loop):

# %%
model = elbo.conjugate_model()
loc_grid, scale_grid = torch.meshgrid(torch.linspace(-2, 4, 61, dtype=torch.float64),
                                      torch.logspace(-1.3, 0.5, 40, dtype=torch.float64),
                                      indexing="ij")
q = Independent(Normal(loc_grid.unsqueeze(-1), scale_grid.unsqueeze(-1)), 1)  # batch (61, 40)
bound = model.exact_elbo(loc_grid.unsqueeze(-1), scale_grid.unsqueeze(-1))
kl = kl_divergence(q, model.posterior())
wrong_kl = kl_divergence(model.posterior(), q)  # the other direction, to see the check fail
evidence = model.log_evidence()
print(f"posterior: N({model.posterior().mean.item():.4f}, {model.posterior().stddev.item():.4f}^2)"
      f";  log p(x) = {evidence.item():.6f}")
print(f"max |log p(x) - ELBO - KL(q || p(z|x))| over {kl.numel()} q's = "
      f"{(evidence - bound - kl).abs().max():.1e}")
print(f"max |log p(x) - ELBO - KL(p(z|x) || q)| (the wrong direction) = "
      f"{(evidence - bound - wrong_kl).abs().max():.1f}")

# %% [markdown]
# The identity holds to float64 rounding ($\sim 10^{-14}$ on numbers of size up to 30) for all
# 2,440 $q$'s, and the same check with the KL taken the other way round misses by whole nats:
# eq. (3) is about $D_{KL}(q\,\|\,p)$, the direction in which $q$ does the averaging.
#
# ## A continuous latent whose posterior no Gaussian can match
#
# Now give $z$ the mixture of section 2 as its prior, $p(z) = 0.3\,\mathcal N(-2, 0.6^2) +
# 0.7\,\mathcal N(1, 1)$, keep a Gaussian likelihood $x\mid z \sim \mathcal N(z, 1)$, and observe
# $x=-1$. The law of total probability, applied over $k$ and over $z$, still gives $\log p(x)$
# in closed form, $\sum_k \pi_k\, \mathcal N(x; \mu_k, \tau_k^2 + 1)$, and the posterior is a
# mixture of two Gaussians. But the ELBO of a Gaussian $q$ contains $\mathbb E_q[\log p(z)]$,
# the expectation of the log of a sum, which has no closed form, and torch has no KL between a
# Gaussian and a mixture. Both come from adaptive quadrature (`scipy.integrate.quad_vec`),
# each of its own integrand, so the check below is not circular:

# %%
mixture = elbo.mixture_model()
print("posterior weights of the two bumps:", mixture.posterior().mixture_distribution.probs
      .numpy().round(3))
mixture_locs = np.array([-2.0, -1.0, 0.0, 1.0, -0.8])
mixture_scales = np.array([0.3, 1.0, 0.45, 2.0, 1.0])
bound = elbo.exact_elbo(mixture, mixture_locs, mixture_scales, method="adaptive")
kl = elbo.kl_to_posterior(mixture, mixture_locs, mixture_scales, method="adaptive")
evidence = mixture.log_evidence().item()
print(f"log p(x) = {evidence:.6f} (closed form)")
print(f"{'mu_q':>6} {'sigma_q':>8} {'ELBO':>9} {'KL':>8} {'log p(x) - ELBO - KL':>21}")
for row in zip(mixture_locs, mixture_scales, bound, kl, evidence - bound - kl):
    print(f"{row[0]:6.2f} {row[1]:8.2f} {row[2]:9.4f} {row[3]:8.4f} {row[4]:21.1e}")
best_loc, best_scale, best_gap = elbo.best_gaussian(mixture)
print(f"best Gaussian q: N({best_loc:.3f}, {best_scale:.3f}^2), gap {best_gap:.4f} nats")

# %% [markdown]
# Again ELBO + KL $= \log p(x)$ to $\sim 10^{-12}$, the quadrature's tolerance. But now the gap
# cannot be closed: the **best** Gaussian $q$ sits between the two bumps of the posterior,
# $\mathcal N(-0.79, 1.01^2)$, and still leaves 0.082 nats. That is the same lesson as tutorial
# 1, one level down: the variational family $\mathcal Q$ has its own price, and the seed's
# remark that the error "approaches 0 as the two distributions converge" needs a family rich
# enough for them to converge.
#
# ## Monte Carlo: what the estimators see
#
# An estimator never sees these exact curves. It draws $z \sim q$ and averages $\log p(x, z) -
# \log q(z)$; the registry's `pathwise` estimator draws $z = \mu_q + \sigma_q \varepsilon$
# (section 5.2, tutorial 5). Its one-sample estimates, repeated $R$ times (the replicates are a
# batch dimension of $q$), against the exact ELBO:

# %%
replicates = 200 if SMOKE else 4000
torch.manual_seed(0)
print(f"pathwise one-sample ELBO estimates, mean ± s.e. of R = {replicates}")
print(f"{'model':>20} {'mu_q':>5} {'sigma_q':>7} {'exact':>9} {'estimate':>9} {'± s.e.':>7} "
      f"{'z':>6}")
for name, chosen in (("conjugate Gaussian", model), ("mixture prior", mixture)):
    for loc, scale in ((0.0, 0.45), (1.2, 0.45), (-1.0, 1.0)):
        q = Independent(Normal(torch.full((replicates, 1), loc, dtype=torch.float64),
                               torch.full((replicates, 1), scale, dtype=torch.float64)), 1)
        with torch.no_grad():
            values = ESTIMATORS["pathwise"](chosen, q, num_samples=1).elbo  # (R,)
        exact = float(elbo.exact_elbo(chosen, loc, scale))
        se = values.std().item() / replicates ** 0.5
        print(f"{name:>20} {loc:5.1f} {scale:7.2f} {exact:9.4f} {values.mean().item():9.4f} "
              f"{se:7.4f} {(values.mean().item() - exact) / se:6.2f}")

# %% [markdown]
# Each estimate lands within a couple of standard errors of the exact ELBO (the last column is
# the z-score): the estimator is unbiased for the ELBO, and it is blind to the gap. Nothing it
# computes says how far the ELBO is below $\log p(x)$; only a model with a known $\log p(x)$,
# like these, can tell.
#
# ## Moving q
#
# The figure below draws, for the Gaussian $q$ the sliders set, $q$ against the exact posterior
# (left) and the whole exact ELBO curve against $\mu_q$ at that $\sigma_q$ (right), with $\log
# p(x)$ above it, the gap at this $q$, and pathwise estimates with ±2 s.e. bars. In Jupyter the
# sliders choose the model, $\sigma_q$ and $\mu_q$; each move redraws in about 0.2 s on a 2-core
# CPU (`python -m experiments.benchmark_explore --control elbo-gap`).

# %%
interact(elbo.ELBO_GAP, model="conjugate Gaussian", scale=0.45, loc=0.0)

# %% [markdown]
# At $\mu_q = 0$ the conjugate posterior is 1.2 away, and the gap is 3.6 nats. Move $\mu_q$ to
# 1.2: $\sigma_q = 0.45$ is almost the posterior's 0.447, and the gap is $4\times10^{-5}$ nats.
# Now the mixture prior, whose posterior has two bumps:

# %%
interact(elbo.ELBO_GAP, model="mixture prior", scale=0.45, loc=0.0)

# %% [markdown]
# The ELBO curve has two humps, one under each bump of the posterior, and neither reaches $\log
# p(x)$. A narrow $q$ must choose a bump: at $\sigma_q = 0.45$ the best $\mu_q$ is $-1.5$, on
# the left one, which holds only half the posterior mass, and the gap there is 0.55 nats. Widen
# $q$ to $\sigma_q = 1$ and the two humps merge into one whose top, at $\mu_q = -0.8$ between the
# bumps, comes within 0.08 nats of $\log p(x)$: here a wide $q$ that covers both modes beats a
# narrow one that fits one.
#
# What the seed draws from this (eqs. 4–5): maximising the ELBO over $\lambda$ moves $q$
# towards the posterior, and maximising it over $\theta$ raises $\log p_\theta(x)$ minus the gap,
# so a model is rewarded for having a posterior that its $q$ can follow. The next tutorials are
# about the gradient of the ELBO with respect to $\lambda$, which the estimators must approximate
# from samples like those above.
#
# ## Try this
#
# - In the mixture model, set `elbo.MIXTURE["noise_scale"] = 0.4` (a more precise measurement)
#   and rerun from `mixture = elbo.mixture_model()`: the likelihood pins $z$ near $x$, the two
#   components of the posterior overlap into nearly one bump, and the best Gaussian's gap falls
#   tenfold, to about 0.009 nats.
# - Set `elbo.MIXTURE["observation"] = 3.0`: the point is far from the first component, the
#   posterior is one bump (the first component keeps 0.01 % of it), and the gap of the best
#   Gaussian is $3\times10^{-5}$ nats.
# - In the discrete table, replace `(0.05, 0.3, ...)` by values closer to 0 and 1, such as
#   `1e-9` and `1 - 1e-9`: the gaps approach $-\log p(k \mid x)$ of the one component $q$
#   keeps, 0.84 and 0.57 nats. Then move the point, `x = torch.tensor(-0.3, ...)`: the posterior
#   gives component 1 only 3 %, and a $q$ certain of it pays 3.5 nats, one certain of component
#   2 only 0.03.
