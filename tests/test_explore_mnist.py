"""Tutorial 9's single-bit numbers against brute-force enumeration and independent quadrature."""

import itertools
import math

import numpy as np
import torch
from scipy import integrate
from torch.distributions import Bernoulli

from experiments import seed_ideas
from experiments.explore import mnist


def _patterns(copies, flip):
    """Every x in {0, 1}^D with its probability, by enumerating the bit and the flips."""
    probability = {}
    for bit in (0, 1):
        for flips in itertools.product((0, 1), repeat=copies):
            x = tuple((bit + f) % 2 for f in flips)
            weight = 0.5 * math.prod(flip if f else 1 - flip for f in flips)
            probability[x] = probability.get(x, 0.0) + weight
    return probability


def test_count_probabilities_and_entropy_by_enumeration():
    for copies, flip in ((1, 0.1), (3, 0.1), (5, 0.3)):
        patterns = _patterns(copies, flip)
        by_count = np.zeros(copies + 1)
        for x, p in patterns.items():
            by_count[sum(x)] += p
        np.testing.assert_allclose(mnist.count_probabilities(copies, flip), by_count, rtol=1e-12)
        entropy = -sum(p * math.log(p) for p in patterns.values())
        assert abs(mnist.data_entropy(copies, flip) - entropy) < 1e-12
        assert abs(mnist.data_entropy(copies, flip) - seed_ideas.data_entropy(copies, flip)) < 1e-12


def test_the_shared_decoder_scores_a_pattern_by_its_count_of_ones():
    model = mnist.BitModel([2, 4], seed=3)
    z = torch.tensor([-0.7, 1.3], dtype=torch.float64)
    points = z.reshape(2, 1, 1, 1).expand(2, 2, 5, 1)  # (S, len(copies), Dmax + 1, 1)
    ours = model.log_likelihood(points)
    for i, copies in enumerate((2, 4)):
        for m in range(copies + 1):
            x = torch.tensor([1.0] * m + [0.0] * (copies - m), dtype=torch.float64)
            logits = model.logit(points)[:, i, m]
            direct = Bernoulli(logits=logits[:, None]).log_prob(x).sum(-1)
            torch.testing.assert_close(ours[:, i, m], direct)


def test_exact_scores_match_independent_quadrature():
    model = mnist.BitModel([1, 3], seed=5)
    expected = mnist._expect_over_q(model.log_likelihood, model)
    evidence = mnist._log_evidence(model)
    loc, scale = model.loc.detach(), model.log_scale.exp().detach()
    for i, m in ((0, 1), (1, 0), (1, 3)):
        def log_likelihood(z):
            point = torch.full((1, 2, 4, 1), z, dtype=torch.float64)
            with torch.no_grad():
                return model.log_likelihood(point)[0, i, m].item()

        mu, sigma = loc[i, m].item(), scale[i, m].item()
        value, _ = integrate.quad(lambda z: math.exp(-0.5 * ((z - mu) / sigma) ** 2)
                                  / (sigma * math.sqrt(2 * math.pi)) * log_likelihood(z),
                                  -np.inf, np.inf, epsabs=1e-12, epsrel=1e-11)
        assert abs(expected[i, m] - value) < 1e-8
        marginal, _ = integrate.quad(lambda z: math.exp(-0.5 * z * z + log_likelihood(z))
                                     / math.sqrt(2 * math.pi), -np.inf, np.inf,
                                     epsabs=1e-14, epsrel=1e-11)
        assert abs(evidence[i, m] - math.log(marginal)) < 1e-8


def test_a_briefly_trained_bit_vae_obeys_elbo_below_log_evidence_below_minus_entropy():
    result = mnist.train_single_bit(steps=20, copies=(1, 6))
    for elbo, evidence, entropy, kl in zip(result["elbo"], result["log_evidence"],
                                           result["entropy"], result["kl"]):
        assert elbo <= evidence + 1e-10  # the ELBO is a lower bound (seed eq. 3)
        assert evidence <= -entropy + 1e-10  # Gibbs: no model beats the data's entropy
        assert kl >= 0
    assert result["no_latent"] == [math.log(2), 6 * math.log(2)]
