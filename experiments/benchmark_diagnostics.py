"""How much faster replicated gradients are than a loop of backward() calls, and than vmap.

    python -m experiments.benchmark_diagnostics [--replicates 10000] [--samples 1]
        [--estimator NAME ...] [--loop-replicates 300] [--repeats 3] [--seed 0] [--threads 1]
        [--no-compile] [--no-vmap]

The problem: the eight-Gaussians ring (:meth:`estimators.targets.GaussianMixtureTarget.ring`) as
an unnormalised 2-D target, written as N(0, I) times the rest so that every registry entry that
takes a continuous q applies, and a Gaussian q = N(loc, diag exp(log_scale)^2). The estimators of
discrete latents (enumeration, gumbel_softmax, ...) take no Gaussian q and are not timed here. For
each estimator (by default every registry entry that takes a continuous q) it prints independent
gradient estimates per second from

* a plain loop that builds q and calls ``surrogate.backward()`` once per estimate (timed over
  ``--loop-replicates`` iterations and extrapolated);
* :func:`estimators.diagnostics.replicate_gradients`, R replicates in one backward pass (eager);
* ``torch.func.vmap(torch.func.grad(...))`` over R replicates: what a torch-fluent user writes.
  Each replicate's q is a :class:`~estimators.NormalWithNoise` fed its slice of one (R, K, D)
  draw of standard noise (vmap refuses torch.distributions' in-place sampling), with the
  estimators' NaN scan off (a data-dependent branch, which vmap refuses too). Where vmap cannot
  run an estimator (its own random draws, batched autograd inside, state updated across calls)
  the row says so;
* ``replicate_gradients(..., compile=True)``: the same pass under torch.compile; its first call,
  which compiles, is timed apart and printed.

and the ratios vectorised / loop, vectorised / vmap and compiled / vmap. All run in the same
process, on the same problem, in float64, with one torch thread by default (``--threads 0`` leaves
torch's default; on a loaded machine extra threads make the vectorised timing erratic).
Estimators that need more samples (the leave-one-out, optimal and VIMCO baselines need K >= 2)
run at their minimum, shown in the K column.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS, EmaBaseline, NormalWithNoise, set_validation
from estimators.base import validation_enabled
from estimators.diagnostics import replicate_gradients
from estimators.targets import GaussianMixtureTarget, WithStandardPrior

from .common import check_threads, progress, torch_threads

DTYPE = torch.float64
LAMBDA = {"loc": [0.5, -0.5], "log_scale": [0.0, -0.3]}
# The registry entries that take this benchmark's Gaussian q.
CONTINUOUS = tuple(name for name, entry in ESTIMATORS.items() if "continuous" in entry.q_kinds)
MAX_SEED = 2 ** 32 - 1


@dataclass(frozen=True)
class Config:
    num_replicates: int = 10_000  # R of the vectorised, vmapped and compiled passes
    num_samples: int = 1  # K: samples of z per gradient estimate (raised to an estimator's minimum)
    loop_replicates: int = 300  # iterations of the Python loop that are timed
    repeats: int = 3  # each timing is the best of this many runs (after one warm-up)
    seed: int = 0
    estimators: tuple = CONTINUOUS
    vmap: bool = True  # time torch.func.vmap(torch.func.grad(...)) too
    compile: bool = True  # time replicate_gradients(compile=True) too


def gaussian_q(loc, log_scale):
    return Independent(Normal(loc, log_scale.exp()), 1)


def _options(name):
    return {"state": EmaBaseline()} if name == "score_function_ema" else {}


def _best_times(functions: dict, repeats: int) -> dict:
    """The best of ``repeats`` timings of each function, taken in turn (so that a stretch of load
    from another process slows every path alike), after one untimed warm-up call each."""
    for function in functions.values():
        function()  # warm-up: allocator, first-call overheads
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def samples_for(name, config):
    return max(config.num_samples, ESTIMATORS[name].min_samples)


def replicated_pass(name, model, config, compile=False):
    """One call of replicate_gradients: R estimates, eager or compiled."""
    estimator, options = ESTIMATORS[name], _options(name)
    lam = {n: torch.tensor(v, dtype=DTYPE) for n, v in LAMBDA.items()}

    def build(lam_r, _):
        return model, gaussian_q(**lam_r)

    def once():
        grads = replicate_gradients(estimator, build, lam, num_replicates=config.num_replicates,
                                    num_samples=samples_for(name, config), compile=compile,
                                    **options)
        assert grads.lambda_["loc"].shape == (config.num_replicates, 2)

    return once


# Why vmap cannot run an estimator, where it cannot (checked: each fails or leaks under vmap).
VMAP_UNSUPPORTED = {
    "score_function_ema": "its moving-average state is updated by each call, inside the transform",
}


def vmap_gradient(name, model, config):
    """``vmap(grad(one replicate's surrogate))`` and its inputs: the torch.func peer."""
    estimator, num_samples = ESTIMATORS[name], samples_for(name, config)

    def one_replicate(lam, noise):
        q = Independent(NormalWithNoise(lam["loc"], lam["log_scale"].exp(), noise), 1)
        return estimator(model, q, num_samples).surrogate

    vmapped = torch.func.vmap(torch.func.grad(one_replicate), randomness="different")

    def gradient(lam, noise):
        previous = validation_enabled()
        set_validation(False)  # the NaN scan branches on data, which vmap refuses
        try:
            return vmapped(lam, noise)
        finally:
            set_validation(previous)

    lam = {n: torch.tensor(v, dtype=DTYPE).expand(config.num_replicates, -1).clone()
           for n, v in LAMBDA.items()}
    return gradient, lam, (config.num_replicates, num_samples, len(LAMBDA["loc"]))


def vmap_pass(name, model, config):
    """(one call of vmap(grad(...)) over R replicates, or None, and why not)."""
    if name in VMAP_UNSUPPORTED:
        return None, VMAP_UNSUPPORTED[name]
    gradient, lam, noise_shape = vmap_gradient(name, model, config)

    def once():
        grads = gradient(lam, torch.randn(noise_shape, dtype=DTYPE))
        assert grads["loc"].shape == (config.num_replicates, 2)

    try:
        once()
    except RuntimeError as error:
        return None, str(error).splitlines()[0][:90]
    return once, ""


def loop_pass(name, model, config):
    """A Python loop of ``loop_replicates`` estimates: build q, estimate, backward(), repeat."""
    estimator, options = ESTIMATORS[name], _options(name)

    def once():
        for _ in range(config.loop_replicates):
            loc = torch.tensor(LAMBDA["loc"], dtype=DTYPE, requires_grad=True)
            log_scale = torch.tensor(LAMBDA["log_scale"], dtype=DTYPE, requires_grad=True)
            estimate = estimator(model, gaussian_q(loc, log_scale), samples_for(name, config), **options)
            estimate.surrogate.backward()
            assert loc.grad is not None

    return once


def compiled_difference(name, model, config) -> float:
    """The largest difference between the compiled and the eager pass's gradients, seeded alike,
    relative to the largest eager gradient of that parameter; above 1e-9 the benchmark refuses to
    time a compiled pass that computes something else."""
    estimator, lam = ESTIMATORS[name], {n: torch.tensor(v, dtype=DTYPE) for n, v in LAMBDA.items()}
    results = []
    for compile in (False, True):
        torch.manual_seed(config.seed + 1)
        results.append(replicate_gradients(
            estimator, lambda lam_r, _: (model, gaussian_q(**lam_r)), lam,
            num_replicates=config.num_replicates, num_samples=samples_for(name, config),
            compile=compile, **_options(name)).lambda_)
    eager, compiled = results
    difference = max(((compiled[n] - eager[n]).abs().max() / eager[n].abs().max()).item()
                     for n in eager)
    if not difference <= 1e-9:
        raise RuntimeError(f"benchmark: {name}'s compiled pass differs from its eager pass "
                           f"(relative difference {difference:.1e})")
    return difference


def run(config: Config) -> list[dict]:
    torch.manual_seed(config.seed)
    model = WithStandardPrior(GaussianMixtureTarget.ring(dtype=DTYPE), 2, DTYPE)
    rows = []
    for name in progress(config.estimators, desc="benchmark"):
        row = {"estimator": name, "num_samples": samples_for(name, config)}
        passes = {"loop": loop_pass(name, model, config),
                  "vectorised": replicated_pass(name, model, config)}
        counts = {"loop": config.loop_replicates}
        if config.vmap:
            vmapped, row["vmap_note"] = vmap_pass(name, model, config)
            if vmapped is not None:
                passes["vmap"] = vmapped
        if config.compile:
            compiled = replicated_pass(name, model, config, compile=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                started = time.perf_counter()
                compiled()  # compiles
                row["compile_seconds"] = time.perf_counter() - started
                row["compiled_difference"] = compiled_difference(name, model, config)
            row["compiled_note"] = "eager: does not compile" if any(
                "does not compile" in str(w.message) for w in caught) else ""
            passes["compiled"] = compiled
        best = _best_times(passes, config.repeats)
        for path, seconds in best.items():
            row[f"{path}_per_second"] = counts.get(path, config.num_replicates) / seconds
        row["ratio"] = row["vectorised_per_second"] / row["loop_per_second"]
        rows.append(row)
    return rows


def _ratio(ratio: float | None) -> str:
    """8 characters: whole numbers from 10 on, two decimals below (a slow path shows as 0.40x)."""
    if ratio is None:
        return f"{'n/a':>8s}"
    return f"{ratio:7.0f}x" if ratio >= 10 else f"{ratio:7.2f}x"


def _rate(rate: float | None) -> str:
    return f"{'n/a':>12s}" if rate is None else f"{rate:12,.0f}"


def report(rows, config) -> str:
    lines = [f"gradient estimates per second, ring target, 2-D Gaussian q, float64, "
             f"{torch.get_num_threads()} torch threads; vectorised, vmap and compiled R = "
             f"{config.num_replicates}, loop timed over {config.loop_replicates} iterations; "
             f"best of {config.repeats}",
             f"{'estimator':24s} {'K':>3s} {'loop/s':>10s} {'vectorised/s':>12s} "
             f"{'vmap/s':>12s} {'compiled/s':>12s} {'compile s':>9s} {'vec/vmap':>8s} "
             f"{'comp/vmap':>9s} {'vec/loop':>8s}"]
    differences = [row["compiled_difference"] for row in rows if "compiled_difference" in row]
    notes = []
    for row in rows:
        vmap = row.get("vmap_per_second")
        compiled = row.get("compiled_per_second")
        first = row.get("compile_seconds")
        lines.append(
            f"{row['estimator']:24s} {row['num_samples']:3d} {row['loop_per_second']:10,.0f} "
            f"{_rate(row['vectorised_per_second'])} {_rate(vmap)} {_rate(compiled)} "
            f"{'n/a' if first is None else f'{first:.1f}':>9s} "
            f"{_ratio(None if vmap is None else row['vectorised_per_second'] / vmap)} "
            f"{_ratio(None if vmap is None or compiled is None else compiled / vmap):>9s} "
            f"{_ratio(row['ratio'])}")
        for key, what in (("vmap_note", "vmap"), ("compiled_note", "compiled")):
            if row.get(key):
                notes.append(f"  {row['estimator']}: {what} n/a: {row[key]}" if what == "vmap"
                             else f"  {row['estimator']}: {row[key]}")
    if differences:
        lines.append(f"compiled against eager, seeded alike: largest difference of the gradients, "
                     f"relative to the largest, {max(differences):.1e}")
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv=None) -> int:
    parser = _Parser(
        prog="python -m experiments.benchmark_diagnostics",
        description="Gradient estimates per second: replicate_gradients (one vectorised backward "
                    "pass, eager and compiled) against a Python loop of backward() calls and "
                    "against torch.func.vmap(torch.func.grad(...)), per estimator, on the "
                    "eight-Gaussians ring with a Gaussian q.")
    parser.add_argument("--replicates", type=_positive, default=Config.num_replicates,
                        help="R of the vectorised, vmapped and compiled passes (default: %(default)s)")
    parser.add_argument("--samples", type=_positive, default=Config.num_samples,
                        help="K, samples per gradient estimate, raised to an estimator's minimum "
                             "(default: %(default)s)")
    parser.add_argument("--estimator", nargs="+", action="extend", metavar="NAME", default=None,
                        help="registry names to time, of those that take a continuous q "
                             "(default: all of %s)" % ", ".join(CONTINUOUS))
    parser.add_argument("--loop-replicates", type=_positive, default=Config.loop_replicates,
                        help="loop iterations timed, then extrapolated (default: %(default)s)")
    parser.add_argument("--repeats", type=_positive, default=Config.repeats,
                        help="best of this many timings, after a warm-up (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=Config.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every path; 0 leaves torch's default; at "
                             "most four per CPU core (default: %(default)s)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the compiled pass (compiling takes seconds per estimator)")
    parser.add_argument("--no-vmap", action="store_true", help="skip the vmap peer")
    args = parser.parse_args(argv)
    names = tuple(args.estimator or CONTINUOUS)
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown estimator {', '.join(unknown)}; choose from {', '.join(CONTINUOUS)}")
    discrete = [n for n in names if n not in CONTINUOUS]
    if discrete:
        parser.error(f"{', '.join(discrete)} {'takes' if len(discrete) == 1 else 'take'} a q of "
                     f"discrete latents, and this benchmark's q is a Gaussian; choose from "
                     f"{', '.join(CONTINUOUS)}")
    if args.replicates < 2:
        parser.error("--replicates must be at least 2")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must lie in 0..{MAX_SEED}, got {args.seed}")
    try:
        check_threads(args.threads)
    except ValueError as error:
        parser.error(str(error))
    config = Config(num_replicates=args.replicates, num_samples=args.samples,
                    loop_replicates=args.loop_replicates, repeats=args.repeats, seed=args.seed,
                    estimators=names, vmap=not args.no_vmap, compile=not args.no_compile)
    with torch_threads(args.threads):  # main() may run inside a longer-lived process
        print(report(run(config), config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
