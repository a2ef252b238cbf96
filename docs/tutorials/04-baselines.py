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
# # 4. Baselines and control variates
#
# *Seed, sections 5.1 and 6.* {download}`Download this tutorial as a notebook <../_generated/notebooks/04-baselines.ipynb>`.
#
# Tutorial 3 showed where the score-function estimator's noise comes from. Each estimate
# $f(z)\,\nabla_\lambda\log q(z)$ multiplies a zero-mean score by the *whole* learning signal
# $f = \log p(x,z) - \log q(z)$, including its level, which carries no information about the
# gradient. The seed notes in section 6 that for score matching "the key is that
# $q_\lambda(z|x)$ is amenable to variance reduction techniques". The simplest and most widely
# used of these is a **baseline**: subtract from $f(z_k)$ a number $b_k$ before multiplying by
# the score,
#
# $$\hat g = \frac1K\sum_{k=1}^K \bigl(f(z_k) - b_k\bigr)\,\nabla_\lambda \log q_\lambda(z_k),
#   \qquad z_k \sim q_\lambda .$$
#
# In the language of Monte Carlo, $b_k\,\nabla_\lambda\log q(z_k)$ is a *control variate*: a
# quantity with known mean (zero), subtracted to cancel noise. This page uses tutorial 3's
# model, $z \sim \mathcal N(0,1)$, $x\mid z \sim \mathcal N(z,1)$, $x = 0.8$, with
# $q = \mathcal N(\mu, \sigma^2)$ placed away from the posterior. On this model the gradient
# and every variance below are exact.

# %%
import os

import numpy as np
import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS, ElboEstimate, EmaBaseline, attach_gradient
from estimators.diagnostics import batch_mean, gradient_statistics, replicate_gradients
from experiments import score_forms
from experiments.explore import baselines as bx
from experiments.explore import score_function as sfx
from experiments.replicated import NVIL, estimator_for, probe_options

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version

model = sfx.model()
OFFSET, SCALE = 1.5, 0.6  # q: 1.5 posterior sds to the right of it, 0.6 times as wide
mu, sigma = (float(v) for v in sfx.q_at(OFFSET, SCALE))
moments = bx.signal_moments(OFFSET, SCALE)  # exact E[f], E[f s], E[f^2 s^2], ... by quadrature
exact_gradient = moments["g"]
print(f"q = N({mu:.3f}, {sigma:.3f}²);  exact gradient d/dμ {exact_gradient[0]:+.4f}, "
      f"d/dσ {exact_gradient[1]:+.4f};  ELBO {moments['G']:.4f}")

# %% [markdown]
# ## Why a baseline independent of $z_k$ keeps the estimator unbiased
#
# One line of algebra. If $b_k$ is independent of $z_k$, the expectation of the product splits,
# and the score has mean zero (tutorial 3, the seed's $\int\nabla_\lambda q = 0$):
#
# $$\mathbb E\bigl[b_k\,\nabla_\lambda\log q(z_k)\bigr]
#   = \mathbb E[b_k]\;\mathbb E\bigl[\nabla_\lambda\log q(z_k)\bigr] = 0
#   \quad\Longrightarrow\quad \mathbb E[\hat g] = \nabla_\lambda\,\mathrm{ELBO}.$$
#
# So $b_k$ may be a constant, an average of *past* signals, the signals of the *other*
# samples, or a function of the input $x$, but never a function of $z_k$ itself. The
# registry's baselines are all of the allowed kinds. To see the rule matter, here is one that
# breaks it, written as a user would write any estimator: a callable returning an
# `ElboEstimate` whose surrogate carries the gradient. Its baseline is the mean of all $K$
# signals, $z_k$'s own included. Then $\mathbb E[b_k s_k] = \frac1K \mathbb E[f_k s_k]$, and
# its mean is $(1 - \frac1K)$ times the gradient.

# %%
def score_function_own_sample_in_baseline(model, q, num_samples):
    """WRONG on purpose: b_k = mean_j f(z_j) uses z_k itself."""
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    signal = (model.log_joint(z) - log_q).detach()
    baseline = signal.mean(0)  # includes f(z_k)
    elbo = signal.mean(0)
    return ElboEstimate(elbo, attach_gradient(elbo, ((signal - baseline) * log_q).mean(0)))


def build(lam, theta, target=model):
    return target, Independent(Normal(lam["loc"], lam["scale"]), 1)


start = {"loc": torch.tensor([mu], dtype=torch.float64),
         "scale": torch.tensor([sigma], dtype=torch.float64)}
K, R = 4, (2000 if SMOKE else 50_000)
warm = EmaBaseline(decay=0.9)  # a moving average needs a past: one pass at this q first
replicate_gradients(ESTIMATORS["score_function_ema"], build, start, num_replicates=R,
                    num_samples=K, state=warm)
candidates = {
    "score_function": (ESTIMATORS["score_function"], {}),
    "score_function, b = −2": (ESTIMATORS["score_function"],
                                            {"baseline": torch.tensor(-2.0, dtype=torch.float64)}),
    "score_function_ema": (ESTIMATORS["score_function_ema"], {"state": warm}),
    "score_function_loo": (ESTIMATORS["score_function_loo"], {}),
    "score_function_optimal": (ESTIMATORS["score_function_optimal"], {}),
    "own sample in baseline (wrong)": (score_function_own_sample_in_baseline, {}),
}
print(f"mean of R = {R} estimates with K = {K}, ± s.e. (z against the exact gradient)")
print(f"  {'':30s} {'d/dμ':>25s} {'d/dσ':>25s}")
torch.manual_seed(0)
for label, (estimator, options) in candidates.items():
    grads = replicate_gradients(estimator, build, start, num_replicates=R, num_samples=K,
                                **options)
    cells = []
    for i, p in enumerate(("loc", "scale")):
        s = gradient_statistics(grads.lambda_[p].squeeze(-1), torch.tensor([exact_gradient[i]]))
        cells.append(f"{s.mean.item():+.3f} ± {s.mean_se.item():.3f} (z = {s.z.item():+5.1f})")
    print(f"  {label:30s} {cells[0]:>25s} {cells[1]:>25s}")
print(f"  (1 − 1/K) × exact gradient = {(1 - 1 / K) * exact_gradient[0]:+.3f}, "
      f"{(1 - 1 / K) * exact_gradient[1]:+.3f}")

# %% [markdown]
# Every allowed baseline gives the exact gradient within its standard errors ($|z|$ below about
# 2.5). The one that uses $z_k$ is off by many standard errors for $\mu$ and several for
# $\sigma$, and its mean is
# $(1-\frac1K)$ times the gradient, as the algebra says. The same samples with the sample mean
# computed *without* $f(z_k)$ give `score_function_loo`, which is unbiased. Notice too that the
# unbiased rows have different standard errors. That difference is the point of a baseline.
#
# ## How much each baseline lowers the variance
#
# With a constant $b$ the variance of one estimate is a parabola in $b$,
#
# $$K\operatorname{Var}[\hat g] = \mathbb E[f^2 s^2] - 2b\,\mathbb E[f s^2]
#   + b^2\,\mathbb E[s^2] - g^2,$$
#
# smallest at $b^* = \mathbb E[f s^2]/\mathbb E[s^2]$. The library's choices:
#
# - `score_function_ema` (`estimators.EmaBaseline`): $b$ is a moving average of past signals.
#   At a fixed $q$ it settles at $\mathbb E_q[f]$, the ELBO. In training it lags behind a
#   moving $q$.
# - `score_function_loo`: $b_k = \frac1{K-1}\sum_{j\ne k} f(z_j)$ (Kool et al. 2019). Since
#   $f_k - b_k = \frac{K}{K-1}(f_k - \bar f)$, the estimate is
#   $\frac1{K-1}\sum_k (f_k - \bar f)\,s_k$. Expanding its square gives the exact variance
#   $K\operatorname{Var} = A - g^2 + \frac{BC + g^2 + (K-2)CG^2}{K-1} - 2FG$, with
#   $G = \mathbb E f$, $B = \mathbb E f^2$, $A = \mathbb E f^2s^2$, $C = \mathbb E s^2$,
#   $F = \mathbb E f s^2$. As $K$ grows it tends to the variance of the constant $b = $ ELBO.
# - `score_function_optimal`: $b^*$ for all parameters at once,
#   $\sum_p \mathbb E[f s_p^2] / \sum_p \mathbb E[s_p^2]$ (Mohamed et al. 2020, section
#   7.4), estimated from the other $K-1$ samples so that it stays independent of $z_k$.
#
# The exact numbers at this $q$, as $K$ times the total variance (the sum over $\mu$ and
# $\sigma$), which is the same for every $K$ when the baseline is a constant:

# %%
exact = bx.exact_variances(moments, [2, 4, 32])
print(f"ELBO = {moments['G']:.3f}, b* = {bx.trace_optimal_baseline(moments):.3f}")
for name, values in exact.items():
    print(f"  {name:20s} K × total variance at K = 2, 4, 32: "
          + ", ".join(f"{v:7.2f}" for v in values))

# %% [markdown]
# Subtracting the ELBO lowers the variance from 119.3 to 91.5, and the best constant,
# $b^* = -1.68$, lowers it to 72.6: a factor 1.6. The best constant is *not* the ELBO. $b^*$ weights
# each $f$ by its squared score, and the scores are largest in $q$'s tails, where $f$ differs
# most from its mean. At $K = 2$ leave-one-out is hardly better than no baseline, because its
# baseline is a single noisy draw.
#
# The savings look modest here because $f$ stays within a few nats of zero on this model. On a
# real model the level of $f$ is far from zero: a likelihood of many observations is hundreds
# of nats. Shifting $\log p(x,z)$ by a constant $c$ shows the effect without changing the
# posterior or the gradient. Below, $K$ times the total variance against $K$, exact curves and
# measured points (±2 s.e.), at $c = 0$ and at $c = -10$.

# %%
ks = [2, 4, 8, 16, 32]
R = 1000 if SMOKE else 20_000
measured = {}
for shift in (0.0, -10.0):
    target = model if shift == 0 else score_forms.ShiftedModel(model, shift)

    def shifted_build(lam, theta, target=target):
        return build(lam, theta, target)

    rows = {}
    for name in bx.MEASURED:
        values, errors = [], []
        for k in ks:
            options = {}
            if name == "score_function_ema":
                options["state"] = EmaBaseline(decay=0.9)
                replicate_gradients(ESTIMATORS[name], shifted_build, start, num_replicates=R,
                                    num_samples=k, **options)  # the past it averages
            grads = replicate_gradients(ESTIMATORS[name], shifted_build, start,
                                        num_replicates=R, num_samples=k, **options)
            s = gradient_statistics(torch.cat([grads.lambda_["loc"], grads.lambda_["scale"]], -1))
            values.append(k * s.total_variance.item())
            errors.append(k * s.total_variance_se.item())
        rows[name] = (ks, values, errors)
    measured[shift] = rows
    print(f"c = {shift:+g}: K × total variance, measured ± s.e. (R = {R}) at K = "
          + ", ".join(map(str, ks)))
    for name in bx.MEASURED:
        print(f"  {name:24s}" + "".join(f"{v:6.0f} ± {e:<4.0f}" for v, e in zip(*rows[name][1:])))

bx.draw_variance_against_k(measured, OFFSET, SCALE)

# %% [markdown]
# What to notice:
#
# - Without a baseline, $K$ times the variance is flat: 119 at $c = 0$, 2,344 at $c = -10$,
#   because the estimator pays for the constant as $c^2\,\mathbb E[s^2]$.
# - The baselines do not see the shift. The moving average, the other samples' mean and the
#   estimated $b^*$ all move with $f$, so their exact curves are the same in both panels, and
#   against the shifted model they cut the variance about twenty-five times.
# - `score_function_loo` falls with $K$ onto the dashed line of $b$ = ELBO, and
#   `score_function_ema` lies on that line at every $K$ (its baseline comes from the past,
#   so it costs nothing at small $K$).
# - `score_function_optimal` does *not* reach the dash-dotted line of $b^*$ at these $K$. At
#   $K = 2$ it *is* leave-one-out (with one other sample the ratio has a single term; the two
#   points differ only by their draws). Above that it falls slowly, and at $K = 32$ it is still
#   no better than leave-one-out. Its baseline is a weighted mean of
#   the other signals with weights $\lVert s_j\rVert^2$, which grow like $e^4$ in the standard
#   noise $e$. A few samples with large scores dominate the weighted mean, so the estimate of
#   $b^*$ stays noisy until $K$ is in the hundreds. A baseline that is optimal in theory pays
#   for the noise of its own estimate.
# - The measured points scatter a little more than their error bars suggest, most at small
#   $K$. Single estimates are heavy-tailed (the score of $\sigma$ grows like $e^2$, $f$ like
#   $e^2$ too), so the standard error of a measured variance is itself uncertain. The exact
#   curves are what the points estimate.
#
# ## NVIL: a baseline that depends on the input
#
# In a VAE, $q$ is amortised: an encoder maps each data point $x$ to its own
# $q_\lambda(z\mid x)$, and one gradient step averages the estimates of a minibatch. The
# level of $f$ then changes from one $x$ to the next: its mean is $\mathrm{ELBO}(x)$, which is
# lower for unusual $x$. A single moving average can follow the minibatch's mean level but not
# each point's. NVIL (Mnih & Gregor 2014) learns an input-dependent baseline $b(x)$, a network
# trained to predict $f$. It depends on $x$ and not on $z_k$, so the estimator stays unbiased.
#
# Take a linear encoder $q(z\mid x) = \mathcal N(a x + c, s^2)$, not yet trained
# ($a = 0.2$, $c = 0.3$, $s = 0.9$), and data $x \sim p(x) = \mathcal N(0, 2)$. Here
# $\mathrm{ELBO}(x)$ is a quadratic in $x$, so the features $(1, x, x^2)$ are enough for
# $b(x)$ (NVIL uses a small network). The library trains it in the same backward pass: pass
# `score_function` a tensor baseline that requires grad, and its surrogate gains a term, zero
# in value, whose gradient fits $b$ to $f$ by least squares.

# %%
encoder = {"weight": torch.tensor([0.2], dtype=torch.float64),
           "bias": torch.tensor([0.3], dtype=torch.float64),
           "log_scale": torch.tensor([np.log(0.9)], dtype=torch.float64)}


def encode(params, x):
    loc = params["weight"] * x + params["bias"]  # (B,), or (R, B) for R copies of the encoder
    scale = params["log_scale"].exp().expand_as(loc)
    return Independent(Normal(loc.unsqueeze(-1), scale.unsqueeze(-1)), 1)


def features(x):
    return torch.stack([torch.ones_like(x), x, x * x], -1)


weights = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # b(x) = features(x) @ weights
optimizer = torch.optim.Adam([weights], lr=0.05)
generator = torch.Generator().manual_seed(0)
for step in range(150 if SMOKE else 400):  # the encoder stays fixed; only b(x) learns here
    x = torch.randn(64, generator=generator, dtype=torch.float64) * np.sqrt(2.0)
    estimate = estimator_for(NVIL)(bx.amortised_model(x), encode(encoder, x), 1,
                                   baseline=features(x) @ weights)
    optimizer.zero_grad()
    (-estimate.surrogate.mean()).backward()  # ascend the surrogate
    optimizer.step()

x = torch.sort(torch.randn(64, generator=generator, dtype=torch.float64) * np.sqrt(2.0)).values
ema = EmaBaseline(decay=0.9)
with torch.no_grad():
    for _ in range(30):  # the moving average over minibatches, at this fixed encoder
        q = encode(encoder, x)
        z = q.sample((1,))
        ema.update(bx.amortised_model(x).log_joint(z) - q.log_prob(z))
    q = encode(encoder, x)
    z = q.sample((1,))
    one_signal = (bx.amortised_model(x).log_joint(z) - q.log_prob(z))[0]
    exact_elbo = bx.exact_amortised_elbo(x, **encoder)
    learned = features(x) @ weights
    grid = torch.linspace(x.min().item(), x.max().item(), 200, dtype=torch.float64)
print(f"learned weights of the features (1, x, x²): {weights.detach().numpy().round(3)}")
print(f"RMS distance to the exact ELBO(x) on this minibatch "
      f"{(learned - exact_elbo).pow(2).mean().sqrt().item():.3f} nats;  moving average "
      f"{ema.value.item():.3f}")
bx.draw_learned_baseline(x.numpy(), one_signal.numpy(), grid.numpy(),
                         (features(grid) @ weights).detach().numpy(), ema.value.item(),
                         bx.exact_amortised_elbo(grid, **encoder).numpy())

# %% [markdown]
# The learned $b(x)$ (dashed) lies on the exact $\mathrm{ELBO}(x)$ (black) to within a few tenths
# of a nat or better, and the single signals (grey) scatter around it. The moving average is one
# horizontal line, right for the typical $x$ and off by several nats at the edges. Now measure the
# variance of the encoder's minibatch gradient ($K = 1$ per point, 64 points) with each baseline,
# beside the exact gradient. `probe_options` hands NVIL's baseline over detached, so that
# measuring does not train it.

# %%
exact_encoder = {name: value.clone().requires_grad_(True) for name, value in encoder.items()}
exact_minibatch = torch.autograd.grad(bx.exact_amortised_elbo(x, **exact_encoder).mean(),
                                      list(exact_encoder.values()))
exact_minibatch = dict(zip(encoder, exact_minibatch))


def amortised_build(lam, theta):
    return bx.amortised_model(x), encode(lam, x)


R = 1000 if SMOKE else 10_000
ema_at_x = EmaBaseline(decay=0.9)
ema_at_x.value = ema.value.clone()
settings = {
    "no baseline": (ESTIMATORS["score_function"], {}),
    "moving average": (ESTIMATORS["score_function_ema"], {"state": ema_at_x}),
    "NVIL's learned b(x)": (estimator_for(NVIL),
                            probe_options(NVIL, x, baseline=lambda x: features(x) @ weights)),
    "exact ELBO(x) as b(x)": (ESTIMATORS["score_function"], {"baseline": exact_elbo}),
}
print(f"encoder gradient (a, c, log s) of the minibatch mean, R = {R} estimates")
torch.manual_seed(5)
for label, (estimator, options) in settings.items():
    grads = replicate_gradients(batch_mean(estimator), amortised_build, encoder,
                                num_replicates=R, num_samples=1, **options)
    flat = torch.cat([grads.lambda_[n] for n in encoder], -1)
    s = gradient_statistics(flat, torch.cat([exact_minibatch[n] for n in encoder]))
    print(f"  {label:22s} total variance {s.total_variance.item():8.3f} ± "
          f"{s.total_variance_se.item():.3f};  largest |z| of the mean "
          f"{s.z.abs().max().item():.1f}")

# %% [markdown]
# All four are unbiased: the largest $|z|$ of the mean over the three parameters is within the
# range chance allows (about 3). The moving average halves the variance of no baseline, because it
# takes out the minibatch's average level. NVIL's $b(x)$ removes a third to a half of what is
# left, because it takes out each point's own level, and it does about as well as the exact
# ELBO$(x)$ used as $b(x)$. (The exact ELBO$(x)$ is the best $b(x)$ in the least-squares sense, not the one of least
# variance, for the reason $b^*$ differs from the ELBO above.) In the full method the encoder and
# $b(x)$ learn together, and NVIL also centres and scales the signal by running averages. The
# input-dependent part is the one that matters most. The studies `gmm-vae` and `mnist-vae` train
# VAEs with `score_function+nvil`, a small network as $b(x)$.
#
# ## Try this
#
# - Set `OFFSET, SCALE = 0.5, 1.0` (q as wide as the posterior and closer to it) and rerun:
#   the baselines now cut $K$ times the variance from 20.4 to 6.0, and $b^*$ equals the ELBO,
#   so the dashed and dash-dotted lines merge. At the posterior itself $f$ is the constant
#   $\log p(x)$, and every baseline that tracks it has variance zero:
#   `bx.exact_variances(bx.signal_moments(0.0, 1.0), [4])` shows 12.2 for `score_function` and 0
#   to rounding for the rest.
# - Raise `K` in the unbiasedness cell to 32: the wrong estimator's bias, $g/K$, shrinks, but
#   its $z$ stays large at $R = 50{,}000$. A bias that shrinks with $K$ is still a bias.
# - Give $b(x)$ only a constant: return `torch.stack([torch.ones_like(x)], -1)` from `features`
#   and start from `weights = torch.zeros(1, ...)`. NVIL's variance rises most of the way back
#   to the moving average's, so the gain came from the dependence on $x$.
