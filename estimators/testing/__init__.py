"""Property-test an estimator: is it unbiased? Reference problems with exact gradients, and a
z-test at a stated false-positive rate::

    from estimators.testing import REFERENCE_PROBLEMS, check_unbiased
    report = check_unbiased(my_estimator, REFERENCE_PROBLEMS["conjugate_gaussian_2d"])
    print(report)            # each coordinate's estimate, s.e., z, detectable bias
    assert report.passed

* :data:`REFERENCE_PROBLEMS`: models and q's (continuous, Bernoulli, categorical, a mixture's
  component choice) whose gradients of the ELBO and of the K-sample bound, with respect to q's
  parameters and the model's, are exact (closed forms, quadrature, enumeration:
  :mod:`estimators.testing.exact`);
* :func:`check_unbiased` / :func:`assert_unbiased`: one problem; :func:`check_estimator`: every
  problem of a kind the estimator takes (the false-positive rate split over problems and
  coordinates, :mod:`estimators.testing.check`);
* :mod:`estimators.testing.strategies`: hypothesis strategies that draw problems;
* ``python -m estimators.testing package.module:attribute``: the check for a CI job.
"""

from .check import (DEFAULT_REPLICATES, POWER, CoordinateCheck, EstimatorReport,
                    UnbiasednessReport, applicable_problems, assert_unbiased, check_estimator,
                    check_unbiased, minimum_replicates, threshold)
from .exact import Exact
from .problems import (KINDS, REFERENCE_PROBLEMS, TARGETS, ReferenceProblem, bernoulli_bits,
                       categorical_latents, conjugate_gaussian, enumerated_problem,
                       gaussian_grid_problem, gaussian_mixture_target, get_problem,
                       logistic_regression, mixture_choice)

__all__ = ["REFERENCE_PROBLEMS", "ReferenceProblem", "Exact", "TARGETS", "KINDS",
           "check_unbiased", "assert_unbiased", "check_estimator", "applicable_problems",
           "minimum_replicates", "threshold", "UnbiasednessReport", "EstimatorReport",
           "CoordinateCheck", "DEFAULT_REPLICATES", "POWER", "get_problem",
           "conjugate_gaussian", "gaussian_mixture_target", "logistic_regression",
           "bernoulli_bits", "categorical_latents", "mixture_choice", "enumerated_problem",
           "gaussian_grid_problem"]
