"""VAE networks for MNIST, exposed through the estimator interface of :mod:`estimators.base`.

``vae.bind(x)`` returns a model with ``log_joint``, ``prior`` and ``log_likelihood`` for the
minibatch ``x`` (shape (B, 784)); ``vae.posterior(x)`` returns q(z | x) with batch shape (B,) and
event shape (latent,). Encoder parameters are lambda in the seed, decoder parameters theta.

A group of R runs is the same class with stacked numbers (:func:`experiments.replicated.
stack_modules`): ``group.posterior(x)`` on x of shape (R, B, 784) gives batch shape (R, B), and
``group.bind(x).log_joint(z)`` maps z of shape (S, R, B, latent) to (S, R, B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

from estimators import NormalWithNoise

__all__ = ["Architecture", "ARCHITECTURES", "VAE", "BoundVAE"]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


@dataclass(frozen=True)
class Architecture:
    """Layer widths of encoder and decoder; the decoder mirrors the encoder."""

    hidden: tuple[int, ...]
    latent: int
    activation: str = "tanh"


ARCHITECTURES = {
    # Kingma & Welling 2014: one hidden layer of 500 tanh units (their Figure 2 used 500 for MNIST).
    "kingma-welling": lambda latent=20: Architecture((500,), latent, "tanh"),
    # Burda et al. 2016, one stochastic layer: 784-200-200-50, tanh.
    "iwae": lambda latent=50: Architecture((200, 200), latent, "tanh"),
    # The PyTorch examples' VAE: 784-400-20, ReLU (the speed benchmark's baseline network).
    "tutorial": lambda latent=20: Architecture((400,), latent, "relu"),
}


def _mlp(sizes, activation):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard Normal prior, Bernoulli or Gaussian decoder p(x|z).

    likelihood="bernoulli": binary pixels, decoder outputs logits.
    likelihood="gaussian": grey levels in [0, 1], decoder outputs a mean and one learned
    log-variance per pixel (the seed's section 6 standard implementation).
    """

    def __init__(self, architecture: Architecture, data_dim: int = 784,
                 likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.architecture, self.data_dim, self.likelihood = architecture, data_dim, likelihood
        hidden, latent, act = architecture.hidden, architecture.latent, architecture.activation
        self.encoder = _mlp((data_dim, *hidden, 2 * latent), act)
        self.decoder = _mlp((latent, *reversed(hidden), data_dim), act)
        if likelihood == "gaussian":
            self.decoder_log_scale = nn.Parameter(torch.zeros(data_dim))
        self.register_buffer("prior_loc", torch.zeros(latent))
        self.register_buffer("prior_scale", torch.ones(latent))

    @property
    def latent_dim(self) -> int:
        return self.architecture.latent

    def encoder_parameters(self):
        """lambda: the parameters of q."""
        return list(self.encoder.parameters())

    def decoder_parameters(self):
        """theta: the parameters of the model."""
        params = list(self.decoder.parameters())
        if self.likelihood == "gaussian":
            params.append(self.decoder_log_scale)
        return params

    @property
    def prior(self):
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def posterior(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """q(z | x); with ``noise``, a q whose one draw is that standard noise
        (:class:`~estimators.NormalWithNoise`)."""
        loc, pre_scale = self.encoder(x).chunk(2, dim=-1)
        # softplus keeps the scale positive without the exp's blow-ups early in training
        scale = nn.functional.softplus(pre_scale) + 1e-6
        return Independent(Normal(loc, scale) if noise is None
                           else NormalWithNoise(loc, scale, noise), 1)

    def observation(self, z: torch.Tensor):
        """p(x | z) as a distribution with event shape (data_dim,)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return Independent(Bernoulli(logits=out, validate_args=False), 1)
        return Independent(Normal(out, self.decoder_log_scale.exp()), 1)

    def bind(self, x: torch.Tensor) -> "BoundVAE":
        return BoundVAE(self, x)


class BoundVAE:
    """The VAE with its minibatch fixed: the ``model`` argument of every estimator."""

    def __init__(self, vae: VAE, x: torch.Tensor):
        self.vae, self.x = vae, x

    @property
    def prior(self):
        return self.vae.prior

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.observation(z).log_prob(self.x)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.prior.log_prob(z) + self.log_likelihood(z)
