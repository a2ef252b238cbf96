"""Runs per second of a group of R training runs against R solo runs, same process, same device.

    python -m experiments.benchmark_runs                          # gmm-vae network, CPU, R = 8
    python -m experiments.benchmark_runs --network kingma-welling --device cuda --capture

Both sides train the same configuration with the same estimator for the same steps; the group
is one run whose parameters carry a leading run dimension (:mod:`experiments.replicated`), the
solo runs are the same code with R = 1, one after another. Each side is timed twice, in the
order solo, group, group, solo, and the two times averaged, so that a load that rises or falls
steadily on a shared machine affects both alike. Times exclude evaluations and probes.

- ``gmm-vae``: the gmm-vae study's VAE (2-64-64-4 encoder, 2-64-64-2 decoder), 128 points and
  K = 4 samples per step (:func:`experiments.gmm_vae.train`);
- ``kingma-welling``: the MNIST trainer (:func:`experiments.mnist.train.train`) on the Kingma &
  Welling network, 784-500-20, batch 100, one epoch timed after an untimed one (which holds the
  warm-up and capture of ``--capture`` and the compiling of ``--compile``).

The run also times one step (forward and backward) of the two ways to write R networks as one,
on the chosen network: the batched layers the group trains with (:class:`RunLinear`, one
:func:`torch.baddbmm` per layer) and :func:`torch.func.vmap` over
:func:`torch.func.functional_call` of the plain network, and prints their ratio. Ratios are
measured in the same run; no timing is asserted anywhere.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .common import (_device_name, check_output_file, check_threads, metadata, save_results,
                     torch_threads)

__all__ = ["main"]

NETWORKS = ("gmm-vae", "kingma-welling")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark run was asked for (saved with its numbers by ``--out``)."""

    network: str
    runs: int
    steps: int
    estimator: str
    device: str
    threads: int
    capture: bool
    compile: bool
    train_size: int
    seed: int = 0


def _synchronise(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _gmm_seconds(config: BenchmarkConfig, runs: int) -> float:
    """Seconds of ``config.steps`` training steps of a group of ``runs`` gmm-vae runs."""
    from estimators.targets import GaussianMixtureTarget

    from . import gmm_vae

    study = gmm_vae.Config(steps=config.steps, eval_every=config.steps, eval_points=8,
                           eval_num_samples=1, diagnostic_fractions=(), seed=config.seed)
    data = GaussianMixtureTarget.ring(dtype=torch.float64)
    points = gmm_vae.sample_data(data, 8, torch.Generator().manual_seed(1))
    record, _ = gmm_vae.train(config.estimator, study, data, points, points, runs=runs,
                              probing=False)
    return record["seconds_per_step"] * config.steps


def _mnist_seconds(config: BenchmarkConfig, runs: int, images) -> float:
    """Seconds of the second epoch of a group of ``runs`` Kingma & Welling runs."""
    from .mnist.data import DeviceDataset
    from .mnist.train import TrainConfig, train

    dtype = torch.float32
    data = DeviceDataset(images, "dynamic", config.device, dtype, config.seed)
    test = data.evaluation_images(config.seed)[:100]
    trainer = TrainConfig(architecture="kingma-welling", latent=20, estimator=config.estimator,
                          batch_size=100, epochs=2, seed=config.seed, num_runs=runs,
                          device=config.device, dtype="float32", eval_size=100,
                          capture=config.capture, compile=config.compile)
    result = train(trainer, train_data=data, test_images=test)
    wall = result.history["wall_seconds"]
    return wall[-1] - wall[0]


def _one_step_seconds(network: str, runs: int, device: str, repeats: int = 20) -> dict:
    """One forward and backward pass of R networks: batched layers against vmap."""
    from torch.func import functional_call, stack_module_state, vmap

    from estimators import ESTIMATORS
    from estimators.base import set_validation, validation_enabled

    from .replicated import stack_modules

    estimator = ESTIMATORS["pathwise_analytic_kl"]
    if network == "gmm-vae":
        from .gmm_vae import GaussianVAE

        modules = [GaussianVAE(latent_dim=2, hidden=64).to(device) for _ in range(runs)]
        batch, pixels, latent, samples = 128, 2, 2, 4
        x = torch.randn(runs, batch, pixels, device=device)
    else:
        from .mnist.models import ARCHITECTURES, VAE

        modules = [VAE(ARCHITECTURES["kingma-welling"](20)).to(device) for _ in range(runs)]
        batch, pixels, latent, samples = 100, 784, 20, 1
        x = (torch.rand(runs, batch, pixels, device=device) < 0.3).float()
    noise = torch.randn(samples, runs, batch, latent, device=device)
    group = stack_modules(modules)
    params, buffers = stack_module_state(modules)
    template = modules[0]

    def batched():
        loss = -estimator(group.bind(x), group.posterior(x, noise), samples).surrogate.mean(-1)
        torch.autograd.grad(loss.sum(), list(group.parameters()))

    def one_run(p, b, xr, er):
        class Plain(torch.nn.Module):
            def forward(self, inputs, draws):
                return -estimator(template.bind(inputs), template.posterior(inputs, draws),
                                  samples).surrogate.mean()

        wrapper = Plain()
        wrapper.template = template
        return functional_call(wrapper, ({f"template.{k}": v for k, v in p.items()},
                                         {f"template.{k}": v for k, v in b.items()}), (xr, er))

    def vmapped():
        loss = vmap(one_run, in_dims=(0, 0, 0, 1))(params, buffers, x, noise)
        torch.autograd.grad(loss.sum(), list(params.values()))

    was = validation_enabled()
    set_validation(False)  # the NaN scan reads a value, which vmap refuses
    try:
        times = {}
        for name, step in (("batched", batched), ("vmap", vmapped), ("batched", batched),
                           ("vmap", vmapped)):
            step()
            _synchronise(device)
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            _synchronise(device)
            times.setdefault(name, []).append((time.perf_counter() - start) / repeats)
    finally:
        set_validation(was)
    return {name: sum(values) / len(values) for name, values in times.items()}


def main(argv=None) -> dict:
    from .mnist.train import _Parser, _resolve_device

    parser = _Parser(prog="python -m experiments.benchmark_runs",
                     description="Runs per second of a group of R training runs against R solo "
                                 "runs, same process, same device.")
    parser.add_argument("--network", choices=NETWORKS, default="gmm-vae",
                        help="gmm-vae (default; the CPU target) or kingma-welling (the MNIST "
                             "trainer, the GPU target)")
    parser.add_argument("--runs", type=int, default=8, help="R, runs in the group (default 8)")
    parser.add_argument("--steps", type=int, default=300,
                        help="gmm-vae: timed steps of each side (default 300)")
    parser.add_argument("--estimator", default="pathwise", help="registry name (default pathwise)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1; 0: torch's default; at most four per "
                             "CPU core)")
    parser.add_argument("--capture", action="store_true",
                        help="kingma-welling: each step as one CUDA graph (CUDA only)")
    parser.add_argument("--compile", action="store_true",
                        help="kingma-welling: torch.compile the step (CUDA only)")
    parser.add_argument("--train-size", type=int, default=0,
                        help="kingma-welling: the first N training images (default: all)")
    parser.add_argument("--data-dir", default="", help="kingma-welling: the MNIST folder")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the numbers, the command and the versions here")
    args = parser.parse_args(argv)
    from .replicated import estimator_names

    os.environ.setdefault("EXPERIMENTS_NO_PROGRESS", "1")  # many short trainings: no bars
    if args.runs < 2:
        raise SystemExit(f"error: --runs must be >= 2 (a group to compare), got {args.runs}")
    if args.steps < 1 or args.threads < 0 or args.train_size < 0:
        raise SystemExit("error: --steps must be >= 1, --threads and --train-size >= 0")
    try:
        check_threads(args.threads)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        if args.out is not None:  # before the minutes of timing, not after them
            check_output_file(args.out)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if args.estimator not in estimator_names():
        raise SystemExit(f"error: unknown estimator {args.estimator!r}; choose from "
                         f"{', '.join(estimator_names())}")
    try:
        device = str(_resolve_device(args.device, world=1, who="the benchmark"))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if args.network == "gmm-vae" and device != "cpu":
        raise SystemExit("error: the gmm-vae network is benchmarked on the CPU; use "
                         "--network kingma-welling for a GPU")
    config = BenchmarkConfig(args.network, args.runs, args.steps, args.estimator, device,
                             args.threads, args.capture, args.compile, args.train_size)
    images = None
    if args.network == "kingma-welling":
        from .mnist.data import MnistError, load_mnist

        try:
            images, _ = load_mnist(args.data_dir or None, "train")
        except MnistError as error:
            raise SystemExit(f"error: {error}") from None
        if args.train_size:
            images = images[:args.train_size]
        if len(images) < 100:
            raise SystemExit("error: --train-size must be at least the batch size 100")

    def seconds(runs):
        if args.network == "gmm-vae":
            return _gmm_seconds(config, runs)
        return _mnist_seconds(config, runs, images)

    started = time.perf_counter()
    name = _device_name(device)
    with torch_threads(args.threads):
        print(f"device: {device} ({name}); network {args.network}, estimator {args.estimator}, "
              f"R = {args.runs}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
              + (", captured" if args.capture else "") + (", compiled" if args.compile else ""))
        solo, group = [], []
        for side in ("solo", "group", "group", "solo"):
            if side == "solo":  # R runs of one, one after another
                solo.append(sum(seconds(1) for _ in range(args.runs)))
            else:
                group.append(seconds(args.runs))
        solo_seconds, group_seconds = sum(solo) / 2, sum(group) / 2
        layers = _one_step_seconds(args.network, args.runs, device)
    work = "steps" if args.network == "gmm-vae" else "epoch"
    numbers = {"network": args.network, "runs": args.runs, "estimator": args.estimator,
               "device": device, "device_name": name, "threads": args.threads,
               "solo_seconds": solo_seconds, "group_seconds": group_seconds,
               "solo_runs_per_second": args.runs / solo_seconds,
               "group_runs_per_second": args.runs / group_seconds,
               "ratio": solo_seconds / group_seconds,
               "batched_step_seconds": layers["batched"], "vmap_step_seconds": layers["vmap"],
               "batched_over_vmap": layers["vmap"] / layers["batched"]}
    what = f"{args.steps} steps" if work == "steps" else "one epoch"
    print(f"{args.runs} solo runs: {solo_seconds:.3f} s for {what} each, one after another")
    print(f"one group of {args.runs}: {group_seconds:.3f} s for {what}")
    print(f"ratio (runs per second, group / solo): {numbers['ratio']:.2f}")
    print(f"one step of {args.runs} networks as one: batched layers {1e3 * layers['batched']:.2f} "
          f"ms, vmap over functional_call {1e3 * layers['vmap']:.2f} ms; ratio "
          f"{numbers['batched_over_vmap']:.2f}")
    if args.out is not None:
        meta = metadata(config, "benchmark-runs", time.perf_counter() - started,
                        "experiments.benchmark_runs", argv)
        save_results(args.out, numbers, meta)
        print(f"saved {args.out}")
    return numbers


if __name__ == "__main__":
    main()
