"""Baselines (control variates) for the score-function estimator of seed section 5.1.

A baseline b_k is subtracted from the learning signal f(z_k) = log p(x, z_k) - log q(z_k) before it
multiplies the score grad log q(z_k). The estimator stays unbiased exactly when b_k is independent
of z_k: it may depend on the past (moving average), on the other samples (leave-one-out) or on the
input x (a learned baseline), never on z_k itself.
"""

from __future__ import annotations

import torch

__all__ = ["EmaBaseline", "leave_one_out", "optimal_constant", "per_sample_score_norms"]


class EmaBaseline:
    """An exponential moving average of the learning signal, kept by the caller across steps.

    With:        b = decay * b + (1 - decay) * mean(f) after each step; the current step uses the
                 value from the steps before it, so b is independent of the current samples.
    References:  Mnih & Gregor 2014 (NVIL, the running-average part); Williams 1992.

    ``value`` is shared across batch entries, which also suits amortised models whose batch
    changes from one minibatch to the next; before the first update it is None (b = 0).
    ``batch_dims`` keeps one average per entry of the first that many batch dimensions: with 1,
    a batch (R, B) of R training runs of B data points each has R averages of shape (R, 1), one
    per run, each the mean over its own samples and points only. After the first update the
    value is changed in place, so that a CUDA graph that captured the update replays it.
    """

    def __init__(self, decay: float = 0.9, batch_dims: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EmaBaseline: decay must lie in [0, 1), got {decay}")
        if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
            raise ValueError(f"EmaBaseline: batch_dims must be an int >= 0, got {batch_dims!r}")
        self.decay, self.batch_dims = decay, batch_dims
        self.value: torch.Tensor | None = None

    def current(self, like: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            return torch.zeros((), dtype=like.dtype, device=like.device)
        return self.value.to(dtype=like.dtype, device=like.device)

    def update(self, signal: torch.Tensor) -> None:
        """Move b towards the mean of ``signal`` (S, *batch) over all but the kept dimensions."""
        signal = signal.detach()
        kept = 1 + self.batch_dims
        if signal.dim() < kept:
            raise ValueError(f"EmaBaseline: batch_dims={self.batch_dims} needs a signal of "
                             f"shape (S, *batch) with at least {self.batch_dims} batch "
                             f"dimensions, got {tuple(signal.shape)}")
        if self.batch_dims == 0:
            mean = signal.mean()
        else:  # mean over the samples and the trailing batch dimensions; (kept..., 1, ..., 1)
            mean = signal.mean(0).mean(tuple(range(self.batch_dims, signal.dim() - 1)),
                                       keepdim=True) if signal.dim() > kept else signal.mean(0)
        if self.value is None or self.value.shape != mean.shape:
            self.value = mean
        else:
            self.value.copy_(self.decay * self.value + (1 - self.decay) * mean)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "batch_dims": self.batch_dims, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.value = state["decay"], state["value"]
        self.batch_dims = state.get("batch_dims", 0)


def leave_one_out(signal: torch.Tensor) -> torch.Tensor:
    """b_k = mean of the other samples' signals (Kool et al. 2019). ``signal``: (S, *batch)."""
    num_samples = signal.shape[0]
    return (signal.sum(0, keepdim=True) - signal) / (num_samples - 1)


def per_sample_score_norms(log_q: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """||grad_lambda log q(z_k)||^2 for each sample k and batch entry, shape (S, *batch).

    One batched backward pass (``is_grads_batched``) gives the S per-sample scores with respect
    to the tensors ``params`` that q was built from. A parameter whose leading dimensions match
    the batch, or broadcast to it (size 1 where the batch is larger: shared along that dimension
    only), contributes per batch entry and is broadcast along its size-1 dimensions; any other is
    summed whole and broadcast. So a scale_tril of shape (R, 1, D, D) under a batch (R, B) counts
    per replicate r, and replicates stay independent.
    """
    num_samples, batch_shape = log_q.shape[0], log_q.shape[1:]
    eye = torch.eye(num_samples, dtype=log_q.dtype, device=log_q.device)
    grad_outputs = eye.reshape(num_samples, num_samples, *([1] * len(batch_shape)))
    grad_outputs = grad_outputs.expand(num_samples, *log_q.shape)
    grads = torch.autograd.grad(
        log_q, params, grad_outputs=grad_outputs, is_grads_batched=True,
        retain_graph=True, allow_unused=True,
    )
    leading = 1 + len(batch_shape)  # the sample dimension, then the batch
    total = log_q.new_zeros(log_q.shape)
    for grad in grads:
        if grad is None:
            continue
        squared = grad.detach().pow(2)
        head = squared.shape[1:leading]
        if len(head) == len(batch_shape) and all(h in (1, b) for h, b in zip(head, batch_shape)):
            # One parameter per batch entry, or per entry of the dimensions that are not 1.
            total = total + squared.reshape(*squared.shape[:leading], -1).sum(-1)
        else:  # shared by every batch entry
            total = total + squared.reshape(num_samples, -1).sum(-1).reshape(
                num_samples, *[1] * len(batch_shape))
    return total


def optimal_constant(signal: torch.Tensor, score_norms: torch.Tensor) -> torch.Tensor:
    """The variance-minimising constant baseline, estimated without the sample it is used for.

    Approximates:  b* = E[f ||s||^2] / E[||s||^2], the constant that minimises the total variance
                   (trace of the covariance) of (f - b) s, s = grad_lambda log q(z).
    With:          b_k = sum_{j != k} f_j ||s_j||^2 / sum_{j != k} ||s_j||^2, so that b_k is
                   independent of z_k and the estimator stays unbiased.
    References:    Mohamed, Rosca, Figurnov & Mnih 2020, section 7.4.
    """
    weighted = signal * score_norms
    numerator = weighted.sum(0, keepdim=True) - weighted
    denominator = score_norms.sum(0, keepdim=True) - score_norms
    # Where every other score vanishes the baseline cannot matter: fall back to leave-one-out.
    safe = denominator > torch.finfo(signal.dtype).tiny
    return torch.where(safe, numerator / denominator.clamp_min(torch.finfo(signal.dtype).tiny),
                       leave_one_out(signal))
