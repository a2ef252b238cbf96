"""Every random draw of a training, run by run: what makes run r of a group the solo run of seed s + r.

Each run has its own streams, seeded from its own seed and a purpose (:func:`stream_seed`):
"init" seeds torch before its network is built, "train" draws, in this order, each epoch's
permutation of the training images, then, for each block of steps, the Bernoulli draws of its
minibatches ("dynamic" binarization) and the standard normal noise e of its samples
z = mu + sigma e; "evaluate" draws the noise of each evaluation of the test bound. A run's draws
never depend on the other runs of its group, on the number of ranks, or on whether the step is
captured as a CUDA graph: the noise is drawn outside the step and handed to the estimators
through :class:`~estimators.NormalWithNoise`, so no step draws random numbers itself.

Draws are made a block of steps at a time (:func:`block_steps`; the block depends on the batch
size and the image size only), which keeps the per-step work of R runs to a few copies on the
device. A checkpoint keeps, per run, the generator state at the start of the epoch and of the
block, so a resumed run redraws exactly what it would have drawn.
"""

from __future__ import annotations

import torch

from ..replicated import RunGenerators, stream_seed
from .data import DeviceDataset

__all__ = ["stream_seed", "block_steps", "RunStreams", "evaluation_generators"]

BLOCK_ELEMENTS = 2 ** 22  # images' pixels drawn per run and block, at most (16 MB in float32)
MAX_BLOCK_STEPS = 100


def block_steps(batch_size: int, pixels: int) -> int:
    """Steps whose draws are made at once: as many as fit BLOCK_ELEMENTS pixels, 1 to 100."""
    return max(1, min(MAX_BLOCK_STEPS, BLOCK_ELEMENTS // (batch_size * pixels)))


def evaluation_generators(seeds, device) -> RunGenerators:
    """Fresh generators of the runs' "evaluate" streams: each evaluation draws the same noise."""
    return RunGenerators([stream_seed(s, "evaluate") for s in seeds], device)


class RunStreams:
    """The minibatches and the noise of R runs' training steps, each run from its "train" stream.

    ``draws(step)`` gives the images x (R, B, pixels) and the noise (K, R, B, latent) of the
    0-based step ``step``; steps are taken in order, or from a state restored with
    :meth:`restore`.
    """

    def __init__(self, data: DeviceDataset, seeds, batch_size: int, num_samples: int,
                 latent: int):
        self.data, self.seeds = data, list(seeds)
        self.generators = RunGenerators([stream_seed(s, "train") for s in self.seeds],
                                        data.device)
        self.batch_size, self.num_samples, self.latent = batch_size, num_samples, latent
        self.steps_per_epoch = len(data) // batch_size
        self.block = block_steps(batch_size, data.data.shape[1])
        self._epoch = self._block = None
        self._epoch_state = self._block_state = None
        self._order = self._images = self._noise = None

    def _locate(self, step: int) -> tuple[int, int, int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        return epoch, index, index // self.block

    def _start_epoch(self, epoch: int) -> None:
        self._epoch_state = self.generators.get_state()
        self._order = self.generators.permutation(len(self.data))
        self._epoch, self._block = epoch, None

    def _draw_block(self, block: int) -> None:
        self._block_state = self.generators.get_state()
        first = block * self.block
        steps = min(self.block, self.steps_per_epoch - first)
        size, dtype = self.batch_size, self.data.dtype
        chosen = self._order[:, first * size:(first + steps) * size]  # (R, steps * B)
        values = self.data.data[chosen].reshape(len(self.seeds), steps, size, -1).transpose(0, 1)
        if self.data.binarization == "dynamic":
            uniform = self.generators.uniform((steps, size, values.shape[-1]), dtype, dim=1)
            values = (uniform < values).to(dtype)
        self._images = values.contiguous()  # (steps, R, B, pixels)
        self._noise = self.generators.normal(
            (steps, self.num_samples, size, self.latent), dtype, dim=2)  # (steps, K, R, B, D)
        self._block = block

    def draws(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index, block = self._locate(step)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        if block != self._block:
            self._draw_block(block)
        within = index - block * self.block
        return self._images[within], self._noise[within]

    def state(self, step: int) -> dict:
        """What :meth:`restore` needs to go on at ``step``, the next step to take."""
        epoch, _, block = self._locate(step)
        if epoch != self._epoch:  # the next epoch starts from the generators as they are
            return {"epoch": self.generators.get_state(), "block": None}
        if block != self._block:  # the next block does
            return {"epoch": self._epoch_state, "block": self.generators.get_state()}
        return {"epoch": self._epoch_state, "block": self._block_state}

    def restore(self, state: dict, step: int) -> None:
        epoch, index, block = self._locate(step)
        self.generators.set_state(state["epoch"])
        self._start_epoch(epoch)
        if state["block"] is None:
            if index:
                raise ValueError(f"a stream state without a block cannot resume mid-epoch "
                                 f"(step {step})")
            return
        self.generators.set_state(state["block"])
        self._draw_block(block)
