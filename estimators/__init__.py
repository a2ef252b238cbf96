"""Monte Carlo gradient estimators of the ELBO behind one interface.

Every estimator is a callable ``est(model, q, num_samples, **options) -> ElboEstimate``;
:data:`ESTIMATORS` maps each name to one, with the facts needed to choose it. See
:mod:`estimators.base` for the shape rules and the surrogate contract.
"""

from .base import (ElboEstimate, Estimator, EstimatorError, FactorisedModel, Model,
                   attach_gradient, set_validation)
from .baselines import EmaBaseline
from .families import (ChiSquare, InverseCDF, LocationScale, NormalWithNoise,
                       full_covariance_gaussian)
from .iwae import dreg, iwae
from .pathwise import pathwise, pathwise_analytic_kl, stl
from .score_function import (score_function, score_function_ema, score_function_loo,
                             score_function_optimal)

__all__ = [
    "ESTIMATORS", "ElboEstimate", "Estimator", "EstimatorError", "Model", "FactorisedModel",
    "EmaBaseline", "attach_gradient", "set_validation",
    "score_function", "score_function_ema", "score_function_loo", "score_function_optimal",
    "pathwise", "pathwise_analytic_kl", "stl", "iwae", "dreg",
    "LocationScale", "InverseCDF", "ChiSquare", "full_covariance_gaussian", "NormalWithNoise",
]

_SCORE = "q.log_prob differentiable in its parameters (any q, discrete too)"
_PATH = "q.rsample; log p(x, z) differentiable in z"

ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in [
        Estimator("score_function", score_function,
                  "(1/K) Σ_k f(z_k) ∇log q(z_k) + ∇f at fixed z, f = log p(x,z) − log q(z) (sec. 5.1)", _SCORE, "elbo", True,
                  "Williams 1992"),
        Estimator("score_function_ema", score_function_ema,
                  "as score_function with f(z_k) − b, b = moving average of past f", _SCORE + "; state kept across steps",
                  "elbo", True, "Mnih & Gregor 2014"),
        Estimator("score_function_loo", score_function_loo,
                  "as score_function with f(z_k) − b_k, b_k = mean_{j≠k} f(z_j)", _SCORE + "; num_samples >= 2", "elbo", True,
                  "Kool et al. 2019", min_samples=2),
        Estimator("score_function_optimal", score_function_optimal,
                  "as score_function with b_k = Σ_{j≠k} f_j ‖s_j‖² / Σ_{j≠k} ‖s_j‖², s = ∇_λ log q",
                  _SCORE + "; num_samples >= 2", "elbo", True,
                  "Mohamed et al. 2020, sec. 7", min_samples=2),
        Estimator("pathwise", pathwise, "(1/K) Σ_k ∇[log p(x, g(ε_k)) − log q(g(ε_k))], eq. (4) (sec. 5.2)",
                  _PATH, "elbo", True, "Kingma & Welling 2014", needs_rsample=True),
        Estimator("pathwise_analytic_kl", pathwise_analytic_kl,
                  "(1/K) Σ_k ∇log p(x ∣ g(ε_k)) − ∇KL(q ‖ p(z)), eq. (6)",
                  _PATH + "; prior, log_likelihood, a registered KL pair", "elbo", True,
                  "Kingma & Welling 2014", needs_rsample=True, needs_factorised=True),
        Estimator("stl", stl, "(1/K) Σ_k ∇[log p(x, g(ε_k)) − log q_⊥(g(ε_k))], q_⊥ with λ held fixed",
                  _PATH, "elbo", True, "Roeder et al. 2017", needs_rsample=True),
        Estimator("iwae", iwae, "∇ log (1/K) Σ_k w_k, w_k = p(x, g(ε_k)) / q(g(ε_k))", _PATH,
                  "iwae", True, "Burda et al. 2016", needs_rsample=True),
        Estimator("dreg", dreg, "λ: Σ_k w̃_k² (∂log w_k/∂z_k)(∂z_k/∂λ); θ: Σ_k w̃_k ∇_θ log w_k",
                  _PATH, "iwae", True, "Tucker et al. 2019", needs_rsample=True),
    ]
}
