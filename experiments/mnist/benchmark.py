"""Epoch time of the project's trainer against a plain tutorial-style training loop.

Both train the same network, the PyTorch examples' VAE (784-400-20, ReLU; "tutorial" in
:data:`models.ARCHITECTURES`), with Adam (learning rate 1e-3), minibatches of 128, grey pixels as
targets of a Bernoulli cross-entropy, the analytic KL and one reparameterized sample per image,
in float32, on the same device in the same run:

- the trainer (:func:`experiments.mnist.train.train`, estimator "pathwise_analytic_kl"): the
  whole set on the device, minibatches drawn there, no host work between evaluations (its
  ``wall_seconds`` excludes the one evaluation per epoch);
- the tutorial loop: a :class:`torch.utils.data.DataLoader` over a host
  :class:`~torch.utils.data.TensorDataset`, each minibatch copied to the device, the network and
  loss written the way the PyTorch examples write them, the loss read back every step.

Each side is timed twice, in the order tutorial, trainer, trainer, tutorial, and the two times
averaged. Before its timed epochs the tutorial loop runs a few untimed steps (allocations, kernel
choice); the trainer runs one untimed epoch, which holds its one-off work: with ``--compile``
compiling the objective and Adam, with ``--capture`` (each step as one CUDA graph,
``TrainConfig.capture``) the three eager warm-up steps and the capture. That first epoch's time is
printed too. The ratio is tutorial time over trainer time: above 1, the trainer is faster. No
timing is asserted anywhere; the numbers depend on the machine, which is printed with them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..common import (_device_name, check_output_file, check_threads, metadata, save_results,
                      torch_threads)
from .data import DeviceDataset, MnistError, load_mnist
from .train import TrainConfig, _Parser, _resolve_device, train

__all__ = ["TutorialVAE", "tutorial_epochs", "trainer_epochs", "main"]

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WARMUP_STEPS = 5  # untimed steps of the tutorial loop


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark run was asked for (saved with its numbers by ``--out``)."""

    device: str
    epochs: int
    train_size: int
    compile: bool
    capture: bool
    threads: int = 1
    seed: int = 0


class TutorialVAE(nn.Module):
    """784-400-20 ReLU, written the PyTorch examples' way: log-variance head, sigmoid output."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x):
        hidden = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(hidden), self.fc22(hidden)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def _tutorial_loss(recon, x, mu, logvar):
    cross_entropy = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return cross_entropy + kl


def _synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tutorial_epochs(images: torch.Tensor, device: torch.device, epochs: int,
                    seed: int = 0) -> float:
    """Seconds per epoch of the tutorial loop on grey ``images`` (N, 784) held on the host."""
    torch.manual_seed(seed)
    model = TutorialVAE().to(device=device, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    loader = DataLoader(TensorDataset(images), batch_size=BATCH_SIZE, shuffle=True, **extra)

    def epoch(limit=None):
        model.train()
        total = 0.0
        for i, (x,) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            x = x.to(device)
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            loss = _tutorial_loss(recon, x, mu, logvar)
            loss.backward()
            total += loss.item()
            optimizer.step()
        return total

    epoch(limit=WARMUP_STEPS)
    _synchronise(device)
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    _synchronise(device)
    return (time.perf_counter() - start) / epochs


def trainer_epochs(images_uint8: torch.Tensor, device: torch.device, epochs: int,
                   seed: int = 0, compile: bool = False,
                   capture: bool = False) -> tuple[float, float, str]:
    """(seconds per epoch, seconds of the untimed first epoch, the mode the steps ran in).

    :func:`experiments.mnist.train.train` for ``epochs + 1`` epochs, evaluated after each
    (evaluations are not timed); the first epoch holds the one-off work (compiling, the warm-up
    steps and the capture) and is left out.
    """
    data = DeviceDataset(images_uint8, "grey", device, torch.float32, seed)
    test_images = data.evaluation_images()[:100]
    config = TrainConfig(architecture="tutorial", latent=20, estimator="pathwise_analytic_kl",
                         batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, epochs=epochs + 1,
                         binarization="grey", seed=seed, device=str(device), dtype="float32",
                         eval_size=100, compile=compile, capture=capture)
    result = train(config, train_data=data, test_images=test_images)
    wall = result.history["wall_seconds"]
    return (wall[-1] - wall[0]) / epochs, wall[0], result.mode


def main(argv=None) -> dict:
    parser = _Parser(prog="python -m experiments.mnist.benchmark",
                     description="Epoch time of the project's MNIST trainer against a plain "
                                 "DataLoader loop (784-400-20 VAE, batch 128, Adam).")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs of each (default 1)")
    parser.add_argument("--train-size", type=int, default=0,
                        help="the first N training images (default 0: all 60,000)")
    parser.add_argument("--data-dir", default="",
                        help="folder of the MNIST files (default: $MNIST_DIR or the usual places)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trainer's objective and Adam (CUDA only; its untimed "
                             "first epoch absorbs the compiling)")
    parser.add_argument("--capture", action="store_true",
                        help="run each of the trainer's steps as one CUDA graph (CUDA only)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the numbers, the command and the versions here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of both sides (default 1; 0: torch's default)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.train_size < 0 or args.threads < 0:
        raise SystemExit("error: --epochs must be >= 1, --train-size and --threads >= 0")
    try:
        check_threads(args.threads)
        if args.out is not None:  # before the minutes of timing, not after them
            check_output_file(args.out)
        device = _resolve_device(args.device, world=1, who="the benchmark")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        images, _ = load_mnist(args.data_dir or None, "train")
    except MnistError as error:
        raise SystemExit(f"error: {error}") from None
    if args.train_size:
        images = images[:args.train_size]
    if len(images) < BATCH_SIZE:
        raise SystemExit(f"error: --train-size must be at least the batch size {BATCH_SIZE}")
    grey = images.reshape(len(images), -1).to(torch.float32) / 255
    name = _device_name(str(device))
    print(f"device: {device} ({name}); {len(images)} images, {args.epochs} epoch(s), "
          f"batch {BATCH_SIZE}, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} thread(s)"
          + (", trainer compiled" if args.compile else "")
          + (", capture asked for" if args.capture else ""))
    # Measured in the order tutorial, trainer, trainer, tutorial and averaged, so that a load
    # that rises or falls steadily on a shared machine affects both alike.
    started = time.perf_counter()
    with torch_threads(args.threads):
        first = tutorial_epochs(grey, device, args.epochs)
        runs = [trainer_epochs(images, device, args.epochs, compile=args.compile,
                               capture=args.capture) for _ in range(2)]
        tutorial = (first + tutorial_epochs(grey, device, args.epochs)) / 2
    ours = (runs[0][0] + runs[1][0]) / 2
    first_epoch = (runs[0][1] + runs[1][1]) / 2
    mode = runs[-1][2]
    numbers = {"device": str(device), "device_name": name, "train_size": len(images),
               "epochs": args.epochs, "compile": args.compile, "capture": args.capture,
               "mode": mode, "trainer_seconds": ours, "trainer_first_epoch_seconds": first_epoch,
               "tutorial_seconds": tutorial, "ratio": tutorial / ours}
    print(f"trainer:  {ours:.3f} s per epoch ({mode} steps; the untimed first epoch took "
          f"{first_epoch:.2f} s)")
    print(f"tutorial: {tutorial:.3f} s per epoch")
    print(f"ratio (tutorial / trainer): {tutorial / ours:.2f}")
    if args.out is not None:
        config = BenchmarkConfig(str(device), args.epochs, len(images), args.compile,
                                 args.capture, args.threads)
        meta = metadata(config, "mnist-benchmark", time.perf_counter() - started,
                        "experiments.mnist.benchmark", argv)
        save_results(args.out, numbers, meta)
        print(f"saved {args.out}")
    return numbers


if __name__ == "__main__":
    main()
