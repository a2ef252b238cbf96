"""Monte Carlo gradient estimators of the ELBO behind one interface.

Every estimator is a callable ``est(model, q, num_samples, **options) -> ElboEstimate``;
:data:`ESTIMATORS` maps each name to one, with the facts needed to choose it. See
:mod:`estimators.base` for the shape rules and the surrogate contract.
"""

from .base import (ElboEstimate, Estimator, EstimatorError, FactorisedModel, Model,
                   attach_gradient, set_validation)
from .baselines import EmaBaseline
from .discrete import (ANY_Q, BERNOULLI, CATEGORICAL, MIXTURE, BernoulliWithNoise,
                       RelaxControlVariate, arm, disarm, enumeration, gumbel_softmax, q_kind,
                       rebar, relax, straight_through)
from .families import (ChiSquare, InverseCDF, LocationScale, NormalWithNoise,
                       full_covariance_gaussian)
from .iwae import dreg, iwae
from .measure_valued import measure_valued, measure_valued_coupled
from .pathwise import pathwise, pathwise_analytic_kl, stl
from .score_function import (score_function, score_function_autodiff, score_function_ema,
                             score_function_loo, score_function_optimal)
from .vimco import vimco

__all__ = [
    "ESTIMATORS", "ElboEstimate", "Estimator", "EstimatorError", "Model", "FactorisedModel",
    "EmaBaseline", "attach_gradient", "set_validation",
    "score_function", "score_function_ema", "score_function_loo", "score_function_optimal",
    "pathwise", "pathwise_analytic_kl", "stl", "iwae", "dreg", "score_function_autodiff",
    "measure_valued", "measure_valued_coupled", "vimco",
    "enumeration", "gumbel_softmax", "straight_through", "rebar", "relax", "arm", "disarm",
    "RelaxControlVariate", "BernoulliWithNoise", "q_kind",
    "LocationScale", "InverseCDF", "ChiSquare", "full_covariance_gaussian", "NormalWithNoise",
]

_SCORE = "q.log_prob differentiable in its parameters (any q, discrete too)"
_PATH = "q.rsample; log p(x, z) differentiable in z"
_GAUSSIAN = "q = Independent(Normal(loc, scale), 1); any log p(x, z); 4D extra log p per sample"
_RELAXED = ("q = Independent(Bernoulli(logits), 1) or one-hot categorical; log p(x, z) defined "
            "and differentiable at relaxed z")
_BERNOULLI = "q = Independent(Bernoulli(logits), 1); num_samples even (K/2 antithetic pairs); any log p(x, b)"
_DISCRETE = (BERNOULLI, CATEGORICAL)

ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in [
        Estimator("score_function", score_function,
                  "λ: (1/K) Σ_k f(z_k) ∇_λ log q(z_k), f = log p(x,z) − log q(z); θ: (1/K) Σ_k ∇_θ log p(x, z_k) (sec. 5.1, eq. 8)",
                  _SCORE, "elbo", True, "Williams 1992", q_kinds=ANY_Q),
        Estimator("score_function_ema", score_function_ema,
                  "as score_function with f(z_k) − b, b = moving average of past f", _SCORE + "; state kept across steps",
                  "elbo", True, "Mnih & Gregor 2014", q_kinds=ANY_Q),
        Estimator("score_function_loo", score_function_loo,
                  "as score_function with f(z_k) − b_k, b_k = mean_{j≠k} f(z_j)", _SCORE + "; num_samples >= 2", "elbo", True,
                  "Kool et al. 2019", min_samples=2, q_kinds=ANY_Q),
        Estimator("score_function_optimal", score_function_optimal,
                  "as score_function with b_k = Σ_{j≠k} f_j ‖s_j‖² / Σ_{j≠k} ‖s_j‖², s = ∇_λ log q",
                  _SCORE + "; num_samples >= 2", "elbo", True,
                  "Mohamed et al. 2020, sec. 7", min_samples=2, q_kinds=ANY_Q),
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
        # Appended, not inserted, so that every older entry keeps its colour (experiments.style).
        Estimator("score_function_autodiff", score_function_autodiff,
                  "as score_function plus ∇f(z_k) at fixed z, i.e. −(1/K) Σ_k ∇_λ log q(z_k) (mean zero): what autograd of f gives",
                  _SCORE, "elbo", True, "Schulman et al. 2015", q_kinds=ANY_Q),
        Estimator("measure_valued", measure_valued,
                  "∂/∂μ_d: (1/K) Σ_k [f(z_k^{d+}) − f(z_k^{d−})] / (σ_d √(2π)), z_d^± = μ_d ± σ_d w, w ~ Weibull(√2, 2); "
                  "∂/∂σ_d: (1/K) Σ_k [f(z_d = μ_d + σ_d m) − f(z_d = μ_d + σ_d n)] / σ_d, m double-sided Maxwell, n ~ N(0, 1)",
                  _GAUSSIAN, "elbo", True, "Mohamed et al. 2020, sec. 6", needs_diagonal_gaussian=True,
                  extra_randomness=True),
        Estimator("measure_valued_coupled", measure_valued_coupled,
                  "as measure_valued, each pair from one variate: the same w for z_d^+ and z_d^−, n = u m, u ~ U(0, 1)",
                  _GAUSSIAN, "elbo", True, "Mohamed et al. 2020, sec. 6", needs_diagonal_gaussian=True,
                  extra_randomness=True),
        Estimator("vimco", vimco,
                  "Σ_k (L − L_{−k}) ∇log q(z_k) + Σ_k w̃_k ∇log w_k, L = log (1/K) Σ_j w_j, L_{−k}: w_k → (Π_{j≠k} w_j)^{1/(K−1)}",
                  _SCORE + "; num_samples >= 2", "iwae", True, "Mnih & Rezende 2016", min_samples=2,
                  q_kinds=ANY_Q),
        # The estimators of discrete latents (estimators.discrete): none takes a continuous q.
        Estimator("enumeration", enumeration,
                  "Σ_b q(b) [log p(x, b) − log q(b)] over all 2^D (C^D) outcomes, differentiated exactly; a mixture q: "
                  "Σ_c π_c (1/K) Σ_k ∇f(g_c(ε_ck)), reparameterized within each component",
                  "a discrete q of at most max_outcomes (4096) outcomes, or MixtureSameFamily with rsample-able components",
                  "elbo", True, "exact marginalisation", q_kinds=(*_DISCRETE, MIXTURE)),
        Estimator("gumbel_softmax", gumbel_softmax,
                  "(1/K) Σ_k ∇f(y_k), y = σ((ℓ + logit u)/τ) or softmax((log π + G)/τ), G Gumbel; f = log p(x, y) − log q(y) "
                  "at relaxed y, q's parameters held fixed; option temperature τ (0.5)",
                  _RELAXED + "; or a mixture's component choice", "elbo", False,
                  "Jang et al. 2017; Maddison et al. 2017", q_kinds=(*_DISCRETE, MIXTURE),
                  needs_logits=True),
        Estimator("straight_through", straight_through,
                  "as gumbel_softmax with f at b + y − ⊥(y), b = H(ℓ + logit u) (argmax): the value at the discrete b, "
                  "the gradient through y; option temperature τ (0.5)",
                  _RELAXED, "elbo", False, "Bengio et al. 2013; Jang et al. 2017", q_kinds=_DISCRETE,
                  needs_logits=True),
        Estimator("rebar", rebar,
                  "λ: (1/K) Σ_k [f(b_k) − c(z̃_k)] ∇log q(b_k) + ∇c(z_k) − ∇c(z̃_k), c(z) = η f(σ_τ(z)), b = H(z), "
                  "z̃ ~ p(z ∣ b); θ: (1/K) Σ_k ∇_θ log p(x, b_k); options temperature τ (0.5), eta η (1)",
                  _RELAXED, "elbo", True, "Tucker et al. 2017", q_kinds=_DISCRETE, needs_logits=True),
        Estimator("relax", relax,
                  "as rebar with c(z) = η f(σ_τ(z)) + r_ρ(z), r a network; η, τ, ρ trained by the same backward pass "
                  "to lower Σ ‖ĝ_logits‖², the gradient variance",
                  _RELAXED + "; state=RelaxControlVariate kept across steps", "elbo", True,
                  "Grathwohl et al. 2018", q_kinds=_DISCRETE, needs_logits=True),
        Estimator("arm", arm,
                  "∂/∂ℓ_d: (2/K) Σ_p [f(b_p) − f(b̃_p)] (½ − u_pd), b = 1[u < σ(ℓ)], b̃ = 1[u > σ(−ℓ)], u ~ U(0, 1)^D",
                  _BERNOULLI, "elbo", True, "Yin & Zhou 2019", min_samples=2, q_kinds=(BERNOULLI,)),
        Estimator("disarm", disarm,
                  "∂/∂ℓ_d: (2/K) Σ_p ½ [f(b_p) − f(b̃_p)] (−1)^{b̃_pd} 1[b_pd ≠ b̃_pd] σ(|ℓ_d|), b, b̃ as arm",
                  _BERNOULLI, "elbo", True, "Dong, Mnih & Tucker 2020", min_samples=2,
                  q_kinds=(BERNOULLI,)),
    ]
}
