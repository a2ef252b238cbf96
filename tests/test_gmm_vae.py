"""The gmm-vae study: the VAE behind the estimator interface, replicated gradients, training."""

import json

import pytest
import torch

from estimators import ESTIMATORS
from estimators.targets import GaussianMixtureTarget
from experiments import gmm_vae
from experiments.__main__ import main
from experiments.replicated import replicated_vae_build
from conftest import z_threshold

DATA = GaussianMixtureTarget.ring()


def _batch(count, seed=0):
    return gmm_vae.sample_data(DATA, count, torch.Generator().manual_seed(seed))


def test_model_follows_the_estimator_shape_rules():
    torch.manual_seed(0)
    vae = gmm_vae.GaussianVAE(latent_dim=2, hidden=8)
    x = _batch(5)
    q = vae.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (2,)
    model = vae.bind(x)
    z = q.rsample((3,))
    assert model.log_joint(z).shape == (3, 5)
    assert torch.allclose(model.log_joint(z), model.prior.log_prob(z) + model.log_likelihood(z))
    for name, estimator in ESTIMATORS.items():
        if "continuous" not in estimator.q_kinds:
            continue  # the estimators of discrete latents: tests/test_discrete.py
        estimate = estimator(model, q, 2)
        assert estimate.surrogate.shape == (5,), name


def test_replicated_networks_give_each_replicate_its_own_plain_gradient():
    # Replicate r's gradient from the vmapped, replicated network equals the gradient of the plain
    # network evaluated with replicate r's noise: the wiring is right and replicates independent.
    torch.manual_seed(1)
    vae = gmm_vae.GaussianVAE(latent_dim=2, hidden=8)
    with torch.no_grad():
        for param in vae.parameters():
            param.add_(0.3 * torch.randn_like(param))  # replicates of different networks below
    x, num_samples, replicates = _batch(4), 3, 2
    lam = {n: p.detach().expand(replicates, *p.shape).clone().requires_grad_(True)
           for n, p in vae.encoder_parameters().items()}
    theta = {n: p.detach().expand(replicates, *p.shape).clone().requires_grad_(True)
             for n, p in vae.decoder_parameters().items()}
    with torch.no_grad():  # make the second replicate a different network
        for param in [*lam.values(), *theta.values()]:
            param[1].mul_(0.7)
    model, q = replicated_vae_build(vae, x)(lam, theta)
    assert q.batch_shape == (replicates, 4)
    z = q.rsample((num_samples,))
    noise = ((z - q.mean) / q.stddev).detach()
    objective = (model.log_joint(z) - q.log_prob(z)).mean(0).mean(-1)
    leaves = [*lam.values(), *theta.values()]
    grads = torch.autograd.grad(objective.sum(), leaves)
    for r in range(replicates):
        plain = gmm_vae.GaussianVAE(latent_dim=2, hidden=8)
        with torch.no_grad():
            for (name, param) in [*plain.encoder_parameters().items(),
                                  *plain.decoder_parameters().items()]:
                param.copy_({**lam, **theta}[name][r])
        q_plain = plain.posterior(x)
        z_plain = q_plain.mean + q_plain.stddev * noise[:, r]
        value = (plain.bind(x).log_joint(z_plain) - q_plain.log_prob(z_plain)).mean()
        names = [*plain.encoder_parameters(), *plain.decoder_parameters()]
        params = [*plain.encoder_parameters().values(), *plain.decoder_parameters().values()]
        expected = torch.autograd.grad(value, params)
        for name, want, got in zip(names, expected, grads):
            assert torch.allclose(got[r], want, atol=1e-10), name


def _train(sign: float, steps: int = 150, seed: int = 0):
    """Adam on sign x ELBO with the pathwise estimator; per-point held-out ELBOs before and after."""
    torch.manual_seed(seed)
    vae = gmm_vae.GaussianVAE(latent_dim=2, hidden=32)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    heldout = _batch(512, seed=100)
    generator = torch.Generator().manual_seed(seed + 1)

    def per_point():
        with torch.no_grad():
            q = vae.posterior(heldout)
            z = q.sample((16,))
            return (vae.bind(heldout).log_joint(z) - q.log_prob(z)).mean(0)

    before = per_point()
    for _ in range(steps):
        x = gmm_vae.sample_data(DATA, 128, generator)
        estimate = ESTIMATORS["pathwise"](vae.bind(x), vae.posterior(x), 4)
        optimizer.zero_grad()
        (-sign * estimate.surrogate.mean()).backward()
        optimizer.step()
    after = per_point()
    change = after - before
    return change.mean() / (change.std() / change.numel() ** 0.5)


@pytest.mark.statistical
def test_training_improves_the_heldout_elbo():
    # Paired z-test on held-out points: the ELBO rises; descending instead fails the same check.
    threshold = z_threshold(1)
    assert _train(+1.0) > threshold
    assert not _train(-1.0) > threshold


TINY = ["--set", "runs=2", "--set", "steps=4", "--set", "eval_every=2", "--set", "eval_points=64",
        "--set", "eval_num_samples=2", "--set", "likelihood_num_samples=4",
        "--set", "num_replicates=4", "--set", "diagnostic_batch=8", "--set", "grid_size=6",
        "--set", "density_prior_samples=16", "--set", "latent_points=32", "--set", "hidden=8",
        "--set", "batch_size=16"]


# Three estimators of the three kinds of state (none, a moving average, NVIL's network); every
# estimator trains a group in the test after this one.
SOME = ["--set", f"estimators=pathwise,score_function_ema,{gmm_vae.NVIL}"]


def test_end_to_end_writes_results_and_figures_then_redraws(tmp_path, monkeypatch):
    plot = gmm_vae.plot
    monkeypatch.setattr(gmm_vae, "plot", lambda *args: [])  # drawn once, by `figures` below
    assert main(["gmm-vae", "--quick", "--out", str(tmp_path), *TINY, *SOME]) == 0
    results = tmp_path / "results" / "gmm-vae-quick.json"
    assert results.exists()
    saved = json.loads(results.read_text())
    runs = saved["data"]["runs"]
    assert gmm_vae.NVIL in gmm_vae.summary(saved) and "paired differences" in gmm_vae.summary(saved)
    assert set(runs) == {"pathwise", "score_function_ema", gmm_vae.NVIL}
    for name, run in runs.items():  # two runs each: curves, probes and log p(x) per run
        assert len(run["elbo"]) == 2 and len(run["elbo"][0]) == 3, name
        assert len(run["log_likelihood"]) == 2 and all(len(p) == 2 for p in run["probes"])
    # every figure from the saved results alone
    monkeypatch.setattr(gmm_vae, "plot", plot)
    assert main(["figures", "--from", str(tmp_path)]) == 0
    for name in ("training", "gradients", "density", "latent"):
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"gmm-vae-{name}-quick.{suffix}").stat().st_size > 0


def test_unknown_estimator_fails_with_one_line_naming_it(tmp_path):
    with pytest.raises(SystemExit, match="unknown estimator.*nope"):
        main(["gmm-vae", "--quick", "--out", str(tmp_path), "--set", "estimators=nope"])


@pytest.mark.parametrize("name", gmm_vae.estimator_names())
def test_every_estimator_trains_a_group_of_runs(name):
    config = SMALL_CONFIG.replace(steps=2, eval_every=2, runs=2, diagnostic_fractions=(1.0,),
                                  num_replicates=2, diagnostic_batch=4)
    heldout, probe_x = _batch(16, seed=5), _batch(4, seed=6)
    record, group = gmm_vae.train(name, config, DATA, heldout, probe_x)
    assert not record["diverged"] and len(record["elbo"]) == 2
    assert all(torch.isfinite(torch.tensor(e)).all() for e in record["elbo"])
    assert len(record["probes"]) == 1 and len(record["probes"][0]) == 2
    first, second = group.run_vae(0), group.run_vae(1)  # two runs, two networks
    assert not torch.equal(first.encoder[0].weight, second.encoder[0].weight)


def _group_and_solos(name, config, runs=3):
    heldout, probe_x = _batch(32, seed=5), _batch(8, seed=6)
    _, group = gmm_vae.train(name, config.replace(runs=runs), DATA, heldout, probe_x,
                             probing=False)
    solos = [gmm_vae.train(name, config.replace(seed=config.seed + run, runs=1), DATA, heldout,
                           probe_x, probing=False)[1] for run in range(runs)]
    return group, solos


def _assert_runs_are_solo_runs(group, solos):
    for run, solo in enumerate(solos):
        for (name, a), b in zip(group.run_vae(run).state_dict().items(),
                                solo.run_vae(0).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"run {run}, {name}")


SMALL_CONFIG = gmm_vae.Config(steps=30, hidden=8, batch_size=16, num_samples=2, eval_every=30,
                              eval_points=16, eval_num_samples=2, seed=4)


@pytest.mark.parametrize("name", ["pathwise", "score_function_loo", gmm_vae.NVIL,
                                  "score_function_ema"])
def test_run_r_of_a_group_is_the_solo_run_of_seed_s_plus_r(name):
    _assert_runs_are_solo_runs(*_group_and_solos(name, SMALL_CONFIG))


def test_a_group_whose_runs_share_their_noise_fails_the_same_check(monkeypatch):
    # The negative test: every run of the group draws run 0's noise.
    from experiments.replicated import RunGenerators

    normal = RunGenerators.normal

    def shared(self, shape, dtype, dim=0):
        draws = normal(self, shape, dtype, dim)
        return draws.narrow(dim, 0, 1).expand_as(draws).clone()

    monkeypatch.setattr(RunGenerators, "normal", shared)  # a solo run's noise is its own still
    coupled, solos = _group_and_solos("pathwise", SMALL_CONFIG)
    with pytest.raises(AssertionError, match="run 1"):
        _assert_runs_are_solo_runs(coupled, solos)
