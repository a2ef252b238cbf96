"""How much faster replicated gradients are than a Python loop of backward() calls.

    python -m experiments.benchmark_diagnostics [--replicates 10000] [--samples 1]
        [--estimator NAME ...] [--loop-replicates 300] [--repeats 3] [--seed 0] [--threads 1]

The problem: the eight-Gaussians ring (:meth:`estimators.targets.GaussianMixtureTarget.ring`) as
an unnormalised 2-D target, written as N(0, I) times the rest so that every registry entry applies,
and a Gaussian q = N(loc, diag exp(log_scale)^2). For each estimator it prints the number of
independent gradient estimates per second from :func:`estimators.diagnostics.replicate_gradients`
(R replicates, one backward pass), the number per second from a plain loop that builds q and calls
``surrogate.backward()`` once per estimate (timed over ``--loop-replicates`` iterations and
extrapolated), and their ratio. Both use one torch thread by default: the loop's tensors are too
small for a second core to help it, so one each compares like with like (``--threads 0`` leaves
torch's default; on a loaded machine extra threads make the vectorised timing erratic). Estimators that need more samples (the leave-one-out and optimal
baselines need K >= 2) run at their minimum, shown in the K column. Both run in the same process, on the same problem, in float64.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS, EmaBaseline
from estimators.diagnostics import replicate_gradients
from estimators.targets import GaussianMixtureTarget, WithStandardPrior

from .common import progress, torch_threads

DTYPE = torch.float64
LAMBDA = {"loc": [0.5, -0.5], "log_scale": [0.0, -0.3]}


@dataclass(frozen=True)
class Config:
    num_replicates: int = 10_000  # R of the vectorised pass
    num_samples: int = 1  # K: samples of z per gradient estimate (raised to an estimator's minimum)
    loop_replicates: int = 300  # iterations of the Python loop that are timed
    repeats: int = 3  # each timing is the best of this many runs (after one warm-up)
    seed: int = 0
    estimators: tuple = tuple(ESTIMATORS)


def gaussian_q(loc, log_scale):
    return Independent(Normal(loc, log_scale.exp()), 1)


def _options(name):
    return {"state": EmaBaseline()} if name == "score_function_ema" else {}


def _best_time(function, repeats):
    function()  # warm-up: allocator, first-call overheads
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def samples_for(name, config):
    return max(config.num_samples, ESTIMATORS[name].min_samples)


def vectorised_rate(name, model, config):
    """Independent gradient estimates per second from one replicated backward pass."""
    estimator, options = ESTIMATORS[name], _options(name)
    lam = {n: torch.tensor(v, dtype=DTYPE) for n, v in LAMBDA.items()}

    def once():
        grads = replicate_gradients(estimator, lambda lam_r, _: (model, gaussian_q(**lam_r)), lam,
                                    num_replicates=config.num_replicates,
                                    num_samples=samples_for(name, config), **options)
        assert grads.lambda_["loc"].shape == (config.num_replicates, 2)

    return config.num_replicates / _best_time(once, config.repeats)


def loop_rate(name, model, config):
    """Gradient estimates per second from a Python loop: build q, estimate, backward(), repeat."""
    estimator, options = ESTIMATORS[name], _options(name)

    def once():
        for _ in range(config.loop_replicates):
            loc = torch.tensor(LAMBDA["loc"], dtype=DTYPE, requires_grad=True)
            log_scale = torch.tensor(LAMBDA["log_scale"], dtype=DTYPE, requires_grad=True)
            estimate = estimator(model, gaussian_q(loc, log_scale), samples_for(name, config), **options)
            estimate.surrogate.backward()
            assert loc.grad is not None

    return config.loop_replicates / _best_time(once, config.repeats)


def run(config: Config) -> list[dict]:
    torch.manual_seed(config.seed)
    model = WithStandardPrior(GaussianMixtureTarget.ring(dtype=DTYPE), 2, DTYPE)
    rows = []
    for name in progress(config.estimators, desc="benchmark"):
        vectorised, loop = vectorised_rate(name, model, config), loop_rate(name, model, config)
        rows.append({"estimator": name, "num_samples": samples_for(name, config),
                     "vectorised_per_second": vectorised,
                     "loop_per_second": loop, "ratio": vectorised / loop})
    return rows


def _ratio(ratio: float) -> str:
    """8 characters: whole numbers from 10 on, two decimals below (a slow path shows as 0.40x)."""
    return f"{ratio:7.0f}x" if ratio >= 10 else f"{ratio:7.2f}x"


def report(rows, config) -> str:
    lines = [f"gradient estimates per second, ring target, 2-D Gaussian q, float64, "
             f"{torch.get_num_threads()} torch threads; vectorised R = {config.num_replicates}, "
             f"loop timed over {config.loop_replicates} iterations",
             f"{'estimator':24s} {'K':>3s} {'vectorised/s':>14s} {'loop/s':>10s} {'ratio':>8s}"]
    for row in rows:
        lines.append(f"{row['estimator']:24s} {row['num_samples']:3d} {row['vectorised_per_second']:14,.0f} "
                     f"{row['loop_per_second']:10,.0f} {_ratio(row['ratio'])}")
    return "\n".join(lines)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark_diagnostics",
        description="Gradient estimates per second: replicate_gradients (one vectorised backward "
                    "pass) against a Python loop of backward() calls, per estimator, on the "
                    "eight-Gaussians ring with a Gaussian q.")
    parser.add_argument("--replicates", type=_positive, default=Config.num_replicates,
                        help="R of the vectorised pass (default: %(default)s)")
    parser.add_argument("--samples", type=_positive, default=Config.num_samples,
                        help="K, samples per gradient estimate, raised to an estimator's minimum "
                             "(default: %(default)s)")
    parser.add_argument("--estimator", nargs="+", action="extend", metavar="NAME", default=None,
                        help="registry names to time (default: all of %s)" % ", ".join(ESTIMATORS))
    parser.add_argument("--loop-replicates", type=_positive, default=Config.loop_replicates,
                        help="loop iterations timed, then extrapolated (default: %(default)s)")
    parser.add_argument("--repeats", type=_positive, default=Config.repeats,
                        help="best of this many timings, after a warm-up (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=Config.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both paths; 0 leaves torch's default "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    names = tuple(args.estimator or ESTIMATORS)
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown estimator {', '.join(unknown)}; choose from {', '.join(ESTIMATORS)}")
    if args.replicates < 2:
        parser.error("--replicates must be at least 2")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (torch's default) or positive, got {args.threads}")
    config = Config(num_replicates=args.replicates, num_samples=args.samples,
                    loop_replicates=args.loop_replicates, repeats=args.repeats, seed=args.seed,
                    estimators=names)
    with torch_threads(args.threads):  # main() may run inside a longer-lived process
        print(report(run(config), config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
