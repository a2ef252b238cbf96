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
# # 9. A VAE on MNIST
#
# *Seed, sections 4, 5 and 7.* {download}`Download this tutorial as a notebook <../_generated/notebooks/09-mnist-vae.ipynb>`.
#
# Everything so far had one latent variable and a model we wrote by hand. Section 4 of the seed
# replaces both by neural networks: an *encoder* $\phi_\lambda$ that maps an image $x$ to the
# parameters of $q_\lambda(z\mid x)$, and a *decoder* $\psi_\theta$ that maps a latent $z$ to the
# parameters of $p_\theta(x\mid z)$. Section 5 writes the objective in the form a VAE is trained
# with, seed eq. (6):
#
# $$\max_{\theta}\; \mathbb E_{x\sim p}\Big[\mathbb E_{z\sim q}\big[\log p_\theta(x\mid z)\big]
#   - \min_\lambda D_{KL}\big(q_\lambda(z\mid x)\,\|\,p_\theta(z)\big)\Big],$$
#
# a reconstruction term, estimated with one reparameterized draw of $z$ (section 5.2), and a KL
# to the prior $\mathcal N(0, I)$ that is a closed form (section 6). This page trains a small
# VAE on MNIST on the CPU, watches the variance of two gradient estimators as it trains, checks
# the seed's remark that a linear autoencoder is PCA, and ends with section 7's warning, a
# latent variable the model does not use.

# %%
import math
import os

import numpy as np
import torch
from scipy import linalg
from torch.distributions import Independent, Normal, kl_divergence

from estimators import ESTIMATORS
from estimators.diagnostics import diagnose
from experiments.explore import interact
from experiments.explore import mnist as explore_mnist
from experiments.mnist import evaluate
from experiments.mnist.data import load_mnist
from experiments.mnist.models import VAE, Architecture

SMOKE = "CI" in os.environ  # the test suite and the docs build run a smaller version
# Small networks: one thread does the work without waiting on a second, busy core.
torch.set_num_threads(1)

images, _ = load_mnist(None, "train")  # uint8 (60000, 28, 28), from ../shared/data/mnist or $MNIST_DIR
test_images, _ = load_mnist(None, "test")
train_pixels = images.reshape(len(images), -1).float() / 255  # grey levels in [0, 1]
if SMOKE:
    train_pixels = train_pixels[:300]
generator = torch.Generator().manual_seed(0)
# Binary pixels, as the Bernoulli decoder models them: each grey level is a probability. The
# training images get a fresh draw every minibatch ("dynamic binarization"); the test images one.
test_x = torch.bernoulli(test_images[:1000].reshape(1000, -1).float() / 255, generator=generator)
print(f"{len(train_pixels)} training images, {len(test_x)} test images of {test_x.shape[1]} pixels")

# %% [markdown]
# ## Training with seed eq. (6)
#
# The network is the project's `experiments.mnist.models.VAE`: a 784–200–(2 × 20) tanh encoder
# giving the mean and scale of a diagonal Gaussian $q(z\mid x)$ over 20 latents, and a mirror
# decoder giving 784 Bernoulli logits. `vae.bind(x)` is the model $p_\theta(x, z)$ for a
# minibatch, with a `prior` and a `log_likelihood`, which is all `pathwise_analytic_kl` (eq. 6)
# needs. One step of training is four lines.
#
# Every few hundred steps we stop and measure. The test ELBO on 1,000 test images, and the
# variance of the gradient with respect to $\lambda$ as two estimators see it: `pathwise_analytic_kl`
# and the score-function estimator of section 5.1, `score_function`. The $\lambda$ here are the
# parameters of $q(z\mid x)$ for 32 fixed test images, the encoder's outputs $(\mu, \sigma)$:
# `diagnose` gives each of $R$ replicates its own copy of them and draws $R$ independent
# one-sample gradients in one backward pass.

# %%
vae = VAE(Architecture(hidden=(200,), latent=20, activation="tanh"))
optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
estimator = ESTIMATORS["pathwise_analytic_kl"]
steps, batch_size = (30, 50) if SMOKE else (1000, 100)
probe_every, replicates = (15, 20) if SMOKE else (200, 100)
probe = test_x[:32]


def gradient_variance(name):
    """Total variance per image of R one-sample gradients in q's parameters, ± its s.e."""
    with torch.no_grad():
        q = vae.posterior(probe)
    start = {"loc": q.base_dist.loc, "scale": q.base_dist.scale}

    def build(lam, theta):  # lam["loc"]: (R, 32, 20), one copy per replicate
        return vae.bind(probe), Independent(Normal(lam["loc"], lam["scale"]), 1)

    with torch.random.fork_rng():  # the probe's draws leave training's random stream alone
        torch.manual_seed(1)
        report = diagnose(ESTIMATORS[name], build, start,
                          num_replicates=replicates, num_samples=1)
    total = sum(s.total_variance.item() for s in report["lambda"].values())
    error = math.sqrt(sum(s.total_variance_se.item() ** 2 for s in report["lambda"].values()))
    return total / len(probe), error / len(probe)


names = ("pathwise_analytic_kl", "score_function")
history = {"step": [], "test_elbo": [], "variance": {name: [] for name in names}}
torch.manual_seed(0)
print(f"{'step':>5s} {'test ELBO':>10s}  variance per image, mean of {replicates}: "
      + "   ".join(names))
for step in range(steps + 1):
    if step % probe_every == 0:
        history["step"].append(step)
        history["test_elbo"].append(evaluate.test_elbo(vae, test_x))
        for name in names:
            history["variance"][name].append(gradient_variance(name))
        print(f"{step:5d} {history['test_elbo'][-1]:10.2f}  " + "   ".join(
            f"{history['variance'][name][-1][0]:9.3g} ± {history['variance'][name][-1][1]:.1g}"
            for name in names))
    if step == steps:
        break
    rows = torch.randint(0, len(train_pixels), (batch_size,), generator=generator)
    x = torch.bernoulli(train_pixels[rows], generator=generator)
    loss = -estimator(vae.bind(x), vae.posterior(x), num_samples=1).surrogate.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

# %%
explore_mnist.draw_training(history)

# %% [markdown]
# At full size the test ELBO climbs from about −550 nats per image (an untrained decoder) to
# about −128 in 1,000 steps, well under a minute of one CPU core. (A well-trained VAE of this size
# reaches about −100; this one has seen each training image less than twice.) The variances
# differ by four orders of magnitude all along: about a thousand for the pathwise estimator,
# around $10^7$ for the score function. That is section 5.1's "empirically the variance of this estimator is
# very high", measured: to match one pathwise step, the score function would need about
# $10^4$ times as many samples. (The gradient with respect to $\theta$, the decoder, is the same
# for both: $\nabla_\theta$ passes inside the expectation, section 5, and neither estimator
# needs a trick there.)
#
# The pathwise variance *grows* with training, from about 25 at the untrained start to about a
# thousand within the first 200 steps: the encoder becomes confident (small $\sigma$) and the
# decoder sharp, so the reconstruction term changes faster with $z$.
#
# ## What the model has learnt
#
# Section 7: "all we need to do is sample from ... the isotropic Gaussian and pass it into the
# decoder". The rows below are test images, their reconstructions (the decoder's pixel
# probabilities at the mean of $q(z\mid x)$), and decoder outputs for $z\sim\mathcal N(0, I)$.
# The model is small and briefly trained, so its samples are blurry digits at best. The same
# network trained to $10^7$ images ships with the project: its samples, interpolations and latent
# arithmetic are on the [MNIST study's page](../studies/mnist-vae.md), and its test bound beside
# Kingma & Welling's on the [paper programme's page](../mnist/paper.md).

# %%
with torch.no_grad():
    reconstructions = torch.sigmoid(vae.decoder(vae.posterior(test_x[:10]).mean))
    samples = torch.sigmoid(vae.decoder(torch.randn(10, 20, generator=generator)))
explore_mnist.draw_images({"test images (binarized)": test_x[:10],
                           "reconstructions: p(x | z = mean of q(z | x))": reconstructions,
                           "samples: p(x | z), z ~ N(0, I)": samples})

# %% [markdown]
# Which of the 20 latents does the model use? The KL term of eq. (6) splits over the latents,
# $D_{KL}(q(z\mid x)\,\|\,p(z)) = \sum_d D_{KL}(q(z_d\mid x)\,\|\,\mathcal N(0,1))$; a latent
# whose KL is near zero for every $x$ carries no information about $x$.

# %%
with torch.no_grad():
    q = vae.posterior(test_x)
    kl_per_latent = kl_divergence(q.base_dist, Normal(0.0, 1.0)).mean(0)  # (20,)
print("mean KL per latent (nats), largest first:", np.sort(kl_per_latent.numpy())[::-1].round(2))
print(f"total KL {kl_per_latent.sum():.1f} nats; active units (Burda et al.'s test, "
      f"Cov_x E[z_d | x] > 0.01): {evaluate.active_units(vae, test_x)} of 20")

# %% [markdown]
# After this short training every latent is still in use, each with a KL between about 0.4 and
# 1.75 nats at full size. Longer training usually switches some of them off (Burda et al. 2016
# found about half of 50 unused); the cleanest case of a latent the model chooses to ignore is
# section 7's single bit, at the end of this page.
#
# ## A linear autoencoder is PCA
#
# Section 4: "shallow (i.e. one hidden, linear layer) autoencoder architectures are basically
# inefficient implementations of PCA". Train one, $x \mapsto W_2(W_1 x + b_1) + b_2$ with a
# bottleneck of $k = 4$, by squared error with the same Adam, and compare it with the top four
# principal components, from numpy's SVD of the centred data.

# %%
rank, count, ae_steps = 4, (300 if SMOKE else 1000), (60 if SMOKE else 1000)
data = test_images[:count].reshape(count, -1).float() / 255
centred = data.double().numpy() - data.double().numpy().mean(0)
_, singular_values, right_vectors = np.linalg.svd(centred, full_matrices=False)
eigenvalues = singular_values ** 2 / count  # of the data's covariance matrix
directions = right_vectors[:rank].T  # the top principal components, (784, rank)
pca_error = eigenvalues[rank:].sum()  # the squared error per image of the best rank-4 map
torch.manual_seed(0)
linear = torch.nn.Sequential(torch.nn.Linear(784, rank), torch.nn.Linear(rank, 784))
ae_optimizer = torch.optim.Adam(linear.parameters(), lr=0.01)
for step in range(ae_steps):
    error = (linear(data) - data).pow(2).sum(-1).mean()
    ae_optimizer.zero_grad()
    error.backward()
    ae_optimizer.step()
angles = np.degrees(linalg.subspace_angles(linear[1].weight.detach().double().numpy(),
                                           directions))
print(f"squared error per image: linear autoencoder {error.item():.3f}, PCA (k = {rank}) "
      f"{pca_error:.3f}, {100 * (error.item() / pca_error - 1):.1f} % above")
print("principal angles between the decoder's columns and the top 4 components (degrees):",
      np.sort(angles).round(1))
print("eigenvalues of the data's covariance, 1st to 6th:", eigenvalues[:6].round(2))

# %% [markdown]
# At full size the autoencoder's error is within 0.1 % of PCA's, the best any rank-4 linear map
# can do (Eckart–Young), and three of its four directions lie within a degree of the principal
# subspace. The fourth is still turning, about 15° off: the 4th and 5th eigenvalues (2.55 and
# 2.33) are within 10 % of each other, so the error hardly distinguishes
# a subspace that uses one from one that uses the other, and gradient steps rotate between them
# slowly. That is the "inefficient" in the seed's sentence: the SVD gives the answer directly.
# (The smoke run trains too briefly to get close.)
#
# ## A latent the model ignores: the single bit
#
# Section 7: "it is overkill to use VAEs on simpler datasets, as the model may choose to not
# even utilize the latent variable z" (Shu 2017). Make the data a single fair bit, copied $D$
# times, each copy flipped with probability 0.1. For $D = 1$ the data are a fair coin and need
# no latent at all: a decoder that says "1 with probability ½" gives $\log p(x) = -\ln 2$, the
# best possible. For larger $D$ the copies agree with each other, and a latent that knows the
# bit saves up to $D\ln 2 - H(x)$ nats.
#
# `experiments.explore.mnist` trains a VAE with a 1-D latent for every $D$ at once, with the
# same estimator (`pathwise_analytic_kl`). The copies are exchangeable, so the decoder has one
# output shared by all of them, the encoder has one $(\mu_m, \sigma_m)$ for each count $m$ of
# ones (the posterior depends on $x$ only through $m$), and the expectation over the data is an
# exact sum over $m$. The trained models are then scored exactly, by quadrature over $z$.

# %%
result = explore_mnist.train_single_bit()
print(f"{result['steps']} Adam steps; nats per data point")
print(f"{'D':>3s} {'-ELBO':>8s} {'-log p_theta(x)':>16s} {'H(x)':>8s} {'KL':>7s} "
      f"{'saved':>7s} {'most':>6s}")
for i, copies in enumerate(result["copies"]):
    print(f"{copies:3d} {-result['elbo'][i]:8.4f} {-result['log_evidence'][i]:16.4f} "
          f"{result['entropy'][i]:8.4f} {result['kl'][i]:7.3f} "
          f"{round(result['no_latent'][i] + result['elbo'][i], 3) + 0.0:7.3f} "
          f"{round(result['no_latent'][i] - result['entropy'][i], 3) + 0.0:6.3f}")  # no "-0.000"

# %% [markdown]
# Read the columns left to right: $-\text{ELBO} \ge -\log p_\theta(x) \ge H(x)$ in every row,
# the two gaps being the KL to the posterior (section 3) and the model's misfit (section 1).
# "saved" is what the latent buys over the best model without one ($D \ln 2$), "most" what it
# could buy. At $D = 1$, at full size, the trained VAE has switched its latent off: the KL is a
# few thousandths of a nat, $-\text{ELBO} = 0.693 = \ln 2$, nothing saved because nothing can
# be. (In the smoke run, 150 steps leave about 0.2 nats of KL that buy nothing: the bound is
# flat near zero KL, and the optimizer is slow to give up a latent that costs so little.) From
# $D = 2$ on, the latent is used, and its KL grows only slowly, towards the one bit, $\ln 2 =
# 0.69$ nats, it can know, plus what it learns of the noise.
#
# The slider sets $D$. Left, for every $D$: what the latent could save, what it saves, and what
# it costs. Right, for this $D$: the encoder's $q(z\mid x)$ for each count of ones, from all
# zeros (blue) to all ones (red), over the prior, and the decoder's $p(x_d = 1 \mid z)$. The
# training happens once, for every $D$; each move redraws in about 0.3 s on a 2-core CPU
# (`python -m experiments.benchmark_explore --control single-bit`).

# %%
interact(explore_mnist.SINGLE_BIT, copies=1)

# %% [markdown]
# At $D = 1$ both $q$'s lie on the prior and the decoder is nearly flat: $z$ says nothing
# about $x$. Move to $D = 4$: the $q$'s split by majority, all-zeros far left, all-ones far
# right, ambiguous counts near the middle, and the decoder turns into a step. The latent is
# used exactly when the data make it worth its KL.
#
# ## Try this
#
# - Set `steps, batch_size = (3000, 100)` and rerun the training cell (three times as long):
#   the test ELBO reaches about −113, and the KL per latent *grows* (0.75 to 1.85 nats): at this
#   length the model is still learning to use its latents, not yet dropping any.
# - Set `explore_mnist.BIT_FLIP = 0.3` and rerun the single-bit cell: noisier copies are worth
#   less, "most" shrinks at every $D$ (0.013 nats at $D = 2$, 0.74 at $D = 16$), and the KL the
#   latent is allowed shrinks with it (0.15 nats at $D = 2$, against 0.51 with flips of 0.1).
# - In `gradient_variance`, replace `"score_function"` by `"score_function_loo"` and set
#   `num_samples=2`: a leave-one-out baseline (tutorial 4) takes the score function's variance
#   down by more than two orders of magnitude (from about $7\times10^6$ to $1.5\times10^4$ after
#   3,000 steps), still about twenty times the pathwise estimator's.
