"""How long a training runs and at what learning rate: the steps and the schedules.

"constant" keeps Adam's rate; "iwae" is Burda et al. 2016's (section 5): 3^i passes over the
training set at ``learning_rate * 10^(-i/7)``, i = 0..7, 3280 passes in all.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "IWAE_STAGES", "IWAE_PASSES", "iwae_schedule", "total_steps",
           "learning_rate_at"]

SCHEDULES = ("constant", "iwae")
IWAE_STAGES = 8


def iwae_schedule(base: float = 1e-3) -> list[tuple[int, float]]:
    """(passes, learning rate) of each stage: 3^i passes at base * 10^(-i/7), i = 0..7."""
    return [(3 ** i, base * 10 ** (-i / 7)) for i in range(IWAE_STAGES)]


IWAE_PASSES = sum(passes for passes, _ in iwae_schedule())  # 3280: the whole schedule


def total_steps(config, num_train_images: int) -> int:
    """The steps a training of ``config`` takes on ``num_train_images`` images: every whole
    minibatch of each epoch (an epoch drops its last partial one) for ``epochs`` passes, at most
    the iwae schedule's, or ceil(max_examples / batch_size) steps if that is fewer (the last
    minibatch is whole)."""
    epochs = config.epochs
    if config.schedule == "iwae":  # the schedule ends after its passes
        epochs = min(epochs, IWAE_PASSES)
    steps = epochs * (num_train_images // config.batch_size)
    if config.max_examples:
        steps = min(steps, math.ceil(config.max_examples / config.batch_size))
    return steps


def learning_rate_at(config, epoch: int) -> float:
    """The learning rate of the (0-based) epoch."""
    if config.schedule == "constant":
        return config.learning_rate
    end = 0
    for passes, rate in iwae_schedule(config.learning_rate):
        end += passes
        if epoch < end:
            return rate
    return iwae_schedule(config.learning_rate)[-1][1]
