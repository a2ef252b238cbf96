"""Baseline helpers of the score-function estimator, against per-sample autograd loops."""

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from estimators.baselines import EmaBaseline, per_sample_score_norms


def _looped_norms(log_q: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """||grad log q(z_k)||^2 per sample k and batch entry, one backward pass per (k, entry)."""
    out = torch.zeros_like(log_q)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in log_q.shape]).reshape(
            -1, log_q.dim()):
        grads = torch.autograd.grad(log_q[tuple(index)], params, retain_graph=True,
                                    allow_unused=True)
        out[tuple(index)] = sum(g.pow(2).sum() for g in grads if g is not None)
    return out


def _shared_scale_posterior(batch_shape):
    """q with a per-entry location and one scalar log-scale shared by every batch entry."""
    generator = torch.Generator().manual_seed(3)
    loc = torch.randn(*batch_shape, 2, generator=generator, dtype=torch.float64,
                      requires_grad=True)
    log_scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    q = Independent(Normal(loc, log_scale.exp().expand(*batch_shape, 2)), 1)
    return q, loc, log_scale


@pytest.mark.parametrize("batch_shape", [(3,), (2, 3)])
@pytest.mark.parametrize("which", ["loc", "log_scale", "both"])
def test_per_sample_score_norms_match_a_loop(batch_shape, which):
    """Per-entry and shared parameters, a scalar shared one included (it used to raise)."""
    q, loc, log_scale = _shared_scale_posterior(batch_shape)
    params = {"loc": [loc], "log_scale": [log_scale], "both": [loc, log_scale]}[which]
    torch.manual_seed(4)
    log_q = q.log_prob(q.sample((4,)))
    norms = per_sample_score_norms(log_q, params)
    per_entry = _looped_norms(log_q, [loc]) if which in ("loc", "both") else 0
    # A shared parameter's score is that of the batch's summed log q, counted for every entry.
    shared = (torch.stack([torch.autograd.grad(row.sum(), log_scale, retain_graph=True)[0]
                           for row in log_q]).pow(2).reshape(4, *[1] * len(batch_shape))
              if which in ("log_scale", "both") else 0)
    expected = torch.zeros_like(norms) + per_entry + shared
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=0)


def test_a_parameter_shared_within_each_replicate_counts_per_replicate():
    """scale_tril of shape (R, 1, D, D) under a batch (R, B): broadcast to, not equal to, the batch.

    Replicate r's entries share scale_tril[r], so each counts ||d/dscale_tril[r] of replicate
    r's summed log q||^2, and no other replicate's; it used to be summed over every replicate,
    which tied the replicates together.
    """
    replicates, batch, dim, num_samples = 3, 4, 2, 5
    generator = torch.Generator().manual_seed(5)
    loc = torch.randn(replicates, batch, dim, generator=generator, dtype=torch.float64,
                      requires_grad=True)
    lower = torch.randn(replicates, 1, dim, dim, generator=generator, dtype=torch.float64)
    lower = lower.tril(-1) + torch.diag_embed(1 + torch.rand(replicates, 1, dim,
                                                             generator=generator,
                                                             dtype=torch.float64))
    scale_tril = lower.requires_grad_(True)
    q = MultivariateNormal(loc, scale_tril=scale_tril)
    assert q.batch_shape == (replicates, batch)
    torch.manual_seed(6)
    log_q = q.log_prob(q.sample((num_samples,)))
    norms = per_sample_score_norms(log_q, [loc, scale_tril])
    # The truth, one replicate at a time: loc per entry (a loop), scale_tril[r] from the gradient
    # of replicate r's own summed log q, counted for each of its entries.
    expected = _looped_norms(log_q, [loc])
    for k in range(num_samples):
        for r in range(replicates):
            (grad,) = torch.autograd.grad(log_q[k, r].sum(), scale_tril, retain_graph=True)
            assert grad[torch.arange(replicates) != r].abs().max() == 0  # r's own block only
            expected[k, r] += grad[r].pow(2).sum()
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=0)


def test_an_ema_per_run_is_each_runs_own_average_and_is_updated_in_place():
    # Three runs (batch (3, 4)): with batch_dims=1 each keeps the average of its own signal, as a
    # solo run's EmaBaseline() does of the same numbers.
    generator = torch.Generator().manual_seed(5)
    signals = [torch.randn(2, 3, 4, generator=generator) for _ in range(3)]
    group = EmaBaseline(0.8, batch_dims=1)
    solos = [EmaBaseline(0.8) for _ in range(3)]
    for step, signal in enumerate(signals):
        group.update(signal)
        for run, solo in enumerate(solos):
            solo.update(signal[:, run])
        if step == 0:
            first = group.value
    assert group.value is first  # in place after the first update: a CUDA graph replays it
    assert group.value.shape == (3, 1)
    for run, solo in enumerate(solos):
        torch.testing.assert_close(group.value[run, 0], solo.value, rtol=1e-15, atol=0)
    pooled = EmaBaseline(0.8)  # the wrong twin: one average over every run
    for signal in signals:
        pooled.update(signal)
    assert not torch.allclose(pooled.value.expand(3), group.value[:, 0])


def test_an_ema_refuses_a_signal_without_the_runs_dimension():
    with pytest.raises(ValueError, match="batch_dims=2 needs a signal of shape"):
        EmaBaseline(batch_dims=2).update(torch.zeros(4, 3))
