"""Experiments: each study measures the estimators of :mod:`estimators` and draws its figures.

``python -m experiments`` lists the studies; see :mod:`experiments.__main__`.
"""

import importlib

# name -> module; modules are imported only when their study is asked for.
STUDIES = {
    "cost-functions": "experiments.cost_functions",
    "gmm-vi": "experiments.gmm_vi",
    "score-forms": "experiments.score_forms",
    "gmm-vae": "experiments.gmm_vae",
    "seed-ideas": "experiments.seed_ideas",
    "mnist-vae": "experiments.mnist_vae",
    "discrete": "experiments.discrete",
    "paper": "experiments.paper",
}


def available_studies() -> dict:
    """The studies whose modules exist, name -> module."""
    found = {}
    for name, module in STUDIES.items():
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    return found
