"""Is an estimator unbiased? R replicate gradients against an exact gradient, coordinate by
coordinate, at a stated false-positive rate.

The test
--------
:func:`check_unbiased` draws R independent gradient estimates in one vectorised pass
(:func:`estimators.diagnostics.replicate_gradients`) on a reference problem and compares, for
each of the n coordinates of (lambda, theta), the replicate mean with the exact gradient:

* z = (mean - exact) / se, se = sd / sqrt(R), against a threshold c from Student's t with R - 1
  degrees of freedom (what z follows for normally distributed estimates, and the normal's
  quantile as R grows) at two-sided level alpha / n: the false-positive rate alpha is **split
  evenly across the n coordinates (Bonferroni)**, so a correct estimator fails the whole check
  with probability at most alpha (to the normal approximation of the replicate mean);
* a coordinate is rejected when |mean - exact| > c se + tol. ``tol`` is the comparison's
  floating-point tolerance: the exact gradient's own numerical error (its quadrature's estimate)
  plus 4096 machine epsilons of the gradients' size. A coordinate that the estimator computes
  exactly (zero variance across replicates, as an antithetic estimator does for the mean of a
  Gaussian model, or an analytic KL's part) has se below tol and is, in effect, compared with the
  exact value at that tolerance rather than by a z-score of a vanishing standard error;
* the **detectable bias** of a coordinate, (c + t_0.9) se + tol, is the bias that the check
  rejects with probability 0.9 at this R (t_0.9 the 0.9 quantile of the same t): halve it by
  taking four times the replicates;
* the check needs at least the R at which it detects, with probability 0.9, a bias as large as
  one estimate's standard deviation, (c + t_0.9) / sqrt(R) <= 1 (:func:`minimum_replicates`;
  34 at alpha = 1e-3 over 10 coordinates); fewer is refused.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from scipy import stats

from ..base import ElboEstimate, Estimator, EstimatorError
from ..diagnostics import replicate_gradients
from .problems import (KINDS, REFERENCE_PROBLEMS, TARGETS, ReferenceProblem, check_target,
                       get_problem)

__all__ = ["check_unbiased", "assert_unbiased", "check_estimator", "applicable_problems",
           "minimum_replicates", "threshold", "CoordinateCheck", "UnbiasednessReport",
           "EstimatorReport", "DEFAULT_REPLICATES", "POWER"]

DEFAULT_REPLICATES = 4000
POWER = 0.9  # the detection probability of the reported detectable bias
ROUNDING = 4096  # machine epsilons of the gradients' size allowed for rounding


def estimator_name(estimator) -> str:
    return str(getattr(estimator, "name", None) or getattr(estimator, "__name__", None)
               or type(estimator).__name__)


def threshold(num_coordinates: int, false_positive_rate: float, num_replicates: int) -> float:
    """|z| above which a coordinate is rejected: Student's t (R - 1 degrees of freedom) at
    two-sided level false_positive_rate / num_coordinates (Bonferroni)."""
    return float(stats.t.isf(false_positive_rate / (2 * num_coordinates), num_replicates - 1))


def _power_quantile(num_replicates: int) -> float:
    return float(stats.t.ppf(POWER, num_replicates - 1))


def minimum_replicates(num_coordinates: int, false_positive_rate: float) -> int:
    """The smallest R at which the check detects, with probability 0.9, a bias as large as one
    estimate's standard deviation: (c + t_0.9) / sqrt(R) <= 1. Fewer replicates miss even that."""
    count = 2
    while (threshold(num_coordinates, false_positive_rate, count) + _power_quantile(count)
           > math.sqrt(count)):
        count += 1
    return count


@dataclass(frozen=True)
class CoordinateCheck:
    """One coordinate of the gradient: ``group`` "lambda" (q's) or "theta" (the model's)."""

    group: str
    parameter: str
    index: tuple
    exact: float
    estimate: float
    standard_error: float
    tolerance: float
    threshold: float
    detectable_bias: float

    @property
    def name(self) -> str:
        index = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        return f"{self.group}.{self.parameter}{index}"

    @property
    def bias(self) -> float:
        return self.estimate - self.exact

    @property
    def exact_comparison(self) -> bool:
        """Zero variance across replicates (to the tolerance): compared at the tolerance."""
        return self.standard_error <= self.tolerance

    @property
    def z(self) -> float:
        if self.standard_error > 0:
            return self.bias / self.standard_error
        return 0.0 if self.bias == 0 else math.copysign(math.inf, self.bias)

    @property
    def rejected(self) -> bool:
        return not abs(self.bias) <= self.threshold * self.standard_error + self.tolerance

    @property
    def excess(self) -> float:
        """|bias| over what the check allows: above 1 is a rejection."""
        allowed = self.threshold * self.standard_error + self.tolerance
        if allowed > 0:
            return abs(self.bias) / allowed
        return 0.0 if self.bias == 0 else math.inf


@dataclass(frozen=True)
class UnbiasednessReport:
    """The outcome of :func:`check_unbiased`; ``str(report)`` is a table of every coordinate."""

    estimator: str
    problem: str
    kind: str
    target: str
    num_samples: int
    num_replicates: int
    seed: int
    false_positive_rate: float
    threshold: float
    coordinates: tuple

    @property
    def passed(self) -> bool:
        return not any(c.rejected for c in self.coordinates)

    @property
    def worst(self) -> CoordinateCheck:
        """The coordinate closest to (or furthest past) rejection."""
        return max(self.coordinates, key=lambda c: c.excess)

    @property
    def largest_z(self) -> float:
        """The largest |z| over the coordinates compared by a z-score (0 if none is)."""
        return max((abs(c.z) for c in self.coordinates if not c.exact_comparison), default=0.0)

    @property
    def detectable_bias(self) -> float:
        """The largest per-coordinate detectable bias: a bias of that size in any coordinate is
        caught with probability at least 0.9."""
        return max(c.detectable_bias for c in self.coordinates)

    def header(self) -> str:
        target = "the ELBO" if self.target == "elbo" else f"the {self.num_samples}-sample bound"
        return (f"{self.estimator} on {self.problem} ({self.kind} q): unbiased for {target}? "
                f"K = {self.num_samples}, R = {self.num_replicates}, seed {self.seed}\n"
                f"false-positive rate {self.false_positive_rate:.3g}, split evenly over "
                f"{len(self.coordinates)} coordinates (Bonferroni): |z| > {self.threshold:.2f} "
                f"rejects (Student t, {self.num_replicates - 1} d.f.); detectable bias = the bias "
                f"caught with probability {POWER:.0%} at this R")

    def table(self) -> str:
        rows = [("coordinate", "exact", "estimate", "s.e.", "z", "detectable", "verdict")]
        for c in self.coordinates:
            z = "exact" if c.exact_comparison else f"{c.z:+.2f}"
            rows.append((c.name, f"{c.exact:+.6g}", f"{c.estimate:+.6g}",
                         f"{c.standard_error:.2g}", z, f"{c.detectable_bias:.2g}",
                         "REJECTED" if c.rejected else "ok"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        worst = self.worst
        if self.passed:
            verdict = (f"passed: no coordinate's bias exceeds the threshold (closest: "
                       f"{worst.name}, {_describe(worst)})")
        else:
            failed = sum(c.rejected for c in self.coordinates)
            verdict = (f"FAILED: {failed} of {len(self.coordinates)} coordinates biased (worst: "
                       f"{worst.name}, {_describe(worst)})")
        notes = []
        if any(c.exact_comparison for c in self.coordinates):
            notes.append("z = exact: the replicates agree to the tolerance (zero variance); "
                         "compared with the exact value at the floating-point tolerance "
                         f"{max(c.tolerance for c in self.coordinates if c.exact_comparison):.1g}")
        return "\n".join([self.header(), *lines, *notes, verdict])

    def __str__(self) -> str:
        return self.table()


def _describe(c: CoordinateCheck) -> str:
    if c.exact_comparison:
        return f"|bias| {abs(c.bias):.2g} against the tolerance {c.tolerance:.2g}"
    return f"z = {c.z:+.2f}, bias {c.bias:+.3g} ± {c.standard_error:.2g}"


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _kinds(estimator, kinds=None) -> tuple | None:
    if kinds is not None:
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise EstimatorError(f"unknown kind of q {unknown[0]!r}; choose from "
                                 f"{', '.join(KINDS)}")
        return kinds
    found = getattr(estimator, "q_kinds", None)
    return tuple(found) if found is not None else None


def _target(estimator, target) -> str:
    if target is None:
        target = getattr(estimator, "objective", None) or "elbo"
    if target not in TARGETS:
        raise EstimatorError(f"target must be 'elbo' or 'iwae' (the K-sample bound), got "
                             f"{target!r}")
    return target


def _check_arguments(name, estimator, problem, num_samples, num_replicates,
                     false_positive_rate, seed, kinds, target) -> None:
    if not callable(estimator):
        raise EstimatorError(f"the estimator must be callable (model, q, num_samples, **options) "
                             f"-> ElboEstimate, got {type(estimator).__name__}")
    if kinds is not None and problem.kind not in kinds:
        raise EstimatorError(
            f"{name} takes q of kind {', '.join(kinds)}; problem {problem.name} has a "
            f"{problem.kind} q: choose one of applicable_problems({name}) or pass kinds=")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise EstimatorError(f"num_samples must be a positive int, got {num_samples!r}")
    least = getattr(estimator, "min_samples", 1)
    if isinstance(estimator, Estimator) and num_samples < least:
        raise EstimatorError(f"{name} needs num_samples >= {least}, got {num_samples}")
    if (isinstance(num_replicates, bool) or not isinstance(num_replicates, int)):
        raise EstimatorError(f"num_replicates must be an int, got {num_replicates!r}")
    if not (isinstance(false_positive_rate, (int, float)) and 0 < false_positive_rate < 1):
        raise EstimatorError(f"false_positive_rate must be in (0, 1), got {false_positive_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise EstimatorError(f"seed must be an int, got {seed!r}")
    check_target(target, num_samples, problem)
    least = minimum_replicates(problem.num_coordinates, false_positive_rate)
    if num_replicates < least:
        raise EstimatorError(
            f"num_replicates={num_replicates} is too few: below {least} replicates the check at "
            f"false-positive rate {false_positive_rate:g} over {problem.num_coordinates} "
            "coordinates misses, more than 10% of the time, a bias as large as one estimate's "
            f"standard deviation; use num_replicates >= {least}")


def _trial(name, estimator, problem: ReferenceProblem, num_samples, options) -> None:
    """One call on two replicates, before the real pass: the output's type, shape and values,
    and that its surrogate carries a gradient to q's parameters. The options are copied, so that
    state an estimator keeps (a moving average) is not moved by this call."""
    try:
        options = copy.deepcopy(options)
    except Exception:  # noqa: BLE001 - an option that cannot be copied is used as it is
        pass
    lam = {n: v.detach().expand(2, *v.shape).clone().requires_grad_(True)
           for n, v in problem.lam.items()}
    theta = {n: v.detach().expand(2, *v.shape).clone().requires_grad_(True)
             for n, v in problem.theta.items()}
    model, q = problem.build(lam, theta)
    where = f"{name} on problem {problem.name}"
    try:
        result = estimator(model, q, num_samples, **options)
    except EstimatorError:
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise EstimatorError(f"{where} ({problem.kind} q, {type(q).__name__}) failed: "
                             f"{type(error).__name__}: {first}") from error
    if not (isinstance(result, tuple) and len(result) == 2
            and all(torch.is_tensor(part) for part in result)):
        raise EstimatorError(f"{where}: must return ElboEstimate(elbo, surrogate), two tensors; "
                             f"got {type(result).__name__}")
    elbo, surrogate = result
    expected = tuple(q.batch_shape)
    for label, part in (("surrogate", surrogate), ("elbo", elbo)):
        if tuple(part.shape) != expected:
            raise EstimatorError(
                f"{where}: the {label} has shape {tuple(part.shape)} but q.batch_shape is "
                f"{expected}; return one value per batch entry (each is an independent "
                "problem), not a sum or mean over the batch")
        if not torch.isfinite(part).all():
            raise EstimatorError(f"{where}: the {label} is NaN or infinite for some batch entries")
    if not surrogate.requires_grad:
        raise EstimatorError(f"{where}: the surrogate carries no gradient (requires_grad is "
                             "False); return ElboEstimate(elbo, attach_gradient(elbo, term)) "
                             "with term carrying the estimator's gradient (estimators.base)")
    leaves = list(lam.values()) + list(theta.values())
    grads = torch.autograd.grad(surrogate.sum(), leaves, allow_unused=True)
    if all(g is None for g in grads[:len(lam)]):
        raise EstimatorError(
            f"{where}: the surrogate has no gradient with respect to q's parameters "
            f"({', '.join(problem.lam)}); build it from q's rsample or log_prob, or with "
            "attach_gradient(elbo, term) so that term carries the gradient")
    if any(g is not None and not torch.isfinite(g).all() for g in grads):
        raise EstimatorError(f"{where}: the gradient of the surrogate is NaN or infinite")


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def check_unbiased(estimator: Callable, problem, *, num_samples: int = 1,
                   num_replicates: int | None = None, false_positive_rate: float = 1e-3,
                   seed: int = 0, target: str | None = None, kinds=None,
                   **options) -> UnbiasednessReport:
    """Check that ``estimator`` is unbiased for the gradient of ``target`` on ``problem``.

    ``estimator`` is a registry :class:`~estimators.Estimator` or any callable
    ``(model, q, num_samples, **options) -> ElboEstimate``; ``problem`` a
    :class:`~estimators.testing.ReferenceProblem` or the name of one of
    :data:`~estimators.testing.REFERENCE_PROBLEMS`. ``target`` is "elbo" or "iwae" (the
    ``num_samples``-sample bound), by default the estimator's ``objective`` (a registry entry's),
    else "elbo". ``num_replicates`` defaults to 4000. The false-positive rate is split evenly
    across the problem's coordinates (Bonferroni; module docstring). ``seed`` seeds torch's
    global generator for the replicates; the caller's generator state is restored afterwards.
    ``kinds`` overrides the q kinds the estimator takes (default: its ``q_kinds``). Options are
    passed to every call of the estimator.

    Bad input raises :class:`~estimators.EstimatorError` in one line before any replicate is
    drawn. Returns an :class:`UnbiasednessReport`; ``report.passed`` is the verdict.
    """
    name = estimator_name(estimator)
    problem = get_problem(problem)
    kinds = _kinds(estimator, kinds)
    target = _target(estimator, target)
    num_replicates = DEFAULT_REPLICATES if num_replicates is None else num_replicates
    _check_arguments(name, estimator, problem, num_samples, num_replicates, false_positive_rate,
                     seed, kinds, target)
    with torch.random.fork_rng(devices=[]):
        _trial(name, estimator, problem, num_samples, options)
        exact = problem.exact(target, num_samples)
        torch.manual_seed(seed)
        grads = replicate_gradients(estimator, problem.build, problem.lam, problem.theta,
                                    num_replicates=num_replicates, num_samples=num_samples,
                                    **options)
    cutoff = threshold(problem.num_coordinates, false_positive_rate, num_replicates)
    extra = _power_quantile(num_replicates)
    coordinates = []
    for group, found in (("lambda", grads.lambda_), ("theta", grads.theta)):
        for parameter, values in found.items():
            eps = torch.finfo(values.dtype).eps
            values = values.detach().to(torch.float64)
            bad = ~torch.isfinite(values.reshape(num_replicates, -1)).all(1)
            if bad.any():
                raise EstimatorError(f"{name} on problem {problem.name}: the gradient of "
                                     f"{group}.{parameter} is NaN or infinite in {int(bad.sum())}"
                                     f" of {num_replicates} replicates")
            coordinates += _coordinates(group, parameter, values, exact.gradient[group][parameter],
                                        exact.error, cutoff, extra, eps)
    return UnbiasednessReport(name, problem.name, problem.kind, target, num_samples,
                              num_replicates, seed, false_positive_rate, cutoff,
                              tuple(coordinates))


def _coordinates(group, parameter, values, exact, exact_error, cutoff, extra, eps) -> list:
    """Each coordinate's statistics; ``eps`` is the machine epsilon of the estimator's own dtype."""
    count = values.shape[0]
    flat = values.reshape(count, -1)
    exact = torch.as_tensor(exact, dtype=torch.float64).reshape(-1)
    mean = flat.mean(0)
    se = flat.std(0) / math.sqrt(count)
    size = torch.maximum(exact.abs(), flat.abs().max(0).values)
    tolerance = exact_error + ROUNDING * eps * size
    shape = values.shape[1:]
    out = []
    for i in range(flat.shape[1]):
        index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), shape)) if shape else ()
        out.append(CoordinateCheck(group, parameter, index, float(exact[i]), float(mean[i]),
                                   float(se[i]), float(tolerance[i]), cutoff,
                                   float((cutoff + extra) * se[i] + tolerance[i])))
    return out


def assert_unbiased(estimator: Callable, problem, **kwargs) -> UnbiasednessReport:
    """:func:`check_unbiased`, raising ``AssertionError`` that names the worst coordinate, its
    z, the threshold and the false-positive rate when the check fails; the report otherwise."""
    report = check_unbiased(estimator, problem, **kwargs)
    if not report.passed:
        worst = report.worst
        failed = sum(c.rejected for c in report.coordinates)
        raise AssertionError(
            f"{report.estimator} is biased on {report.problem} ({report.target}, K = "
            f"{report.num_samples}, R = {report.num_replicates}, seed {report.seed}): "
            f"{failed} of {len(report.coordinates)} coordinates rejected; worst {worst.name}: "
            f"{_describe(worst)}, exact {worst.exact:+.6g}, threshold |z| > "
            f"{report.threshold:.2f} at false-positive rate {report.false_positive_rate:g} "
            f"(Bonferroni over {len(report.coordinates)} coordinates)\n{report.table()}")
    return report


# --------------------------------------------------------------------------------------------
# Every applicable problem
# --------------------------------------------------------------------------------------------


def applicable_problems(estimator, problems=None, *, kinds=None, target=None,
                        num_samples: int = 1) -> tuple[list, list]:
    """(problems the estimator applies to, [(problem name, why it is skipped), ...]): the
    problems of q kinds it takes (``kinds``, else its ``q_kinds``, else continuous only), and
    whose exact ``target`` is within reach at ``num_samples``."""
    name = estimator_name(estimator)
    kinds = _kinds(estimator, kinds) or ("continuous",)
    chosen = [get_problem(p) for p in (REFERENCE_PROBLEMS if problems is None else problems)]
    applicable, skipped = [], []
    for problem in chosen:
        if problem.kind not in kinds:
            skipped.append((problem.name, f"{problem.kind} q; {name} takes "
                                          f"{', '.join(kinds)}"))
        elif (target == "iwae" and problem.max_samples is not None
              and num_samples > problem.max_samples):
            skipped.append((problem.name, f"its exact {num_samples}-sample bound is out of reach"
                                          f" (enumeration; K <= {problem.max_samples})"))
        else:
            applicable.append(problem)
    return applicable, skipped


@dataclass(frozen=True)
class EstimatorReport:
    """The outcome of :func:`check_estimator`: one report per applicable problem and the
    problems skipped with the reason; ``str()`` is the table the command line prints."""

    estimator: str
    target: str
    num_samples: int
    num_replicates: int
    seed: int
    false_positive_rate: float
    reports: tuple
    skipped: tuple = field(default=())

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    def table(self) -> str:
        per_problem = self.false_positive_rate / max(1, len(self.reports))
        target = ("the ELBO" if self.target == "elbo"
                  else f"the {self.num_samples}-sample bound")
        head = (f"{self.estimator}: unbiased for {target}? K = {self.num_samples}, "
                f"R = {self.num_replicates}, seed {self.seed}\n"
                f"false-positive rate {self.false_positive_rate:g} for the whole run: "
                f"{per_problem:.3g} per problem, split evenly over its coordinates (Bonferroni); "
                f"detectable bias: the largest per-coordinate bias caught with probability "
                f"{POWER:.0%}")
        rows = [("problem", "kind", "coords", "worst |z|", "threshold", "detectable bias",
                 "verdict")]
        for r in self.reports:
            rows.append((r.problem, r.kind, str(len(r.coordinates)), f"{r.largest_z:.2f}",
                         f"{r.threshold:.2f}", f"{r.detectable_bias:.2g}",
                         "pass" if r.passed else f"FAIL ({r.worst.name})"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i in (0, 1, 6) else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        for problem, reason in self.skipped:
            lines.append(f"skipped {problem}: {reason}")
        failed = sum(not r.passed for r in self.reports)
        lines.append(f"{len(self.reports) - failed} passed, {failed} failed, "
                     f"{len(self.skipped)} skipped")
        return "\n".join([head, *lines])

    def __str__(self) -> str:
        return self.table()


def check_estimator(estimator: Callable, problems=None, *, kinds=None, target: str | None = None,
                    num_samples: int | None = None, num_replicates: int | None = None,
                    false_positive_rate: float = 1e-3, seed: int = 0,
                    **options) -> EstimatorReport:
    """:func:`check_unbiased` on every applicable problem (default: all of
    :data:`REFERENCE_PROBLEMS` of a kind the estimator takes). The false-positive rate is for
    the whole run: split evenly across the problems, then across each one's coordinates.
    ``num_samples`` defaults to the estimator's ``min_samples`` (1 for a plain callable)."""
    name = estimator_name(estimator)
    target = _target(estimator, target)
    if num_samples is None:
        num_samples = max(1, int(getattr(estimator, "min_samples", 1) or 1))
    num_replicates = DEFAULT_REPLICATES if num_replicates is None else num_replicates
    applicable, skipped = applicable_problems(estimator, problems, kinds=kinds, target=target,
                                              num_samples=num_samples)
    if not applicable:
        raise EstimatorError(f"no reference problem applies to {name} (q kinds "
                             f"{', '.join(_kinds(estimator, kinds) or ('continuous',))}); pass "
                             "kinds= with the kinds of q it takes")
    if not (isinstance(false_positive_rate, (int, float)) and 0 < false_positive_rate < 1):
        raise EstimatorError(f"false_positive_rate must be in (0, 1), got {false_positive_rate!r}")
    share = false_positive_rate / len(applicable)
    kinds = _kinds(estimator, kinds) or ("continuous",)
    # Every argument is checked on every problem before the first replicate is drawn.
    for problem in applicable:
        _check_arguments(name, estimator, problem, num_samples, num_replicates, share, seed,
                         kinds, target)
    reports = tuple(check_unbiased(estimator, problem, num_samples=num_samples,
                                   num_replicates=num_replicates, false_positive_rate=share,
                                   seed=seed, target=target, kinds=kinds, **options)
                    for problem in applicable)
    return EstimatorReport(name, target, num_samples, num_replicates, seed, false_positive_rate,
                           reports, tuple(skipped))
