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
# # 8. Discrete latents, where backpropagation cannot go
#
# *Seed, section 5.2.* {download}`Download this tutorial as a notebook <../_generated/notebooks/08-discrete-latents.ipynb>`.
#
# Section 5.2 of the seed turns $z \sim q_\lambda$ into $z = g_\lambda(x, \epsilon)$ with noise
# $\epsilon$ that does not depend on $\lambda$, and then differentiates through $g$. It ends
# with a warning:
#
# > "if we enforce continuity on $q_\lambda(z|x)$, we can use backpropagation for computing the
# > gradients [...]. However, discrete distributions like the binomial cannot then be learned by
# > using backpropagation!"
#
# This page shows why, and what is done instead: the score function of section 5.1 with better
# baselines, the antithetic estimators ARM and DisARM (unbiased), the continuous relaxations
# (biased, and by how much), and the exact sum when it is affordable.
#
# Everything is measured on the toy of Tucker et al. (2017, REBAR), a single Bernoulli latent
# with the cost $f(b) = (b - t)^2$:
#
# $$\mathcal F(\theta) = \mathbb E_{b \sim \text{Bernoulli}(\sigma(\theta))}\left[(b - t)^2\right]
#   = \sigma(\theta)(1-t)^2 + (1 - \sigma(\theta))\,t^2, \qquad
#   \mathcal F'(\theta) = \sigma'(\theta)\,(1 - 2t),$$
#
# with $t = 0.45$: $b = 1$ beats $b = 0$ by only $1 - 2t = 0.1$, so the gradient is small beside
# the noise of any estimate of it. To run the registry's ELBO estimators on it, the discrete
# study writes it as a "model" with $\log p(x, b) = f(b) + \log q_\perp(b)$, where $q_\perp$ is
# $q$ with its parameter held fixed: then $\log p - \log q = f(b)$, the ELBO (seed eq. 4) is
# $\mathcal F(\theta)$, and the gradient of $\mathbb E_q[\log q_\perp - \log q]$ is zero. The
# registry's `enumeration` sums over $b \in \{0, 1\}$ and gives the exact gradient:

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import special
from torch.distributions import Bernoulli, Independent

from estimators import ESTIMATORS, EstimatorError
from estimators.diagnostics import gradient_statistics, replicate_gradients
from experiments.discrete import ToyObjective
from experiments.explore import discrete as dx
from experiments.explore import interact
from experiments.style import estimator_style

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
torch.set_num_threads(1)  # small tensors: a thread pool costs more than it saves
R = 2000 if SMOKE else 50_000  # independent estimates behind each measured number
NODES = 12 if SMOKE else 40  # Gauss-Legendre nodes per piece of the exact variances
K = dx.NUM_SAMPLES  # samples of b per estimate, every estimator
t = torch.tensor(dx.TARGET, dtype=torch.float64)


def toy(theta):
    """The toy as a model and a q: E_q[log p(x, b) - log q(b)] = E[(b - t)^2] (see the text)."""
    logits = torch.as_tensor(theta, dtype=torch.float64)
    return ToyObjective(t, logits, "bernoulli"), Independent(Bernoulli(logits=logits), 1)


theta = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
model, q = toy(theta)
exact = ESTIMATORS["enumeration"](model, q, 1)  # the sum over b = 0 and b = 1, exactly
(gradient,) = torch.autograd.grad(exact.surrogate.sum(), theta)
print(f"E[(b - t)^2] at θ = 0: {exact.elbo.item():.4f};  d/dθ by enumeration: "
      f"{gradient.item():.4f};  σ'(θ)(1 - 2t) = {dx.exact_gradient(0.0):.4f}")

# %% [markdown]
# At $\theta = 0$ the gradient is $\tfrac14 \times 0.1 = 0.025$, and the exact sum agrees.
#
# ## Why backpropagation cannot go there
#
# A Bernoulli sample can be written as a function of noise, like a Gaussian one:
# $b = \mathbb 1[\theta + \operatorname{logit}(u) > 0]$ with $u \sim U(0, 1)$, which is $1$
# with probability $\sigma(\theta)$. But this $g_\theta(u)$ is a step: its derivative in
# $\theta$ is zero wherever it exists, and autograd returns exactly that. The seed's move from
# $\nabla_\lambda \int \zeta(\epsilon) f(g_\lambda(\epsilon))\,d\epsilon$ to
# $\int \zeta(\epsilon) \nabla_\lambda f(g_\lambda(\epsilon))\,d\epsilon$ (Leibniz's rule, its
# footnote 1) fails here: the whole gradient sits in the jump, which no sample ever sees.
# torch says the same: a Bernoulli has no `rsample`, and the registry's `pathwise` refuses it.

# %%
print("Bernoulli.has_rsample:", Bernoulli.has_rsample)
try:
    ESTIMATORS["pathwise"](model, q, K)
except EstimatorError as error:
    print(error)

u = torch.rand(5, dtype=torch.float64)
b = (theta + torch.logit(u) > 0).to(torch.float64)  # b = 1[u > 1 - σ(θ)], the Gumbel-max form
print("b =", b.tolist(), "  requires_grad:", b.requires_grad)

# %% [markdown]
# The threshold made from $\theta$ has no gradient at all (`requires_grad` is `False`). The
# figure shows the cost of one sample as $\theta$ moves with the noise held fixed: flat, then a
# jump. Its slope is 0 everywhere but at the jump, while the mean, in black, rises smoothly
# with slope 0.025 at $\theta = 0$.

# %%
thetas = np.linspace(-4, 4, 801)
fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
for value, style in ((0.3, "-"), (0.5, "--"), (0.8, ":")):
    jumps_at = -special.logit(value)  # b = 1 once θ > -logit(u)
    f = np.where(thetas > jumps_at, (1 - dx.TARGET) ** 2, dx.TARGET ** 2)
    ax.plot(thetas, f, color="0.45", linestyle=style, label=f"(b − t)² for one u = {value}")
ax.plot(thetas, dx.objective(thetas), color="black", linewidth=2, label="E[(b − t)²], exact")
ax.set_xlabel("θ (the logit of P(b = 1))")
ax.set_ylabel("value")
ax.set_title("For fixed noise the sample is a step in θ; its mean is smooth", fontsize=10)
ax.legend(fontsize=8, loc="center right");

# %% [markdown]
# ## Unbiased estimators and their exact variances
#
# The score function (seed section 5.1, eq. 8) needs nothing of $f$ but its values:
# $\mathcal F'(\theta) = \mathbb E[f(b)\,\partial_\theta \log q_\theta(b)]$. Its refinements, at
# the same $K = 2$ samples of $b$ per estimate:
#
# - `score_function`: $\frac1K\sum_k f(b_k)\,(b_k - \sigma(\theta))$, the seed's estimator;
# - `score_function_loo`: each $f(b_k)$ centred by the mean of the other samples' $f$, a
#   baseline that does not depend on $b_k$ and so keeps the estimator unbiased (Kool et al. 2019);
# - `arm` (Yin & Zhou 2019): one uniform $u$ gives an antithetic pair,
#   $b = \mathbb 1[u < \sigma(\theta)]$ and $\tilde b = \mathbb 1[u > \sigma(-\theta)]$, both
#   distributed as $q$, and the estimate $(f(b) - f(\tilde b))(\tfrac12 - u)$;
# - `disarm` (Dong, Mnih & Tucker 2020): ARM with $u$ integrated out given the pair,
#   $\tfrac12 (f(b) - f(\tilde b))(-1)^{\tilde b}\,\mathbb 1[b \ne \tilde b]\,\sigma(|\theta|)$;
#   zero whenever the pair agrees.
#
# All four are unbiased, so they differ only in variance. Their exact variances come from the
# discrete study's quadrature over the uniforms each estimator draws
# (`experiments.discrete.quadrature_moments`, through `dx.unbiased_moments`), beside $R$
# measured estimates with standard errors. The SNR column is $|\mathcal F'| / \text{sd}$ of one
# estimate.

# %%
UNBIASED = ("score_function", "score_function_loo", "arm", "disarm")
points = (-3.0, -1.5, 0.0, 1.5, 3.0)


def estimates(name, theta, **options):
    """R independent estimates of d/dθ, one vectorised pass."""
    grads = replicate_gradients(ESTIMATORS[name], lambda lam, _: toy(lam["logits"]),
                                {"logits": torch.tensor([theta], dtype=torch.float64)},
                                num_replicates=R, num_samples=K, **options)
    return grads.lambda_["logits"][:, 0]


torch.manual_seed(0)
measured = {(name, p): gradient_statistics(estimates(name, p), dx.exact_gradient(p))
            for name in UNBIASED for p in points}
print(f"K = {K}; exact variance by quadrature over each estimator's uniforms; measured over {R} "
      "estimates, ± s.e.")
for p in (0.0, -3.0):
    print(f"θ = {p:+.1f}: exact gradient {dx.exact_gradient(p):.5f}")
    print(f"  {'estimator':20s} {'exact variance':>15s} {'measured variance':>24s} "
          f"{'z of the mean':>14s} {'SNR':>7s}")
    for name in UNBIASED:
        _, variance = dx.unbiased_moments(name, [p], nodes=NODES)
        s = measured[name, p]
        exactly_zero = variance[0] < 1e-20  # zero but for rounding
        snr = np.inf if exactly_zero else dx.exact_gradient(p) / np.sqrt(variance[0])
        print(f"  {name:20s} {0 if exactly_zero else variance[0]:15.3e} "
              f"{s.variance.item() if s.variance.item() > 1e-20 else 0:13.3e} ± "
              f"{s.variance_se.item():.1e} {s.z.item():14.1f} {snr:7.3g}")

# %% [markdown]
# The measured variances agree with the exact ones within a few standard errors, and every mean
# is within about two standard errors of the exact gradient ($z$). At $\theta = 0$ the seed's
# score function's signal-to-noise ratio of 0.28 means averaging about
# $(1.645/0.28)^2 \approx 35$ estimates before the sign is right 95% of the time; the leave-one-out
# baseline gains a factor 13 in variance, ARM another 3, and DisARM is *exact*: at
# $\theta = 0$ the pair always disagrees ($b = \mathbb 1[u < \tfrac12]$,
# $\tilde b = \mathbb 1[u > \tfrac12]$), and every estimate equals
# $\tfrac14 (f(1) - f(0)) = \mathcal F'(0)$. Away from 0 the pair agrees more often, and at
# $\theta = -3$ the three refinements are level, at a tenth of the score function's variance.

# %%
curve = np.linspace(-4, 4, 16 if SMOKE else 64)  # an even count: θ = 0 is not on it
fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
for name in UNBIASED:
    style = estimator_style(name)
    _, variance = dx.unbiased_moments(name, curve, nodes=NODES)
    ax.plot(curve, variance, color=style["color"], linestyle=style["linestyle"], label=name)
    shown = [p for p in points if measured[name, p].variance.item() > 1e-20]  # not disarm at 0
    ax.errorbar(shown, [measured[name, p].variance.item() for p in shown],
                yerr=[2 * measured[name, p].variance_se.item() for p in shown],
                marker=style["marker"], color=style["color"], linestyle="none", markersize=4,
                capsize=2)
ax.plot(curve, dx.exact_gradient(curve) ** 2, color="black", linewidth=1.5,
        label="(exact gradient)², for scale")
ax.set_yscale("log")
ax.set_xlabel("θ")
ax.set_ylabel(f"variance of one estimate, K = {K}")
ax.set_title(f"Lines exact (quadrature); points measured, {R} estimates, ± 2 s.e.", fontsize=10)
ax.legend(fontsize=8, loc="lower center", ncol=2);

# %% [markdown]
# Across $\theta$ the score function (top) stays an order of magnitude above the others;
# DisARM's variance dips to zero at $\theta = 0$; the black line, the squared gradient, shows
# that for every estimator here the noise of one estimate is larger than the signal except
# near $\theta = 0$.
#
# ## The relaxations: biased, by how much
#
# The other way round the step is to smooth it. The Gumbel-softmax (Concrete) relaxation
# replaces $b = \mathbb 1[z > 0]$, $z = \theta + \operatorname{logit}(u)$, by
# $y = \sigma(z / \tau)$, which tends to $b$ as the temperature $\tau \to 0$, and backpropagates
# through $f(y)$ (Jang et al. 2017; Maddison et al. 2017). `straight_through` uses the value at
# the discrete $b$ and the gradient through $y$ (Bengio et al. 2013). Neither is unbiased: $f$ is
# evaluated, or differentiated, where $b$ never is. Their exact mean and variance at each $\tau$
# are one-dimensional integrals over $u$ (`dx.relaxed_moments`: Gauss-Legendre, split where
# $z = 0$ and at multiples of $\tau$ around it, the registry's estimator called once for every
# node and temperature):

# %%
temperatures = np.array([0.1, 0.3, 0.5, 1.0, 2.0])
for p in (0.0, -2.0):
    print(f"θ = {p:+.1f}: exact gradient {dx.exact_gradient(p):.5f}; exact mean (variance) of "
          f"one estimate, K = {K}")
    print(f"  {'τ':>5s}" + "".join(f"{name:>30s}" for name in dx.RELAXED))
    moments = {name: dx.relaxed_moments(name, p, temperatures) for name in dx.RELAXED}
    for i, tau in enumerate(temperatures):
        print(f"  {tau:5.1f}" + "".join(f"{moments[n][0][i]:18.5f} ({moments[n][1][i]:.1e})"
                                        for n in dx.RELAXED))
check = estimates("gumbel_softmax", -2.0, temperature=0.5)
print(f"gumbel_softmax at θ = -2, τ = 0.5, measured: {check.mean().item():.5f} ± "
      f"{check.std().item() / np.sqrt(R):.5f} ({R} estimates)")

# %% [markdown]
# At $\theta = 0$ both relaxations are biased low, by 1% at $\tau = 0.1$, 14% at $\tau = 0.5$
# (the library's default) and 57% at $\tau = 2$, and they share their mean there, by the
# symmetry of the toy at $\theta = 0$. Their variance grows as $\tau$ falls (about $1/\tau$):
# at $\tau = 0.1$, Gumbel-softmax's is 0.043, seventy times the leave-one-out score function's.
#
# At $\theta = -2$ it is worse: the exact gradient is $+0.0105$, and at $\tau = 0.5$ the
# Gumbel-softmax's mean is $-0.0224$, twice as large and of the *opposite sign*
# (straight-through's, $-0.037$). An optimiser that follows it pushes $\theta$ the wrong way.
# The measured mean of 50,000 estimates confirms the exact value. The reason: at $\theta = -2$
# the relaxed $y$ mostly lies between 0 and $t = 0.45$, where $f(y) = (y - t)^2$ *decreases*, and
# the relaxation follows the slope of $f$ at $y$, not the difference $f(1) - f(0)$ that the true
# gradient is made of.
#
# ## Explore: the temperature
#
# Panel (a) compares the relaxed sample with the Bernoulli it stands for (their distribution
# functions); panels (b) and (c) draw the two relaxations' exact mean and variance against
# $\tau$, with 4000 fresh estimates at the current $\tau$ (± 2 s.e.) and the variances of the
# unbiased `score_function_loo` and `disarm` for comparison. In Jupyter, sliders move `temperature`
# and `theta`. The exact curves for every $\theta$ of the slider are computed once, at the first
# view (about 0.7 s); each move then draws 8000 fresh estimates and redraws in about 0.2 s (the
# median move of `python -m experiments.benchmark_explore --control discrete-temperature` on a
# 2-core CPU).

# %%
interact(dx.TEMPERATURE, temperature=0.5, theta=-2.0)

# %% [markdown]
# No temperature is right: where the bias is small (low $\tau$) the variance is many times the
# unbiased estimators', and where the variance is small (high $\tau$) the mean is off, here
# even in sign. Move `theta` to $+2$: the relaxations now overshoot the exact gradient, by a
# factor of about 4 at $\tau = 0.5$.
#
# ## Enumeration, when it is affordable
#
# With $D$ independent Bernoulli latents the ELBO is a sum over $2^D$ outcomes, and
# `enumeration` computes it, and by autograd its gradient, exactly: no noise at all, at the
# price of $2^D$ evaluations of the model. Below each latent has its own logit, all at 0, so
# every coordinate of the exact gradient is 0.025. Past `max_outcomes` (4096 by default) the
# estimator refuses, and says what to use instead.

# %%
print(f"{'latents D':>9s} {'outcomes = evaluations of log p':>32s} {'max |gradient - exact|':>24s}")
for dim in (1, 4, 8, 12):
    logits = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    model, q = toy(logits)
    value = ESTIMATORS["enumeration"](model, q, 1)
    (grad,) = torch.autograd.grad(value.surrogate.sum(), logits)
    error = (grad - dx.exact_gradient(0.0)).abs().max().item()
    print(f"{dim:9d} {2 ** dim:32d} {error:24.1e}")
model, q = toy(torch.zeros(13, dtype=torch.float64))
try:
    ESTIMATORS["enumeration"](model, q, 1)
except EstimatorError as error:
    print("D = 13:", error)

# %% [markdown]
# Twelve latents already cost 4096 evaluations for one gradient, where `disarm` needs $K = 2$;
# a VAE with 200 Bernoulli latents (the discrete study's sigmoid belief networks) has $2^{200}$
# outcomes. Enumeration is the ground truth for small problems and for tests, and the reason the
# Monte Carlo estimators above exist.
#
# ## Try this
#
# - Set `dx.TARGET = 0.499` after the imports of the first cell (the harder toy of the RELAX paper,
#   Grathwohl et al. 2018) and rerun: the exact gradient shrinks fifty-fold, to 0.0005 at
#   $\theta = 0$. The score function's variance barely moves (its noise comes from the level
#   of $f$, about $t^2$), so its SNR falls fifty-fold, to 0.006. The leave-one-out, ARM and
#   DisARM estimates are built from differences $f(b) - f(\tilde b)$, which shrink with the
#   gradient: their SNRs do not change. That is what a baseline buys.
# - In the temperature figure, move `theta` through $-3, \dots, 3$ at $\tau = 0.5$: the
#   relaxations' mean crosses the exact gradient near $\theta = 0$ and has the wrong sign for
#   every $\theta \le -1$.
# - The discrete study, `python -m experiments discrete`, runs the same toy with REBAR and RELAX
#   as well, follows each estimator through an Adam optimisation of $\theta$, and trains sigmoid
#   belief networks with 200 Bernoulli latents on binarized MNIST.
