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
# # 5. The reparameterization trick and when it loses
#
# *Seed, section 5.2.* {download}`Download this tutorial as a notebook <../_generated/notebooks/05-reparameterization.ipynb>`.
#
# The score-function estimator (tutorials 3 and 4) never differentiates $f$; it differentiates
# the density $q_\lambda$. Section 5.2 of the seed moves $\lambda$ out of the density and into
# the sample: "Instead of $z \sim q_\lambda(z|x)$, let us define
#
# $$z = g_\lambda(x, \epsilon) \quad\text{where}\quad \epsilon \sim \zeta(\epsilon)$$
#
# [...] Now that $\zeta(\epsilon)$ does not depend on $\lambda$, we can push $\nabla_\lambda$
# through":
#
# $$\nabla_\lambda\,\mathrm{ELBO} = \int \zeta(\epsilon)\,\nabla_\lambda
#   \log\frac{p_\theta(x, g_\lambda(x,\epsilon))}{q_\lambda(g_\lambda(x,\epsilon)|x)}\,d\epsilon .$$
#
# For the Gaussian $q = \mathcal N(\mu, \sigma^2)$, $g_\lambda(\epsilon) = \mu + \sigma\epsilon$
# with $\epsilon\sim\mathcal N(0,1)$. This page writes that estimator by hand and checks it
# against the registry's `pathwise`. It then measures how much it gains on a VAE-like model,
# and reproduces the cases of Mohamed et al. (2020) where it *loses* to the score function.
# Last, it adds a third estimator, the measure-valued derivative, which differentiates neither
# $f$ nor the sample.

# %%
import os

import numpy as np
import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from experiments import cost_functions, score_forms
from experiments.explore import interact
from experiments.explore import reparameterization as rx
from experiments.explore import score_function as sfx

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
R = 2000 if SMOKE else 20_000  # independent estimates behind each measured number

# %% [markdown]
# ## The trick, by hand
#
# Tutorial 3's model again: $z\sim\mathcal N(0,1)$, $x\mid z\sim\mathcal N(z,1)$, $x = 0.8$,
# and tutorial 4's $q$, away from the posterior. Draw $\epsilon$, build
# $z = \mu + \sigma\epsilon$ from parameters that require gradients, and let autograd
# differentiate $\log p(x,z) - \log q(z)$ *through* $z$.

# %%
model = sfx.model()
mu, sigma = (float(v) for v in sfx.q_at(1.5, 0.6))
loc = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
scale = torch.tensor([sigma], dtype=torch.float64, requires_grad=True)
q = Independent(Normal(loc, scale), 1)

torch.manual_seed(0)
epsilon = torch.randn(4, 1, dtype=torch.float64)  # zeta: N(0, 1), free of lambda
z = loc + scale * epsilon  # g_lambda(epsilon)
by_hand = torch.autograd.grad((model.log_joint(z) - q.log_prob(z)).mean(), [loc, scale])

torch.manual_seed(0)  # the registry's pathwise draws the same epsilon through q.rsample
registry = torch.autograd.grad(ESTIMATORS["pathwise"](model, q, 4).surrogate, [loc, scale])
print(f"by hand:   d/dμ {by_hand[0].item():+.12f}, d/dσ {by_hand[1].item():+.12f}")
print(f"pathwise:  d/dμ {registry[0].item():+.12f}, d/dσ {registry[1].item():+.12f}")

# %% [markdown]
# The two agree to every printed digit: `pathwise` is exactly the seed's formula, with
# `q.rsample` doing $g_\lambda(\epsilon)$.
#
# How much does it gain? On this model $\log p(x, z)$ is a quadratic in $z$, and the path
# derivative of one sample is exact in closed form. $\log q(g_\lambda(\epsilon)) = -\log\sigma -
# \epsilon^2/2 + $ const does not depend on $\mu$, so
# $\partial_\mu = x - 2z$ and $\partial_\sigma = (x - 2z)\epsilon + 1/\sigma$, whose variances are
# $4\sigma^2$ and $(x-2\mu)^2 + 8\sigma^2$. Measured beside the score function, one sample each:

# %%
start = {"loc": torch.tensor([mu], dtype=torch.float64),
         "scale": torch.tensor([sigma], dtype=torch.float64)}


def build(lam, theta):
    return model, Independent(Normal(lam["loc"], lam["scale"]), 1)


x = model.x.item()
exact = {"pathwise": (4 * sigma**2, (x - 2 * mu) ** 2 + 8 * sigma**2),
         "score_function": tuple(score_forms.exact_variances(model.log_joint, mu,
                                                             sigma)["score_function"][0])}
print(f"single-sample variance, measured ± s.e. (R = {R}) [exact]")
for name in ("score_function", "pathwise"):
    torch.manual_seed(1)
    grads = replicate_gradients(ESTIMATORS[name], build, start, num_replicates=R, num_samples=1)
    cells = []
    for i, p in enumerate(("loc", "scale")):
        s = gradient_statistics(grads.lambda_[p].squeeze(-1))
        cells.append(f"{s.variance.item():7.3f} ± {s.variance_se.item():.3f} "
                     f"[{exact[name][i]:.3f}]")
    print(f"  {name:15s} d/dμ {cells[0]:30s} d/dσ {cells[1]}")
ratio = np.array(exact["score_function"]) / np.array(exact["pathwise"])
print(f"score_function / pathwise, exact: d/dμ {ratio[0]:.0f}x, d/dσ {ratio[1]:.0f}x")

# %% [markdown]
# The pathwise estimator's variance is 51 times smaller for $\mu$ and 14 times for $\sigma$.
# This is why the original VAE paper used it, and why the seed calls it "ingenious". It uses
# what the score function throws away, the *slope* of $\log p(x, z)$ in $z$. Its price, in
# the seed's words: "we will have to impose stronger (but pretty reasonable) conditions". $q$
# must be reparameterizable (`q.rsample`) and $\log p(x,z)$ differentiable in $z$. So
# "discrete distributions like the binomial cannot then be learned by using backpropagation"
# (tutorial 8).
#
# ## When the slope is the problem
#
# Using the slope is an advantage only when the slope is tame. Mohamed, Rosca, Figurnov & Mnih
# (2020, Figures 2 and 3) study the gradient of $\mathbb E_{\mathcal N(x;\mu,\sigma^2)}[f(x)]$
# for three costs with a parameter $k$: the quadratic $(x-k)^2$, the Gaussian bump
# $e^{-kx^2}$, and the cosine $\cos(kx)$. Per sample the two estimators are
#
# $$\text{score function: } f(x)\,\nabla_\theta\log\mathcal N(x;\mu,\sigma^2), \qquad
#   \text{pathwise: } f'(x)\,\frac{\partial x}{\partial\theta},\quad x = \mu + \sigma\epsilon .$$
#
# The score function's variance grows with the *size* of $f$, the pathwise one's with the size
# of its *slope*. For $\cos(kx)$ the slope is $-k\sin(kx)$: the pathwise variance grows like
# $k^2$, while $|f| \le 1$ keeps the score function's bounded. All variances here are exact,
# one-dimensional integrals from the study `cost-functions` (shown as $K$ times the variance,
# $K = 2$, at $\mu = \sigma = 1$):

# %%
table = {"quadratic": [-3.0, 1.0, 3.0], "gaussian": [0.1, 1.0, 10.0], "cosine": [0.5, 2.0, 8.0]}
print(f"K × Var[∂/∂μ estimate], exact, at μ = σ = 1")
widths = [len(name) + 2 for name in rx.ESTIMATORS_SHOWN]
print(f"{'cost':12s} {'k':>5s}" + "".join(f"{name:>{w}s}" for name, w in
                                          zip(rx.ESTIMATORS_SHOWN, widths)))
for family, ks in table.items():
    curves = rx.exact_curves(family, ks)
    for i, k in enumerate(ks):
        cells = [curves[name][i, 0] for name in rx.ESTIMATORS_SHOWN]
        cells = [0.0 if abs(v) < 1e-12 else v for v in cells]  # an exact zero, to rounding
        print(f"{cost_functions.COSTS[family].label:12s} {k:5g}"
              + "".join(f"{v:{w}.4g}" for v, w in zip(cells, widths)))
for family in ("gaussian", "cosine"):
    print(f"{cost_functions.COSTS[family].label}: pathwise loses to score_function for k above "
          f"{rx.crossover(family, rx.K_GRIDS[family]):.2f}")

# %% [markdown]
# Read the table by rows:
#
# - **Quadratic**: the pathwise variance is $4\sigma^2 = 4$ whatever $k$; the score function's
#   grows with the size of $f$ (495 at $k = -3$, where the bump of $q$ sits far from the
#   minimum of the cost).
# - **Gaussian bump**: for a wide bump ($k = 0.1$) pathwise wins by a factor 35; for a narrow
#   one ($k = 10$) its slope is steep and it *loses* by a factor 12. The crossing is at
#   $k \approx 0.87$.
# - **Cosine**: beyond $k \approx 1.06$ pathwise loses, and by $k = 8$ its variance is 32
#   against the score function's 0.5.
#
# The right column belongs to the **measure-valued derivative** (Mohamed et al. 2020, section
# 6). It writes the derivative of the density as a difference of two densities,
# $\partial_\mu \mathcal N(x;\mu,\sigma^2) = \frac{1}{\sigma\sqrt{2\pi}}
# \bigl[\mathcal W^+(x) - \mathcal W^-(x)\bigr]$, with $\mathcal W^\pm$ the laws of
# $\mu\pm\sigma w$ and $w$ a Rayleigh variable. It then estimates
# $\frac{1}{\sigma\sqrt{2\pi}}\bigl[f(\mu+\sigma w) - f(\mu-\sigma w')\bigr]$. Like the score
# function it needs no slope, and $f$ need not be differentiable. Like the pathwise one it looks
# at differences of $f$, not at its level. One of the pair is best in every row but the
# quadratic at $k = -3$, where pathwise's 4 beats its 10. The price is extra evaluations of
# $f$, two per parameter and sample. `measure_valued_coupled` uses the same $w$ on both sides
# ($w' = w$). That helps when the two costs move together and hurts when they move apart:
# it halves the variance for the wide bump and the slow cosine, and raises it for the
# quadratic far from its minimum and for the cosine at $k = 2$. For the quadratic at
# $k = \mu = 1$ the pair is symmetric and its variance is exactly zero.
#
# ## Measured beside exact
#
# The registry's estimators estimate an ELBO gradient, so the cost is handed to them as a model
# whose learning signal *is* $f$: $\log p(x, z) = f(z) + \log q(z)$, which gives
# $\log p - \log q = f$. The pathwise estimator gets the $q$ inside the model with its
# parameters attached, so the two $\log q$ cancel along the path. The other estimators
# differentiate $q$'s density at a fixed $z$, so they get the $q$ inside the model held at its
# current value (`cost_functions.ExpectedCost`, the study's construction).

# %%
def variance_of(name, family, ks):
    """K x variance of d/dmu, with its standard error, of R estimates at each k."""
    cost = cost_functions.COSTS[family]
    k = torch.tensor(ks, dtype=torch.float64).unsqueeze(-1)  # one problem per k: batch (P, 1)
    start = {"loc": torch.full_like(k, rx.LOC), "scale": torch.ones_like(k)}

    def build(lam, theta):
        q = Independent(Normal(lam["loc"], lam["scale"]), 1)
        held = Independent(Normal(lam["loc"].detach(), lam["scale"].detach()), 1)
        inside = q if ESTIMATORS[name].needs_rsample else held
        return cost_functions.ExpectedCost(cost, k, inside), q

    grads = replicate_gradients(ESTIMATORS[name], build, start, num_replicates=R,
                                num_samples=rx.NUM_SAMPLES)
    s = gradient_statistics(grads.lambda_["loc"].squeeze(-1))
    return ks, rx.NUM_SAMPLES * s.variance.numpy(), rx.NUM_SAMPLES * s.variance_se.numpy()


points = {"quadratic": [-3.0, -1.5, 0.0, 1.5, 3.0], "gaussian": [0.1, 0.3, 1.0, 3.0, 10.0],
          "cosine": [0.5, 1.0, 2.0, 4.0, 8.0]}
torch.manual_seed(2)
measured = {family: {name: variance_of(name, family, ks) for name in rx.ESTIMATORS_SHOWN}
            for family, ks in points.items()}
worst = 0.0
for family, rows in measured.items():
    exact = rx.exact_curves(family, points[family])
    for name, (ks, value, se) in rows.items():
        z = np.abs(value - exact[name][:, 0]) / np.maximum(se, 1e-12)
        worst = max(worst, z[exact[name][:, 0] > 1e-12].max())
print(f"largest |measured − exact| / s.e. over {3 * 4 * 5} points: {worst:.1f}")
rx.draw_cost_families(measured)

# %% [markdown]
# The points ($R$ estimates each, ±2 s.e.) lie on the exact lines, within about three standard
# errors. The curves cross: no estimator is best for every cost. The pathwise line (green)
# is flat for the quadratic and climbs steeply for the narrow bump and the fast cosine. The
# measure-valued lines (olive) stay low for all three costs. The score function (blue) is never
# the best of the four, and it is the worst for the quadratic, where $f$ is large. The coupled
# measure-valued line drops to exactly zero at isolated $k$ for the cosine: at $k = n\pi$ its
# two points $\mu \pm \sigma w$ give equal costs, since $\cos(k(1+\sigma w)) -
# \cos(k(1-\sigma w)) = -2\sin k \,\sin(k\sigma w)$.
#
# ## Explore: the cosine's frequency and the scale of q
#
# In Jupyter two sliders move the cosine's `k` and the scale $\sigma$ of $q$ (its mean stays
# 1). The exact curves of every $\sigma$ on the slider are computed once, in about a second.
# Each move then draws fresh Monte Carlo points at the current $k$ ($R = 2000$ per estimator)
# and redraws, in about 0.35 s on a 2-core CPU. The coupled estimator's $\sigma$-variance needs
# a double integral, so only its measured point is drawn there.

# %%
interact(rx.COSINE, k=2.0, scale=1.0)

# %% [markdown]
# At $\sigma = 1$ the pathwise estimator loses beyond $k \approx 1.1$ for $\mu$ and $1.3$ for
# $\sigma$. What matters is $k\sigma$, the number of oscillations $q$ spans. Move `scale` to
# 0.5 and the crossing moves out to $k \approx 2.1$; move it to 2 and pathwise loses already
# at $k \approx 0.45$. In a VAE the decoder's log-likelihood is usually smooth on the scale of
# $q$, which is why the trick wins there. A rough or oscillating $\log p(x,z)$ takes that
# advantage away.
#
# ## Try this
#
# - Make a cost the pathwise estimator cannot see, a step, and print each estimator's mean
#   gradient in $\mu$ at $k = 0$ and $k = 1$:
#
#   ```python
#   step = cost_functions.Cost("1[x > k]", lambda x, k, lib: 1.0 * (x > k),
#                              lambda x, k, lib: 0 * x, False)
#   for name in rx.ESTIMATORS_SHOWN:
#       g = cost_functions.replicate(name, step, np.array([0.0, 1.0]),
#                                    cost_functions.Config(), 20_000)["loc"]
#       print(name, g.mean(0).numpy())
#   ```
#
#   The exact gradient is $\varphi(k - \mu)$ = 0.242 and 0.399, but `pathwise` returns exactly
#   0. The slope of a step is zero almost everywhere, so the estimator is *biased*, not just
#   noisy. `score_function` and both measure-valued estimators find the right values (at
#   $k = \mu$ the measure-valued pair is even exact: $f(\mu + \sigma w) = 1$ and
#   $f(\mu - \sigma w) = 0$ for every $w$).
# - Move `k` to 8 and `scale` from 1 to 0.5: the score function's and the measure-valued
#   variances grow fourfold (their weights carry $1/\sigma$, so they grow like $1/\sigma^2$),
#   while the pathwise one stays at $32 = k^2/2$. For a fast oscillation it depends on $k$
#   alone.
# - The study `python -m experiments cost-functions` draws all three families for $\mu$ and
#   $\sigma$ with $R = 100{,}000$, the coupled $\sigma$-variance included.
