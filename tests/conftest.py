"""Shared test settings.

Statistical checks
------------------
Every Monte Carlo check in this suite runs with a fixed seed and rejects a correct estimator with
probability at most ``FALSE_POSITIVE_RATE`` *in total*: each module splits it evenly across its
checks and coordinates (Bonferroni), see :func:`z_threshold`. If a correct change ever trips one,
bump that test's seed once, never twice. A deliberately wrong estimator must fail the same check.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from scipy import stats

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("EXPERIMENTS_NO_PROGRESS", "1")
# The suite runs one worker per core (pytest -n auto, pyproject.toml); each worker's torch uses
# one thread, so that workers do not wait for each other's thread pools. A test may change it;
# the fixture below puts it back.
torch.set_num_threads(1)

# The probability that the whole suite's statistical checks reject a correct implementation.
FALSE_POSITIVE_RATE = 1e-3
# An upper bound on the number of statistical checks (tests marked ``statistical``) the suite runs;
# each spends a 1/STATISTICAL_BUDGET share. The suite has fewer (73 when this was written), so
# its false-positive rate is below FALSE_POSITIVE_RATE; pytest_collection_modifyitems below stops
# a run whose marked tests outnumber the bound.
STATISTICAL_BUDGET = 1000


def z_threshold(num_comparisons: int, share: float = 1.0 / STATISTICAL_BUDGET) -> float:
    """Two-sided |z| above which ``num_comparisons`` simultaneous z-tests reject.

    ``share`` is the fraction of FALSE_POSITIVE_RATE that this group of comparisons may spend.
    """
    alpha = FALSE_POSITIVE_RATE * share / num_comparisons
    return float(stats.norm.isf(alpha / 2))


def pytest_collection_modifyitems(config, items):
    checks = sum(1 for item in items if item.get_closest_marker("statistical"))
    if checks > STATISTICAL_BUDGET:
        raise pytest.UsageError(f"{checks} statistical checks exceed STATISTICAL_BUDGET = "
                                f"{STATISTICAL_BUDGET} (tests/conftest.py): raise the budget, "
                                "which lowers every check's share of FALSE_POSITIVE_RATE")


# Identities: hypothesis draws parameters, deterministically and with no example database.
settings.register_profile("project", derandomize=True, database=None, deadline=None,
                          max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


@pytest.fixture(autouse=True)
def _float64_and_threads():
    """float64 by default in every test; torch's dtype and thread count as they were after it."""
    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
    torch.set_num_threads(threads)
