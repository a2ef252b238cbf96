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
# # 7. Multi-sample bounds: IWAE, DReG, VIMCO
#
# *Seed, sections 3 and 5.2.* {download}`Download this tutorial as a notebook <../_generated/notebooks/07-multi-sample-bounds.ipynb>`.
#
# The seed's lower bound comes from one use of Jensen's inequality (section 3):
#
# $$\log \mathbb{E}_{z\sim q}\left[\frac{p_\theta(x,z)}{q_\lambda(z|x)}\right] \ge
#   \mathbb{E}_{z\sim q}\left[\log\frac{p_\theta(x,z)}{q_\lambda(z|x)}\right],$$
#
# and its gap is the $D_{KL}(q_\lambda(z|x)\,\|\,p_\theta(z|x))$ of equation (3). Jensen's gap is
# small when the thing inside the logarithm varies little. Burda, Grosse & Salakhutdinov (2016)
# put an *average* of $K$ independent importance weights $w_k = p_\theta(x, z_k)/q_\lambda(z_k|x)$
# there instead of one. The average has the same mean, $p_\theta(x)$, and a variance $K$ times
# smaller, so
#
# $$\mathcal L_K = \mathbb E_{z_1,\dots,z_K \sim q}\left[\log \frac1K\sum_{k=1}^K w_k\right],$$
#
# $$\mathcal L_1 = \text{ELBO (eq. 4)} \le \mathcal L_2 \le \dots \le \mathcal L_K
#   \xrightarrow{K\to\infty} \log p_\theta(x).$$
#
# The estimators `iwae`, `dreg` and `vimco` of the registry estimate the gradient of
# $\mathcal L_K$, and this page is about what that means. First, the bound: how fast it closes on
# $\log p(x)$. Second, its gradient: it is a *different* objective from the ELBO, with a
# different gradient and a different best $q$, and each of the three estimators is unbiased for
# it and not for the ELBO's. Third, the encoder's signal-to-noise ratio, which, for `iwae`,
# *falls* as $K$ grows (Rainforth et al. 2018) while `dreg`'s rises (Tucker et al. 2019).
#
# Every exact number comes from a model where $\log p(x)$ is known: the conjugate Gaussian of
# `estimators.targets`, $z \sim \mathcal N(\theta, 1)$, $x \mid z \sim \mathcal N(z, 1)$, one
# observation $x = 1.5$, $\theta = 0$. For $q_\lambda = \mathcal N(\mu, \sigma^2)$, with
# $\lambda = (\mu, \log\sigma)$, we take the prior itself, $\mathcal N(0, 1)$: an encoder that
# ignores $x$, so that the bound has room to improve.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.targets import ConjugateGaussian
from experiments.explore import interact
from experiments.explore import multi_sample as ms
from experiments.quadrature import iwae_bound
from experiments.style import estimator_style

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
torch.set_num_threads(1)  # small tensors: a thread pool costs more than it saves
R = 1000 if SMOKE else 10_000  # independent gradient estimates behind each measured number
K_GRID = (1, 2, 8, 32, 128) if SMOKE else (1, 2, 4, 8, 16, 32, 64, 128)

x = torch.tensor([ms.X], dtype=torch.float64)
model = ConjugateGaussian(x, torch.tensor([ms.PRIOR_LOC], dtype=torch.float64))
posterior = model.posterior().base_dist
log_px, log_px_gradient = ms.log_evidence()
elbo, elbo_gradient = ms.exact_elbo()
print(f"posterior p(z | x) = N({posterior.loc.item():.3f}, {posterior.scale.item():.4f}²); "
      f"q = N({ms.Q_LOC:.3f}, {np.exp(ms.Q_LOG_SCALE):.4f}²)")
print(f"log p(x) = {log_px:.4f}   ELBO = {elbo:.4f}   KL(q || posterior) = {log_px - elbo:.4f}")
print(f"chi²(posterior || q) = Var_q[w / p(x)] = {ms.chi_square():.4f}")

# %% [markdown]
# The posterior $\mathcal N(0.75, \tfrac12)$ is narrower than $q$ and sits to its right; the
# ELBO misses $\log p(x)$ by the KL, 0.716 nats. The last line is the $\chi^2$ divergence of the
# posterior from $q$, the variance of the normalised weight $w/p(x)$ under $q$. It is finite
# here because $q$ is wider than the posterior, and it is what the bound's gap is made of.
#
# ## The bound tightens with K
#
# $\mathcal L_K$ has no closed form for $K \ge 2$, but it is exact all the same, for every $K$
# at once, by two classical facts. For $s > 0$, $\log s = \int_0^\infty (e^{-t} - e^{-ts})\,dt/t$
# (Frullani's integral), and the Laplace transform of a sum of independent terms is the product
# of theirs. So with $\varphi(u) = \mathbb E_q[e^{-u w}]$,
#
# $$\mathcal L_K = \int_0^\infty \left(e^{-Ku} - \varphi(u)^K\right) \frac{du}{u},$$
#
# and $\varphi$ is a one-dimensional integral over the noise $\epsilon$ of
# $z = \mu + \sigma\epsilon$, done once on a grid of $u$ (`ms.exact_bound`; its gradient is
# the same integral differentiated). As a check, the identity is set beside a two-dimensional
# adaptive cubature of $\mathcal L_2$ (`experiments.quadrature.iwae_bound`, the gmm-vi study's
# tool, which cannot go much past $K = 3$).

# %%
ks = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000])
bound = ms.exact_bound(ks)
chi2 = ms.chi_square()
print(f"{'K':>6} {'L_K':>9} {'log p(x) - L_K':>15} {'K x gap':>9}"
      f"   (K x gap -> chi²/2 = {chi2 / 2:.4f})")
for k, value in zip(bound.num_samples, bound.value):
    print(f"{k:6d} {value:9.4f} {log_px - value:15.5f} {k * (log_px - value):9.4f}")
check = iwae_bound(model.log_joint, ms.Q_LOC, ms.Q_LOG_SCALE, 2, tolerance=1e-6)
print(f"K = 2 by 2-D adaptive cubature (experiments.quadrature.iwae_bound): "
      f"{check.elbo.item():.10f}, by the identity: {bound.value[1]:.10f}")

# %% [markdown]
# The gap $\log p(x) - \mathcal L_K$ falls from 0.716 nats at $K = 1$ to 0.047 at $K = 8$ and
# 0.0027 at $K = 128$, and $K$ times the gap settles at 0.340, which is $\chi^2/2$: for large
# $K$, $\log p(x) - \mathcal L_K \approx \chi^2/(2K)$, the delta method applied to the log of an
# average. The identity and the cubature agree to ten digits.
#
# Now the estimators. The function `build` gives `replicate_gradients` one copy of the
# parameters per replicate, so that $R$ independent estimates come out of one backward pass; it
# returns the bound's estimate as well (the `elbo` field, here the $K$-sample estimate
# $\log \frac1K\sum_k w_k$).

# %%
def build(lam, theta):
    """One (model, q) per replicate: each parameter has a leading dimension R."""
    model = ConjugateGaussian(x, theta["prior_loc"])
    q = Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)
    return model, q


lam = {"loc": torch.tensor([ms.Q_LOC], dtype=torch.float64),
       "log_scale": torch.tensor([ms.Q_LOG_SCALE], dtype=torch.float64)}
theta = {"prior_loc": torch.tensor([ms.PRIOR_LOC], dtype=torch.float64)}

torch.manual_seed(0)
measured = {}  # (estimator, K) -> {"grads": (R, 3), "bound": (mean, se), coordinate: statistics}
for name in ("iwae", "dreg", "vimco"):
    for k in K_GRID:
        if k < ESTIMATORS[name].min_samples:
            continue  # vimco's leave-one-out baselines need a second sample
        grads = replicate_gradients(ESTIMATORS[name], build, lam, theta,
                                    num_replicates=R, num_samples=k)
        exact = ms.exact_bound([k]).gradient[0]
        values = torch.cat([*grads.lambda_.values(), *grads.theta.values()], -1)
        row = {"grads": values,
               "bound": (grads.elbo.mean().item(), grads.elbo.std().item() / np.sqrt(R))}
        for i, coordinate in enumerate(ms.COORDINATES):
            row[coordinate] = gradient_statistics(values[:, i], exact[i])
        measured[name, k] = row
print(f"{len(measured)} (estimator, K) pairs, {R} replicates each")

# %% [markdown]
# The figure sets the exact curve beside the mean of `iwae`'s value at each $K$ of the run.

# %%
curve_k = np.unique(np.round(np.logspace(0, 3, 61)).astype(int))
curve = ms.exact_bound(curve_k)
iwae_k = [k for k in K_GRID]
iwae_bound_mc = np.array([measured["iwae", k]["bound"] for k in iwae_k])

fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.5), constrained_layout=True)
ax = axes[0]
ax.plot(curve_k, curve.value, color="black", label="exact $L_K$")
ax.errorbar(iwae_k, iwae_bound_mc[:, 0], yerr=2 * iwae_bound_mc[:, 1], fmt="o", markersize=4,
            capsize=2, color=estimator_style("iwae")["color"],
            label=f"iwae's estimate, mean ± 2 s.e. ({R} each)")
ax.axhline(log_px, color="0.4", linestyle="--", label="log p(x)")
ax.axhline(elbo, color="0.4", linestyle=":", label="ELBO (K = 1)")
ax.set_xscale("log")
ax.set_xlabel("samples K")
ax.set_ylabel("nats")
ax.set_title("(a) the K-sample bound", fontsize=10)
ax.legend(fontsize=7.5, loc="lower right")
ax = axes[1]
ax.plot(curve_k, log_px - curve.value, color="black", label="exact log p(x) − $L_K$")
ax.errorbar(iwae_k, log_px - iwae_bound_mc[:, 0], yerr=2 * iwae_bound_mc[:, 1], fmt="o",
            markersize=4, capsize=2, color=estimator_style("iwae")["color"],
            label="log p(x) − iwae's mean, ± 2 s.e.")
ax.plot(curve_k, chi2 / (2 * curve_k), color="0.5", linestyle="--", label="χ² / (2K)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("samples K")
ax.set_ylabel("gap to log p(x) (nats)")
ax.set_title("(b) the gap falls as χ²/(2K)", fontsize=10)
ax.legend(fontsize=7.5, loc="lower left");

# %% [markdown]
# The measured means sit on the exact curve within their error bars (panel a). Panel (b) shows
# the gap on log axes: the straight line of slope $-1$ is the $\chi^2/(2K)$ law, reached from
# about $K = 16$ on. The Monte Carlo points there are noisy because the gap, a few thousandths
# of a nat, is smaller than one estimate's spread; the exact curve needs no such luck.
#
# ## Its gradient is not the ELBO's
#
# Each estimator approximates the gradient of *its own* objective:
#
# - `iwae` is the pathwise gradient of $\log\frac1K\sum_k w_k$, $z_k = \mu + \sigma\epsilon_k$
#   (seed section 5.2, applied to the average);
# - `dreg` (doubly reparameterized) rewrites the part of that gradient which hides a score
#   function, $\nabla_\lambda \log q_\lambda(z_k)$ at fixed $z_k$, as a second pathwise term
#   with squared normalised weights $\tilde w_k^2$;
# - `vimco` is the score function of the seed's section 5.1 applied to $\mathcal L_K$, each
#   sample's signal centred by a leave-one-out baseline built from the other $K-1$ weights.
#   It needs no $\nabla_z \log p$, so it works for discrete $z$ too.
#
# All three are unbiased for $\nabla \mathcal L_K$. The ELBO's `pathwise` estimator at the same
# $K$ is set beside them, with the exact gradients of both objectives and of $\log p(x)$:

# %%
K = 8
grads = replicate_gradients(ESTIMATORS["pathwise"], build, lam, theta, num_replicates=R,
                            num_samples=K)
measured["pathwise", K] = {"grads": torch.cat([*grads.lambda_.values(),
                                               *grads.theta.values()], -1)}
exact_k = ms.exact_bound([K]).gradient[0]
print(f"K = {K}, mean of {R} estimates ± s.e.; z = (mean - exact) / s.e. against each objective")
print(f"{'':18s}" + "".join(f"{c:>19s}" for c in ms.COORDINATES))
for label, values in (("exact ∇ELBO", elbo_gradient), (f"exact ∇L_{K}", exact_k),
                      ("exact ∇log p(x)", log_px_gradient)):
    print(f"{label:18s}" + "".join(f"{v:19.4f}" for v in values))
for name in ("pathwise", "iwae", "dreg", "vimco"):
    values = measured[name, K]["grads"]
    against_bound = [gradient_statistics(values[:, i], exact_k[i]) for i in range(3)]
    against_elbo = [gradient_statistics(values[:, i], elbo_gradient[i]) for i in range(3)]
    print(f"{name:18s}" + "".join(f"{s.mean.item():10.4f} ± {s.mean_se.item():.4f}"
                                  for s in against_bound))
    print(f"{'   z against ∇L_K':18s}" + "".join(f"{s.z.item():19.1f}" for s in against_bound))
    print(f"{'   z against ∇ELBO':18s}" + "".join(f"{s.z.item():19.1f}" for s in against_elbo))

# %% [markdown]
# Read the $z$ rows: every estimator of the $K$-sample bound is within about two standard errors
# of $\nabla\mathcal L_8$ and tens to hundreds of them away from $\nabla$ELBO; `pathwise` is the
# other way round. These are two different objectives, with different gradients, and not an
# error of the estimators:
#
# - $\partial/\partial\log\sigma$ has the *other sign*. The ELBO says "narrow $q$" ($-1$): its
#   optimum is the posterior, $\sigma = 0.71$. $\mathcal L_8$ says "widen it" ($+0.033$): a bound
#   built on averaged weights is hurt most by rare, huge weights, which come from a $q$ too
#   narrow in the posterior's tails, so its best $q$ is wider.
# - For the model's parameter $\theta$ the ELBO's gradient is 0 here, because $q$ is centred on
#   the prior mean, while the true $\partial \log p(x)/\partial\theta$ is 0.75. $\mathcal L_8$'s,
#   0.689, is most of the way there: a looser $q$ biases the model's learning less under
#   $\mathcal L_K$.
#
# Against $K$, each exact gradient moves from the ELBO's (dotted) to $\log p(x)$'s (dashed), and
# the estimators' means follow it:

# %%
labels = {"loc": "∂/∂loc", "log_scale": "∂/∂log_scale",
          "prior_loc": "∂/∂θ (prior_loc)"}
fig, axes = plt.subplots(1, 3, figsize=(8.0, 3.3), constrained_layout=True)
for i, (ax, coordinate) in enumerate(zip(axes, ms.COORDINATES)):
    ax.plot(curve_k, curve.gradient[:, i], color="black", label="exact ∇$L_K$")
    ax.axhline(elbo_gradient[i], color="0.4", linestyle=":", label="exact ∇ELBO")
    ax.axhline(log_px_gradient[i], color="0.4", linestyle="--", label="exact ∇log p(x)")
    for j, name in enumerate(("iwae", "dreg", "vimco")):
        ks_name = [k for k in K_GRID if (name, k) in measured]
        means = [measured[name, k][coordinate].mean.item() for k in ks_name]
        ses = [measured[name, k][coordinate].mean_se.item() for k in ks_name]
        style = estimator_style(name)
        ax.errorbar(np.array(ks_name) * 1.12 ** (j - 1), means, yerr=2 * np.array(ses),
                    fmt=style["marker"], color=style["color"], markersize=3.5, capsize=2,
                    linestyle="none", label=f"{name} (± 2 s.e.)")
    ax.set_xscale("log")
    ax.set_xlabel("samples K")
    ax.set_title(labels[coordinate], fontsize=10)
axes[0].set_ylabel("gradient")
axes[0].legend(fontsize=7, loc="upper right");

# %% [markdown]
# The encoder's gradient, $\partial/\partial\mu$ and $\partial/\partial\log\sigma$, goes to
# 0: $\log p(x)$ does not depend on $q$ at all, so the better the bound, the less it has to say
# about $q$ (here $\partial\mathcal L_K/\partial\mu \approx 0.84/K$). The decoder's gradient
# goes to the true one, 0.75.
#
# ## The encoder's signal-to-noise ratio
#
# A vanishing mean is only a problem if the noise does not vanish as fast. Rainforth et al.
# (2018) measure the signal-to-noise ratio, $|\mathbb E\,g| / \operatorname{sd}(g)$ for one
# estimate $g$, and show that for `iwae` it falls like $1/\sqrt K$ for the encoder while it rises
# like $\sqrt K$ for the decoder. Tucker et al. (2019) trace the encoder's noise to the score
# term inside `iwae`'s gradient; `dreg` removes it, and its encoder SNR rises like $\sqrt K$.
# The SNR of each coordinate, with its delta-method standard error, comes from
# `gradient_statistics` on the replicates drawn above:

# %%
print(f"SNR = |mean| / sd of one estimate, ± s.e., {R} replicates each")
print(f"{'K':>5}" + "".join(f"{name + ' ∂/∂loc':>17s}" for name in ("iwae", "dreg", "vimco"))
      + f"{'iwae ∂/∂θ':>17s}")
for k in K_GRID:
    cells = []
    for name, coordinate in (("iwae", "loc"), ("dreg", "loc"), ("vimco", "loc"),
                             ("iwae", "prior_loc")):
        if (name, k) in measured:
            s = measured[name, k][coordinate]
            cells.append(f"{s.snr.item():9.3f} ± {s.snr_se.item():.3f}")
        else:
            cells.append(f"{'—':>17s}")
    print(f"{k:5d}" + "".join(cells))

# %% [markdown]
# From $K = 1$ to $K = 128$ `iwae`'s encoder SNR falls from 0.76 to about 0.03: at $K = 128$
# one estimate of $\partial\mathcal L_K/\partial\mu$ has the right sign barely more often than a
# coin. `dreg`'s rises from 1.5 to about 6.8, and the decoder's (`iwae` and `dreg` share it)
# from 0.5 at $K = 2$ to about 10. `vimco`'s rises a little at first and then falls, more
# slowly than `iwae`'s: its leave-one-out baselines cancel much of its score function's noise,
# but its signal vanishes like `iwae`'s.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
for name, coordinate, label in (("iwae", "loc", "iwae, encoder ∂/∂loc"),
                                ("dreg", "loc", "dreg, encoder ∂/∂loc"),
                                ("vimco", "loc", "vimco, encoder ∂/∂loc"),
                                ("iwae", "prior_loc", "iwae (= dreg), decoder ∂/∂θ")):
    # At K = 1 the decoder's exact gradient is 0 here (q is the prior), and so is its SNR.
    ks_name = [k for k in K_GRID if (name, k) in measured and (k > 1 or coordinate == "loc")]
    snr = np.array([measured[name, k][coordinate].snr.item() for k in ks_name])
    se = np.array([measured[name, k][coordinate].snr_se.item() for k in ks_name])
    style = estimator_style(name)
    ax.errorbar(ks_name, snr, yerr=2 * se, color=style["color"], marker=style["marker"],
                markersize=4, capsize=2, linestyle="--" if coordinate == "prior_loc" else "-",
                label=label)
grid = np.array([1.0, K_GRID[-1]])
first, last = measured["iwae", 1]["loc"].snr.item(), measured["dreg", K_GRID[-1]]["loc"].snr.item()
ax.plot(grid, first / np.sqrt(grid), color="0.5", linestyle=":",
        label="∝ 1/√K through iwae at K = 1,\n∝ √K through dreg at the largest K")
ax.plot(grid, last * np.sqrt(grid / grid[-1]), color="0.5", linestyle=":")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("samples K")
ax.set_ylabel("signal-to-noise ratio |E g| / sd(g) (± 2 s.e.)")
ax.set_title("Encoder SNR falls for iwae, rises for dreg", fontsize=10)
ax.legend(fontsize=8);

# %% [markdown]
# On log axes the two behaviours are straight lines of slope $-\tfrac12$ and $+\tfrac12$
# (dotted guides), reached once $K$ is past a few samples. So training an encoder with `iwae` at
# large $K$ buys a tighter bound with an encoder gradient that is mostly noise; `dreg` gets the
# bound without paying that price.
#
# ## Explore: the number of samples
#
# Panel (a) marks $K$ on the exact bound; panel (b) shows 1000 estimates of
# $\partial\mathcal L_K/\partial\mu$ from `iwae` and from `dreg`, each binned over its own range,
# with the exact value and how often one estimate has its sign. In Jupyter a slider moves $K$
# from 1 to 128 (and `seed` redraws the estimates). The bound's curve is computed once; each
# move draws 2000 fresh estimates and redraws in about 0.2 s (the median move of
# `python -m experiments.benchmark_explore --control multi-sample-gradients` on a 2-core CPU).

# %%
interact(ms.GRADIENTS, num_samples=8)

# %% [markdown]
# At $K = 8$ `iwae`'s estimates spread over $\pm 1$ around a mean of 0.12 and have the right
# sign in about 55% of draws; `dreg`'s sit within $\pm 0.2$ of it and are right in about 99%.
# Move $K$ to 128: `iwae`'s histogram is centred almost on 0 with a spread of 0.15, `dreg`'s has
# shrunk to a spike of width 0.002.
#
# ## Try this
#
# - Put $q$ on the posterior: `ms.Q_LOC, ms.Q_LOG_SCALE = 0.75, np.log(0.5) / 2`, and rerun.
#   Every weight is then $p(x)$ exactly, so $\mathcal L_K = \log p(x)$ for every $K$ and the
#   encoder's exact gradient is 0. `dreg` returns 0 at every $K$, to rounding (its
#   $\partial_z \log w$ is 0 everywhere); `iwae` still returns noise around 0, its score term,
#   with a standard deviation of about 0.5 at $K = 8$. (`dreg`'s $z$ against the exact 0 is
#   then a ratio of two rounding errors, of order $10^{-17}$: ignore it.)
# - Make $q$ narrower than half the posterior's variance, `ms.Q_LOG_SCALE = np.log(0.4)`: the
#   $\chi^2$ divergence is then infinite, and the gap no longer falls like $1/K$ (`ms.chi_square`
#   returns `inf` and $K$ times the gap keeps growing).
# - The gmm-vi study, `python -m experiments gmm-vi`, measures all three estimators' bias against
#   the ELBO's gradient on a 2-D ring of eight Gaussians, where the gap to the ELBO's gradient is
#   measured rather than computed.
