"""The power and the false-positive rate of :func:`estimators.testing.check_unbiased`, measured.

    python -m experiments.testing_power                  # 1000 seeds per case, R = 100 and 400
    python -m experiments.testing_power --seeds 200 --replicates 100,400
    python -m experiments.testing_power --out .          # save results/testing-power.json

The check promises two things: a correct estimator fails with probability at most the stated
false-positive rate alpha, and a bias of the reported *detectable* size in a coordinate is caught
with probability 0.9. Both are measured here, at a small R so that many seeds are cheap (the
normal approximation behind the threshold is at its weakest there), for each case (a correct
registry estimator on a reference problem; :data:`CASES`) and each seed s = 0 .. N - 1:

* **false positives**: the correct estimator is checked at seed 2s; its replicates are judged at
  each nominal rate of ``rates`` (|bias| > c(alpha) se + tol, c from
  :func:`estimators.testing.threshold`, as the check itself judges them) and the rejections
  counted;
* **power**: that run's report gives the detectable bias d_s of one coordinate (``coordinate``,
  at the default rate 1e-3); the same estimator with d_s added to that coordinate's gradient is
  checked at seed 2s + 1, and the rejections counted (expected: about 90 %).

Each fraction is printed with its binomial standard error sqrt(p (1 - p) / N). Results are saved
(raw counts and metadata) only under ``--out``: ``--out DIR`` writes DIR/results/testing-power.json,
atomically; without it the file goes under runs/ (which git ignores).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from estimators import ESTIMATORS, ElboEstimate
from estimators.testing import REFERENCE_PROBLEMS, check_unbiased, threshold

from .common import (ROOT, StudyConfig, check_writable, metadata, progress, save_results,
                     torch_threads)

NAME = "testing-power"

# (estimator, problem, K, target, coordinate whose gradient gets the bias): near-normal
# gradients (pathwise), skewed ones (the score function on logistic regression), a discrete q
# (DisARM), the K-sample bound (IWAE at K = 5).
CASES = (
    ("pathwise", "conjugate_gaussian_2d", 1, "elbo", "lambda.loc[0]"),
    ("score_function", "logistic_regression", 2, "elbo", "lambda.loc[0]"),
    ("disarm", "bernoulli_bits", 2, "elbo", "lambda.logits[0]"),
    ("iwae", "gaussian_mixture_1d", 5, "iwae", "lambda.loc[0]"),
)


@dataclass(frozen=True)
class Config(StudyConfig):
    seeds: int = 1000  # N seeds per case and R: each a correct run and a biased run
    replicates: tuple = (100, 400)  # R of each check
    rates: tuple = (0.2, 0.05, 0.01, 0.001)  # nominal false-positive rates judged
    power_rate: float = 1e-3  # the rate at which the detectable bias is read and power measured
    cases: tuple = CASES  # (estimator, problem, K, target, coordinate)

    @classmethod
    def quick(cls) -> "Config":
        return cls(seeds=100, quick=True)


def _coordinate_tensor(q, coordinate: str) -> torch.Tensor:
    """The entries of q's parameter named by ``coordinate`` ("lambda.loc[0]"), one per batch
    entry: the problems' builds hand lam["loc"] (lam["logits"]) to q as it is."""
    parameter = coordinate.split(".", 1)[1].split("[")[0]
    index = int(coordinate.split("[")[1].rstrip("]"))
    base = q.base_dist
    tensor = {"loc": getattr(base, "loc", None), "logits": getattr(base, "logits", None)}[parameter]
    return tensor[..., index]


def biased(estimator, coordinate: str, bias: float):
    """``estimator`` with ``bias`` added to the gradient of one coordinate of q's parameters."""
    def shifted(model, q, num_samples, **options):
        result = estimator(model, q, num_samples, **options)
        entry = _coordinate_tensor(q, coordinate)
        return ElboEstimate(result.elbo, result.surrogate + bias * (entry - entry.detach()))

    shifted.__name__ = f"{getattr(estimator, 'name', 'estimator')}+bias"
    return shifted


def rejected_at(report, rate: float) -> bool:
    """The check's verdict on the same replicates at another false-positive rate."""
    cutoff = threshold(len(report.coordinates), rate, report.num_replicates)
    return any(abs(c.bias) > cutoff * c.standard_error + c.tolerance for c in report.coordinates)


def run(config: Config) -> dict:
    rows = []
    for name, problem, num_samples, target, coordinate in config.cases:
        estimator = ESTIMATORS[name]
        for replicates in config.replicates:
            false, caught, biases = {r: 0 for r in config.rates}, 0, []
            started = time.perf_counter()
            bar = progress(range(config.seeds), desc=f"{name} on {problem}, R = {replicates}")
            for seed in bar:
                report = check_unbiased(estimator, problem, num_samples=num_samples,
                                        num_replicates=replicates, target=target,
                                        false_positive_rate=config.power_rate, seed=2 * seed)
                for rate in config.rates:
                    false[rate] += rejected_at(report, rate)
                bias = next(c.detectable_bias for c in report.coordinates
                            if c.name == coordinate)
                biases.append(bias)
                twin = check_unbiased(biased(estimator, coordinate, bias), problem,
                                      num_samples=num_samples, num_replicates=replicates,
                                      target=target, false_positive_rate=config.power_rate,
                                      seed=2 * seed + 1, kinds=estimator.q_kinds)
                caught += not twin.passed
            rows.append({
                "estimator": name, "problem": problem, "num_samples": num_samples,
                "target": target, "coordinate": coordinate, "num_replicates": replicates,
                "seeds": config.seeds, "coordinates": len(report.coordinates),
                "false_rejections": {str(r): false[r] for r in config.rates},
                "power_rejections": caught, "power_rate": config.power_rate,
                "mean_detectable_bias": sum(biases) / len(biases),
                "seconds": time.perf_counter() - started,
            })
    return {"rows": rows}


def _fraction(count: int, total: int) -> str:
    p = count / total
    return f"{p:.3f} ± {math.sqrt(p * (1 - p) / total):.3f}"


def summary(data: dict) -> str:
    rows = data["rows"]
    rates = list(rows[0]["false_rejections"]) if rows else []
    lines = [f"power: rejections of a correct estimator given the bias its own report calls "
             f"detectable (expected about 0.9); false-positive rate: rejections of the correct "
             f"one at each nominal rate; fractions over the seeds ± their binomial s.e."]
    head = ["estimator", "problem", "K", "R", "seeds", "power"] + [f"FPR at {r}" for r in rates]
    table = [head]
    for row in rows:
        table.append([row["estimator"], row["problem"], str(row["num_samples"]),
                      str(row["num_replicates"]), str(row["seeds"]),
                      _fraction(row["power_rejections"], row["seeds"])]
                     + [_fraction(row["false_rejections"][r], row["seeds"]) for r in rates])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _replicate_list(text: str) -> tuple:
    values = tuple(_positive(t) for t in text.split(",") if t)
    if not values:
        raise argparse.ArgumentTypeError("give at least one R")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.testing_power",
        description="Measure the power and the false-positive rate of estimators.testing's "
                    "unbiasedness check over many seeds at a small R.")
    parser.add_argument("--seeds", type=_positive, default=Config.seeds,
                        help="seeds per case and R (default: %(default)s)")
    parser.add_argument("--replicates", type=_replicate_list, default=Config.replicates,
                        metavar="R[,R...]", help="replicates of each check (default: 100,400)")
    parser.add_argument("--quick", action="store_true", help="100 seeds: a quick look")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder that receives results/testing-power.json (default: runs/, "
                             "which git ignores); --out . writes the repository's results/")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    config = config.replace(seeds=args.seeds if not args.quick else config.seeds,
                            replicates=args.replicates)
    out = (args.out if args.out is not None else ROOT / "runs").resolve()
    target = out / "results" / f"{NAME}.json"
    try:
        check_writable(target.parent, "the output folder")
    except ValueError as error:
        raise SystemExit(f"error: {error}; choose another --out") from None
    least = min(config.replicates)
    for name, problem, *_ in config.cases:
        from estimators.testing import minimum_replicates
        needed = minimum_replicates(REFERENCE_PROBLEMS[problem].num_coordinates,
                                    config.power_rate)
        if least < needed:
            raise SystemExit(f"error: --replicates {least} is below the {needed} that the check "
                             f"needs on {problem}; use --replicates {needed} or more")
    started = time.perf_counter()
    with torch_threads(config.threads):
        data = run(config)
    meta = metadata(config, NAME, time.perf_counter() - started, "experiments.testing_power",
                    argv)
    save_results(target, data, meta)
    print(summary(data))
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
