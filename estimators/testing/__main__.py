"""``python -m estimators.testing package.module:attribute``: check an estimator for a CI job.

    python -m estimators.testing mypackage.estimators:antithetic_pathwise
    python -m estimators.testing estimators:disarm --samples 2
    python -m estimators.testing mymodule:my_vimco --target iwae --samples 5 --replicates 8000

The attribute is a registry :class:`~estimators.Estimator` or a plain callable
``(model, q, num_samples, **options) -> ElboEstimate`` (a function of the registry, such as
``estimators:disarm``, is checked as its registry entry). It is checked on every reference problem
of a kind of q it takes (its ``q_kinds``, else ``--kinds``, else continuous) and a table is
printed: problem, worst |z|, threshold, detectable bias, verdict; the coordinates of any problem
that fails follow. Exit status 0 when every check passes, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

from ..base import EstimatorError
from .check import DEFAULT_REPLICATES, check_estimator
from .problems import KINDS, REFERENCE_PROBLEMS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _names(choices):
    def parse(text: str) -> tuple:
        items = tuple(t for t in text.split(",") if t)
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown[0]!r}; choose from {', '.join(choices)}" if unknown
                else "give at least one name")
        return items
    return parse


def resolve(spec: str):
    """The object named by ``package.module:attribute`` (the attribute may be dotted); a
    registry function stands for its registry entry."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise EstimatorError(f"{spec!r} is not package.module:attribute (e.g. "
                             "mypackage.estimators:my_estimator)")
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise EstimatorError(f"cannot import {module_name!r} ({error}); run from the folder that "
                             "holds it or install it") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise EstimatorError(f"{module_name} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise EstimatorError(f"{spec} is a {type(found).__name__}, not an estimator: give a "
                             "callable (model, q, num_samples, **options) -> ElboEstimate")
    from .. import ESTIMATORS

    for entry in ESTIMATORS.values():
        if entry.fn is found:
            return entry
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m estimators.testing",
        description="Check that an estimator is unbiased on every reference problem of a kind "
                    "of q it takes: R replicate gradients against exact gradients, coordinate by "
                    "coordinate, at a stated false-positive rate. Exit status 0: every check "
                    "passed; 1: one failed; 2: bad input.")
    parser.add_argument("estimator", metavar="package.module:attribute",
                        help="a registry Estimator or a callable (model, q, num_samples, "
                             "**options) -> ElboEstimate")
    parser.add_argument("--target", choices=("elbo", "iwae"), default=None,
                        help="the objective whose gradient it should estimate without bias: the "
                             "ELBO, or the K-sample bound (default: the estimator's objective, "
                             "else elbo)")
    parser.add_argument("--samples", type=_positive, default=None, metavar="K",
                        help="samples per estimate, K (default: the estimator's min_samples, "
                             "else 1)")
    parser.add_argument("--replicates", type=_positive, default=DEFAULT_REPLICATES, metavar="R",
                        help="replicate gradients per problem (default: %(default)s)")
    parser.add_argument("--false-positive-rate", type=_rate, default=1e-3, metavar="ALPHA",
                        help="probability that a correct estimator fails the run, split evenly "
                             "over problems and coordinates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replicates "
                                                          "(default: %(default)s)")
    parser.add_argument("--kinds", type=_names(KINDS), default=None, metavar="KIND,...",
                        help=f"kinds of q it takes, of {', '.join(KINDS)} (default: its q_kinds, "
                             "else continuous)")
    parser.add_argument("--problems", type=_names(tuple(REFERENCE_PROBLEMS)), default=None,
                        metavar="NAME,...", help="reference problems to use (default: every "
                                                 f"applicable one of {', '.join(REFERENCE_PROBLEMS)})")
    parser.add_argument("--threads", type=_positive, default=1,
                        help="torch CPU threads (default: %(default)s; the problems are small, and "
                             "on a shared CPU more threads wait for each other)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        estimator = resolve(args.estimator)
        report = check_estimator(estimator, args.problems, kinds=args.kinds, target=args.target,
                                 num_samples=args.samples, num_replicates=args.replicates,
                                 false_positive_rate=args.false_positive_rate, seed=args.seed)
    except EstimatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    print(report.table())
    for problem in report.reports:
        if not problem.passed:
            print()
            print(problem.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
