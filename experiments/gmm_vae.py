"""gmm-vae: a small VAE on the eight-Gaussians ring, trained with every ELBO gradient estimator.

Data x in R^2 come from :meth:`estimators.targets.GaussianMixtureTarget.ring` (eight Gaussians on
a circle of radius 3). The VAE has a 2-D latent z with the seed's section 6 choices: prior
N(0, I), Gaussian encoder q(z | x) (an MLP gives its mean and scale: lambda), Gaussian decoder
p(x | z) (an MLP gives its mean; one learned log-scale per coordinate: theta).

Each estimator of :data:`estimators.ESTIMATORS` trains a group of ``runs`` runs, one group as
one network with stacked parameters (:func:`experiments.replicated.stack_modules`): run r of
every estimator starts from the same initialisation and sees the same data stream (both from
seed s + r), at the same budget (steps, minibatch, samples per point), so estimators are
compared run for run, and every number has a spread over runs. Also trained:
"score_function+nvil", the score function with NVIL's learned, input-dependent baseline b(x)
(Mnih & Gregor 2014), a small MLP per run trained by the same backward pass (the ``baseline=``
tensor option of :func:`estimators.score_function`).

Recorded, per run: the ELBO of held-out data against steps and wall-clock time; at several points
of training, the variance and signal-to-noise ratio of the encoder (lambda) and decoder (theta)
gradients, from R independent gradient estimates computed in one vectorised pass (the network
parameters replicated R times, :func:`torch.func.functional_call` under :func:`torch.func.vmap`,
then :func:`estimators.diagnostics.replicate_gradients`) on the run's own parameters; the
log-likelihood of held-out data. Run 0 of each group also gives the learned density and the
latent space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Independent, Normal

from estimators import EmaBaseline, NormalWithNoise
from estimators.base import log_mean_exp
from estimators.diagnostics import batch_mean, group_summary, replicate_gradients
from estimators.targets import GaussianMixtureTarget

from .common import StudyConfig, Timer, progress, save_figure, study_device
# The helpers shared with experiments.mnist: NVIL's name, the measurement's options, R copies of
# a VAE as one network, per-run random streams, the guard of non-finite runs.
from .replicated import (NVIL, RunGenerators, RunGuard, estimator_for, estimator_names,
                         probe_options, replicated_vae_build, stack_modules, stream_seed,
                         unstack_module)

NAME = "gmm-vae"
SUMMARY = "a 2-D VAE on eight Gaussians trained with every estimator: ELBO, gradient SNR, density"


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    runs: int = 5  # independent runs of each estimator, trained as one group (seeds seed .. seed + runs - 1)
    hidden: int = 64  # width of the two hidden layers of encoder, decoder and NVIL baseline
    latent_dim: int = 2
    steps: int = 3000  # Adam steps, the same for every estimator
    batch_size: int = 128  # data points per step, fresh from the ring each step
    num_samples: int = 4  # K: samples of z per data point per step
    learning_rate: float = 3e-3
    eval_every: int = 100  # steps between held-out ELBO evaluations
    eval_points: int = 2048  # held-out data points
    eval_num_samples: int = 16  # samples per point of the held-out ELBO estimate
    likelihood_num_samples: int = 256  # K of the importance-weighted log-likelihood estimate
    diagnostic_fractions: tuple = (0.0, 0.1, 0.3, 1.0)  # where in training gradients are probed
    diagnostic_batch: int = 64  # data points of the probed minibatch
    num_replicates: int = 256  # R independent gradient estimates per probe
    grid_size: int = 80  # density estimate on a grid_size^2 grid over [-grid_limit, grid_limit]^2
    grid_limit: float = 5.0
    density_prior_samples: int = 8192  # p(x) on the grid = mean of p(x|z) over these z ~ p(z)
    latent_points: int = 1000  # points drawn for the latent-space picture
    estimators: tuple = ()  # names to run (default: the whole registry plus score_function+nvil)

    # CPU only (networks 64 wide on 2-D points): --device cuda is refused before any work
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, runs=3, steps=250, eval_every=25, eval_points=1024,
                   diagnostic_fractions=(0.0, 1.0), num_replicates=32,
                   likelihood_num_samples=64, grid_size=50, density_prior_samples=2048,
                   latent_points=500)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class GaussianVAE(nn.Module):
    """Prior N(0, I); q(z|x) = N(mu(x), diag s(x)^2); p(x|z) = N(m(z), diag exp(2 log_scale))."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([data_dim, hidden, hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, hidden, hidden, data_dim])
        self.decoder_log_scale = nn.Parameter(torch.zeros(data_dim))

    def encoder_parameters(self) -> dict[str, torch.Tensor]:
        """lambda: every tensor q(z|x) depends on."""
        return {f"encoder.{n}": p for n, p in self.encoder.named_parameters()}

    def decoder_parameters(self) -> dict[str, torch.Tensor]:
        """theta: every tensor p(x, z) depends on."""
        params = {f"decoder.{n}": p for n, p in self.decoder.named_parameters()}
        params["decoder_log_scale"] = self.decoder_log_scale
        return params

    def posterior(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Independent:
        """q(z | x); with ``noise``, a q whose one draw is that standard noise."""
        return posterior_from_output(self.encoder(x), noise)

    def bind(self, x: torch.Tensor) -> "BoundVAE":
        return BoundVAE(x, self.decoder, self.decoder_log_scale, self.latent_dim)


def posterior_from_output(output: torch.Tensor, noise: torch.Tensor | None = None) -> Independent:
    loc, pre_scale = output.chunk(2, dim=-1)
    # softplus keeps the scale positive without the exponential's blow-ups early in training
    scale = nn.functional.softplus(pre_scale) + 1e-4
    return Independent(Normal(loc, scale) if noise is None else NormalWithNoise(loc, scale, noise),
                       1)


def standard_prior(latent_dim: int, like: torch.Tensor) -> Independent:
    zeros = torch.zeros(latent_dim, dtype=like.dtype, device=like.device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


class BoundVAE:
    """The VAE with its minibatch x (B, 2) fixed: the ``model`` argument of every estimator.

    ``log_joint(z)`` maps z of shape (S, B, latent) to (S, B); ``decode`` is the decoder network
    (any function of z that returns the decoder mean).
    """

    def __init__(self, x, decode, log_scale, latent_dim):
        self.x, self.decode, self.log_scale, self.latent_dim = x, decode, log_scale, latent_dim

    @property
    def prior(self) -> Independent:
        return standard_prior(self.latent_dim, self.x)

    def observation(self, z: torch.Tensor) -> Independent:
        return Independent(Normal(self.decode(z), self.log_scale.exp()), 1)

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        return self.observation(z).log_prob(self.x)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z) + self.log_likelihood(z)


# --------------------------------------------------------------------------------------------
# Training and measurements
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def heldout_elbo(vae: GaussianVAE, x: torch.Tensor, num_samples: int, runs: int | None = None):
    """The ELBO averaged over held-out points, num_samples pathwise samples per point: a float,
    or for a stacked group of ``runs`` runs a (runs,) tensor, one per run."""
    if runs is not None:
        x = x.unsqueeze(0).expand(runs, *x.shape)
    q = vae.posterior(x)
    z = q.sample((num_samples,))
    values = (vae.bind(x).log_joint(z) - q.log_prob(z)).mean(0)
    return values.mean(-1) if runs is not None else values.mean().item()


@torch.no_grad()
def log_likelihood(vae: GaussianVAE, x: torch.Tensor, num_samples: int, chunk: int = 1024):
    """log p(x) per point by the importance-weighted bound with q as proposal (Burda et al. 2016)."""
    values = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]
        q = vae.posterior(part)
        z = q.sample((num_samples,))
        values.append(log_mean_exp(vae.bind(part).log_joint(z) - q.log_prob(z), 0))
    return torch.cat(values)


@torch.no_grad()
def prior_density(vae: GaussianVAE, x: torch.Tensor, num_samples: int, chunk: int = 512):
    """log p(x) = log mean_j p(x | z_j), z_j ~ p(z): unbiased for p(x), smooth over a grid.

    Off the data, the encoder is a poor proposal and importance weighting gives spikes; with a
    2-D latent, plain prior samples shared by every grid point are the steadier estimate.
    """
    z = standard_prior(vae.latent_dim, x).sample((num_samples,))
    observation = vae.bind(x).observation(z.unsqueeze(1))  # batch (num_samples, 1)
    values = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]  # (C, 2) against (num_samples, 1, 2)
        values.append(log_mean_exp(observation.log_prob(part), 0))
    return torch.cat(values)


def probe(name: str, vae: GaussianVAE, x: torch.Tensor, config: Config, options: dict) -> dict:
    """Variance and SNR of encoder and decoder gradients from R replicates, one vectorised pass.

    NVIL's baseline is used detached and the EMA state copied: probing must not move training's
    (:func:`experiments.replicated.probe_options`).
    """
    options = probe_options(name, x, options)
    lam = {n: p.detach() for n, p in vae.encoder_parameters().items()}
    theta = {n: p.detach() for n, p in vae.decoder_parameters().items()}
    grads = replicate_gradients(batch_mean(estimator_for(name)), replicated_vae_build(vae, x),
                                lam, theta, num_replicates=config.num_replicates,
                                num_samples=config.num_samples, **options)
    return {"encoder": group_summary(grads.lambda_), "decoder": group_summary(grads.theta)}


class Group:
    """The ``runs`` runs of one estimator as one network: run r built under seed s + r."""

    def __init__(self, name: str, config: Config, runs: int):
        self.name, self.runs = name, runs
        seeds = [config.seed + run for run in range(runs)]
        vaes, baselines = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            vaes.append(GaussianVAE(latent_dim=config.latent_dim, hidden=config.hidden))
            if name == NVIL:
                baselines.append(mlp([2, config.hidden, 1]))
        self.template = vaes[0]
        self.vae = stack_modules(vaes)
        self.baseline_template = baselines[0] if baselines else None
        self.baseline = stack_modules(baselines) if baselines else None
        self.ema = EmaBaseline(batch_dims=1) if name == "score_function_ema" else None
        # Each run's data stream and noise, from its own seed: run r of every estimator sees the
        # same points.
        self.data_streams = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
        self.noise = RunGenerators([stream_seed(seed, "gmm-vae noise") for seed in seeds])

    def parameters(self) -> list:
        return [*self.vae.parameters(), *(self.baseline.parameters() if self.baseline else [])]

    def state(self) -> list:
        """Every tensor of the runs' state that a non-finite step must not keep."""
        tensors = self.parameters()
        if self.ema is not None and self.ema.value is not None:
            tensors.append(self.ema.value)
        return tensors

    def run_vae(self, run: int) -> GaussianVAE:
        return unstack_module(self.vae, self.template, run)

    def options(self, x: torch.Tensor, run: int | None = None) -> dict:
        """The estimator's options on the runs' x (R, B, 2), or on run ``run``'s plain x (B, 2)."""
        if self.baseline is not None:
            if run is None:
                return {"baseline": self.baseline(x).squeeze(-1)}
            own = unstack_module(self.baseline, self.baseline_template, run)
            return {"baseline": own(x).squeeze(-1)}
        if self.ema is not None:
            if run is None:
                return {"state": self.ema}
            own = EmaBaseline(self.ema.decay)
            own.value = None if self.ema.value is None else self.ema.value[run, 0].clone()
            return {"state": own}
        return {}


def train(name: str, config: Config, data: GaussianMixtureTarget, heldout: torch.Tensor,
          probe_x: torch.Tensor, runs: int | None = None, probing: bool = True
          ) -> tuple[dict, Group]:
    """One estimator's group of runs: run r starts from seed s + r's initialisation and data.

    A run whose loss or parameters turn non-finite is frozen at its last finite state and named
    in ``record["diverged"]``; the others go on. ``probing`` False skips the gradient probes (the
    speed benchmark).
    """
    runs = runs or config.runs
    group = Group(name, config, runs)
    optimizer = torch.optim.Adam(group.parameters(), lr=config.learning_rate)
    estimator = estimator_for(name)
    guard = RunGuard(group.state, runs, "cpu")
    probe_steps = sorted({int(round(f * config.steps)) for f in config.diagnostic_fractions})
    record = {"step": [], "seconds": [], "elbo": [], "probe_step": [], "probes": []}
    elapsed, durations = 0.0, []
    step_count = torch.zeros(1, dtype=torch.int64)
    for step in range(config.steps + 1):
        if step % config.eval_every == 0 or step == config.steps:
            record["step"].append(step)
            record["seconds"].append(elapsed)
            record["elbo"].append(heldout_elbo(group.vae, heldout, config.eval_num_samples,
                                               runs=runs).tolist())
        if probing and step in probe_steps:
            record["probe_step"].append(step)
            record["probes"].append([probe(name, group.run_vae(run), probe_x, config,
                                           group.options(probe_x, run)) for run in range(runs)])
        if step == config.steps:
            break
        with Timer() as timer:
            x = torch.stack([sample_data(data, config.batch_size, stream)
                             for stream in group.data_streams])
            noise = group.noise.normal((config.num_samples, config.batch_size, config.latent_dim),
                                       x.dtype, dim=1)
            guard.snapshot()
            estimate = estimator(group.vae.bind(x), group.vae.posterior(x, noise),
                                 config.num_samples, **group.options(x))
            loss = -estimate.surrogate.mean(-1)
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
            step_count += 1
            guard.keep(loss.detach(), step_count)
        elapsed += timer.seconds
        durations.append(timer.seconds)
    record["elbo"] = np.asarray(record["elbo"]).T.tolist()  # (runs, evaluations)
    bad = guard.first_bad.tolist()
    record["diverged"] = [{"run": run, "step": at} for run, at in enumerate(bad) if at >= 0]
    record["seconds_per_step"] = elapsed / config.steps
    # The median step is robust to other processes taking the CPU for a while.
    record["median_step_seconds"] = float(np.median(durations))
    return record, group


def sample_data(data: GaussianMixtureTarget, count: int, generator: torch.Generator):
    """Points from the mixture, drawn from a generator of their own (the same stream for every
    run): a component by its weight, then its Gaussian, mu_k + s_k e."""
    weights = torch.softmax(data.logits, -1)
    component = torch.multinomial(weights, count, replacement=True, generator=generator)
    noise = torch.randn(count, data.locs.shape[-1], generator=generator, dtype=data.locs.dtype)
    x = data.locs[component] + data.scales[component] * noise
    return x.to(torch.get_default_dtype())


def validate(config: Config) -> None:
    """Refuse, with one line naming the field, a config the study cannot run."""
    unknown = [n for n in config.estimators if n not in estimator_names()]
    problems = [
        (bool(unknown), f"unknown estimator(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(estimator_names())}"),
        (config.steps < 1, f"steps must be >= 1, got {config.steps}"),
        (config.runs < 1, f"runs must be >= 1 (2 or more give a spread), got {config.runs}"),
        (config.eval_every < 1, f"eval_every must be >= 1, got {config.eval_every}"),
        (config.batch_size < 1 or config.diagnostic_batch < 1, "batch sizes must be >= 1"),
        (config.num_samples < 2, "num_samples must be >= 2 (score_function_loo and "
                                 f"score_function_optimal need two), got {config.num_samples}"),
        (config.num_replicates < 2, f"num_replicates must be >= 2 to estimate a variance, "
                                    f"got {config.num_replicates}"),
        (config.hidden < 1 or config.latent_dim < 1, "hidden and latent_dim must be >= 1"),
        (config.learning_rate <= 0, f"learning_rate must be positive, got {config.learning_rate}"),
        (any(not 0 <= f <= 1 for f in config.diagnostic_fractions),
         f"diagnostic_fractions must lie in [0, 1], got {config.diagnostic_fractions}"),
        (config.grid_size < 2 or config.grid_limit <= 0, "grid_size must be >= 2, grid_limit > 0"),
        (min(config.eval_points, config.eval_num_samples, config.likelihood_num_samples,
             config.density_prior_samples, config.latent_points) < 1,
         "evaluation sizes must be >= 1"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: gmm-vae: {message}")


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    validate(config)
    names = list(config.estimators) or estimator_names()
    data = GaussianMixtureTarget.ring(dtype=torch.float64)
    generator = torch.Generator().manual_seed(config.seed + 2)
    heldout = sample_data(data, config.eval_points, generator)
    probe_x = sample_data(data, config.diagnostic_batch, generator)
    latent_x = sample_data(data, config.latent_points, generator)
    # Colour each point by the component most likely to have produced it (neighbouring
    # components are 4.6 standard deviations apart, so this is nearly always the true one).
    weights = data.distribution.component_distribution.log_prob(latent_x.double().unsqueeze(-2))
    labels = weights.argmax(-1)
    axis = torch.linspace(-config.grid_limit, config.grid_limit, config.grid_size)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    data_entropy = -data.log_joint(heldout.double()).mean().item()

    runs = {}
    for name in progress(names, desc="gmm-vae: estimators"):
        record, group = train(name, config, data, heldout, probe_x)
        with torch.no_grad():
            vaes = [group.run_vae(run) for run in range(group.runs)]
            record["log_likelihood"] = [
                log_likelihood(vae, heldout, config.likelihood_num_samples).mean().item()
                for vae in vaes]
            # Pictures of run 0 only: four decimals keep the results file small.
            record["grid_log_density"] = prior_density(
                vaes[0], grid, config.density_prior_samples).reshape(
                config.grid_size, config.grid_size).double().round(decimals=4)
            record["latent_means"] = vaes[0].posterior(latent_x).mean.double().round(decimals=4)
        runs[name] = record
    return {
        "names": names, "runs": runs, "data_entropy": data_entropy,
        "objectives": {n: estimator_for(n).objective for n in names},
        "heldout_sample": heldout[:500].double().round(decimals=4), "grid_axis": axis,
        "latent_labels": labels,
        "data_grid_log_density": data.log_joint(grid.double()).reshape(
            config.grid_size, config.grid_size).round(decimals=4),
        "num_samples": config.num_samples, "batch_size": config.batch_size,
        "steps": config.steps, "num_replicates": config.num_replicates,
        "diagnostic_batch": config.diagnostic_batch, "num_runs": config.runs,
    }


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _figure(plt, rows: int, columns: int, size, **kwargs):
    fig, axes = plt.subplots(rows, columns, figsize=size, layout="constrained", squeeze=False,
                             **kwargs)
    return fig, axes


def _line(name: str, objective: str) -> dict:
    from .style import estimator_style

    style = estimator_style(name)
    return {"color": style["color"], "linestyle": style["linestyle"], "linewidth": 1.3}


# The gradient figure's panels draw these (those trained): the two score-function forms and
# NVIL's baseline, the pathwise ones with and without the analytic KL, the K-sample bound's and
# the lowest-variance measure-valued one, the estimators the study's text compares; every
# estimator's numbers are in the summary (python -m experiments.gmm_vae). Fourteen estimators
# with error bars read as none.
GRADIENT_PANEL = ("score_function", "score_function_autodiff", "score_function+nvil", "pathwise",
                  "pathwise_analytic_kl", "iwae", "dreg", "measure_valued_coupled")


def _legend(fig, axes, ncol: int = 4) -> None:
    """One legend below the panels, every estimator drawn, in the families' order."""
    from .style import FAMILIES

    found = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    order = [member for _, members in FAMILIES.values() for member in members]
    labels = sorted(found, key=lambda label: order.index(label) if label in order else len(order))
    fig.legend([found[label] for label in labels], labels, loc="outside lower center",
               ncol=ncol, fontsize=7.5, frameon=False, handlelength=2.6)


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .style import family_of, mean_and_se, plain_log_ticks, plot_band, rc_context

    data = results["data"]
    runs, names, objectives = data["runs"], data["names"], data["objectives"]
    count = data["num_runs"]
    script = "experiments/gmm_vae.py"
    figures = []
    budget = (f"{data['steps']} Adam steps, {data['batch_size']} points × K = "
              f"{data['num_samples']} samples per step, for every estimator; mean of {count} runs"
              ", band ±1 s.e. over runs")
    scores = [n for n in names if family_of(n) == "score function"]
    with rc_context():
        # Held-out ELBO against steps and wall-clock time, as its gap to the best possible
        # value, E log p(x) = -H (the data's own density), the score functions apart.
        fig, axes = _figure(plt, 2, 2, (10.4, 7.0), sharey=True)
        entropy = data["data_entropy"]
        for name in names:
            run = runs[name]
            gap = np.maximum(-entropy - np.asarray(run["elbo"]), 1e-3)  # (runs, evaluations)
            seconds = np.asarray(run["step"]) * run["median_step_seconds"]
            row = 0 if name in scores else 1
            for ax, x in ((axes[row, 0], run["step"]), (axes[row, 1], seconds)):
                plot_band(ax, x, gap, label=name, **_line(name, objectives[name]))
        for ax in axes.flat:
            ax.set_yscale("log")
        for ax in axes[:, 0]:
            ax.set_ylabel("−H − held-out ELBO\n(nats per point, lower is better)")
        for column in range(2):  # one step axis and one time axis for both rows
            low = min(ax.get_xlim()[0] for ax in axes[:, column])
            high = max(ax.get_xlim()[1] for ax in axes[:, column])
            for ax in axes[:, column]:
                ax.set_xlim(low, high)
        plain_log_ticks(axes[0, 0])
        axes[1, 0].set_xlabel("Adam step")
        axes[1, 1].set_xlabel(f"training time of the group of {count} runs (s) = steps × "
                              "median wall-clock\ntime of one step (estimator, backward pass "
                              "and Adam update)")
        axes[0, 0].set_title("(a) the score functions, against steps", fontsize=9)
        axes[0, 1].set_title("(b) the score functions, against wall-clock time", fontsize=9)
        axes[1, 0].set_title("(c) the others, against steps", fontsize=9)
        axes[1, 1].set_title("(d) the others, against wall-clock time", fontsize=9)
        _legend(fig, axes)
        fig.suptitle("VAE on eight Gaussians: the held-out ELBO's gap to its best value, the "
                     f"data's own E log p(x) = −H = {-entropy:.3f} nats\n" + budget,
                     fontsize=9.5)
        figures += save_figure(fig, paths, "gmm-vae-training", results_path, script)

        # Gradient variance and SNR of encoder and decoder during training.
        chosen = [n for n in GRADIENT_PANEL if n in names]
        shown = chosen if len(chosen) >= 2 else names
        fig, axes = _figure(plt, 2, 2, (10.4, 7.6))
        for name in shown:
            run = runs[name]
            steps = np.asarray(run["probe_step"], float)
            for row, group in enumerate(("encoder", "decoder")):
                for col, key in enumerate(("total_variance", "mean_snr")):
                    # (probes, runs): each run on its own parameters; mean and s.e. over runs
                    values = np.asarray([[r[group][key] for r in p] for p in run["probes"]]).T
                    mean, se = mean_and_se(values)
                    axes[row, col].errorbar(steps, mean, yerr=se, marker=_marker(name),
                                            markersize=4, capsize=2, label=name,
                                            **_line(name, objectives[name]))
        symbols = {"encoder": "λ", "decoder": "θ"}
        for row, group in enumerate(("encoder", "decoder")):
            axes[row, 0].set_ylabel(f"total variance, {group} ({symbols[group]}) gradient\n"
                                    "(trace of covariance)")
            axes[row, 1].set_ylabel(f"mean SNR, {group} ({symbols[group]}) gradient\n"
                                    "(|mean| / sd, averaged over coordinates)")
            for col, ax in enumerate(axes[row]):
                ax.set_yscale("log")
                plain_log_ticks(ax)
                ax.set_title(f"({'abcd'[2 * row + col]}) {group}: "
                             f"{'variance' if col == 0 else 'signal-to-noise ratio'}",
                             fontsize=9)
        for ax in axes[1]:
            ax.set_xlabel("training step at which gradients are probed")
        _legend(fig, axes, ncol=5)
        left_out = len(names) - len(shown)
        fig.suptitle(f"gradient noise during training: {data['num_replicates']} independent "
                     f"estimates on one minibatch of {data['diagnostic_batch']} points, K = "
                     f"{data['num_samples']}, on each of the {count} runs' own parameters;\n"
                     f"mean over runs, ±1 s.e. over runs"
                     + (f"; {len(shown)} of the {len(names)} estimators (all in the summary)"
                        if left_out else ""), fontsize=9.5)
        figures += save_figure(fig, paths, "gmm-vae-gradients", results_path, script)

        figures += _plot_density(plt, data, results_path, paths, script)
        figures += _plot_latent(plt, data, results_path, paths, script)
    return figures


def _marker(name: str) -> str:
    from .style import estimator_style

    return estimator_style(name)["marker"]


def _panels(plt, count: int, columns: int = 5, size_per: float = 1.85, extra: int = 0):
    """A grid of square panels, ``count`` used (``extra`` more cells kept for a legend), the
    rest hidden, sharing both axes so that only the outer ones carry labels."""
    rows = math.ceil((count + extra) / columns)
    fig, axes = _figure(plt, rows, columns, (size_per * columns + 0.9, size_per * rows + 0.9),
                        sharex=True, sharey=True)
    for ax in axes.flat[count:]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.tick_params(labelleft=True)
    return fig, axes


def _plot_density(plt, data, results_path, paths, script):
    from .style import mean_and_se

    names, runs = data["names"], data["runs"]
    axis = np.asarray(data["grid_axis"])
    sample = np.asarray(data["heldout_sample"])
    truth = np.exp(np.asarray(data["data_grid_log_density"]))
    panels = ["data", *names]
    fig, grid = _panels(plt, len(panels))
    axes = list(grid.flat)[:len(panels)]
    # One absolute scale for every panel, set by the data density's peak.
    levels = np.linspace(0, 1.25 * truth.max(), 11)
    for ax, name in zip(axes, panels):
        if name == "data":
            density, title = truth, f"data: eight Gaussians\nE log p(x) = {-data['data_entropy']:.3f}"
        else:
            density = np.exp(np.asarray(runs[name]["grid_log_density"]))
            mean, se = mean_and_se(np.asarray(runs[name]["log_likelihood"])[:, None])
            title = f"{name}\nlog p(x) ≈ {mean[0]:.3f} ± {se[0]:.3f}"
        image = ax.contourf(axis, axis, density, levels=levels, cmap="Blues", extend="max")
        ax.scatter(sample[:200, 0], sample[:200, 1], s=1.5, color="#d62728", alpha=0.7,
                   linewidth=0)
        ax.set_title(title, fontsize=7.5)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.grid(False)
    for ax in grid[-1]:
        ax.set_xlabel("x₁", fontsize=8)
    for ax in grid[:, 0]:
        ax.set_ylabel("x₂", fontsize=8)
    fig.colorbar(image, ax=grid, shrink=0.5, label="density p(x)", format="%.2f")
    fig.suptitle("learned density p(x) = E_p(z)[p(x|z)] of run 0 (blue, one scale for all "
                 "panels) against held-out data (red dots);\nlog p(x): held-out mean, nats per "
                 f"point (importance-weighted estimate), mean ± s.e. over {data['num_runs']} runs",
                 fontsize=9)
    return save_figure(fig, paths, "gmm-vae-density", results_path, script)


def _plot_latent(plt, data, results_path, paths, script):
    from matplotlib.lines import Line2D

    names, runs = data["names"], data["runs"]
    labels = np.asarray(data["latent_labels"])
    components = int(labels.max()) + 1
    # Categories, so a qualitative palette and a legend: a cyclic colour map with a colour bar
    # made the first and the last component one red.
    palette = plt.get_cmap("tab10" if components <= 10 else "tab20").colors
    colours = np.asarray([palette[label % len(palette)] for label in labels])
    fig, grid = _panels(plt, len(names), extra=1)
    axes = list(grid.flat)[:len(names)]
    circle = np.linspace(0, 2 * np.pi, 200)
    limit = 1.05 * max(2.2, max(np.abs(np.asarray(runs[n]["latent_means"])).max() for n in names))
    for ax, name in zip(axes, names):
        means = np.asarray(runs[name]["latent_means"])
        ax.scatter(means[:, 0], means[:, 1], c=colours, s=2.5, linewidth=0)
        for radius in (1, 2):
            ax.plot(radius * np.cos(circle), radius * np.sin(circle), color="0.6",
                    linewidth=0.7, linestyle=":")
        ax.set_title(name, fontsize=7.5)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.grid(False)
    for ax in grid[-1]:
        ax.set_xlabel("z₁ (encoder mean)", fontsize=8)
    for ax in grid[:, 0]:
        ax.set_ylabel("z₂", fontsize=8)
    for column in range(grid.shape[1]):  # a hidden cell's neighbour above labels its column
        if grid.shape[0] > 1 and not grid[-1, column].axison:
            grid[-2, column].set_xlabel("z₁ (encoder mean)", fontsize=8)
            grid[-2, column].tick_params(labelbottom=True)
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=5,
                      color=palette[i % len(palette)], label=f"component {i + 1}")
               for i in range(components)]
    grid.flat[len(names)].legend(handles=handles, loc="center", fontsize=7.5, frameon=False,
                                 title="ring component of x", title_fontsize=7.5)
    fig.suptitle("latent space of run 0: encoder means of held-out points, coloured by the ring "
                 "component they came from;\ndotted circles: 1 and 2 prior standard deviations",
                 fontsize=9)
    return save_figure(fig, paths, "gmm-vae-latent", results_path, script)


# --------------------------------------------------------------------------------------------
# Key numbers: python -m experiments.gmm_vae [RESULTS.json]
# --------------------------------------------------------------------------------------------


def summary(results: dict) -> str:
    """The key numbers of saved results, as plain text: means ± s.e. over the runs."""
    from .style import mean_and_se

    data = results["data"]
    lines = [f"gmm-vae ({results['metadata']['wall_seconds']:.0f} s; {data['steps']} steps; "
             f"{data['num_runs']} runs of each estimator; data entropy "
             f"{data['data_entropy']:.3f} nats): median time per step of the group, final "
             "held-out ELBO and log p(x) (mean ± s.e. over runs), encoder / decoder gradient "
             "total variance and mean SNR at the first and last probe (means over runs)"]

    def both(values):
        mean, se = mean_and_se(np.asarray(values, dtype=float)[:, None])
        return f"{mean[0]:7.3f} ± {se[0]:.3f}"

    for name in data["names"]:
        run = data["runs"][name]
        parts = []
        if run["probes"]:
            first, last = run["probes"][0], run["probes"][-1]
            for group in ("encoder", "decoder"):
                var = [np.mean([r[group]["total_variance"] for r in p]) for p in (first, last)]
                snr = [np.mean([r[group]["mean_snr"] for r in p]) for p in (first, last)]
                parts.append(f"{group} var {var[0]:.3g} -> {var[1]:.3g}, SNR {snr[0]:.2f} -> "
                             f"{snr[1]:.2f}")
        diverged = "".join(f" (run {d['run']} diverged at step {d['step']})"
                           for d in run.get("diverged", []))
        lines.append(f"  {name:24s} {1e3 * run['median_step_seconds']:5.2f} ms  ELBO "
                     f"{both([e[-1] for e in run['elbo']])}  log p(x) "
                     f"{both(run['log_likelihood'])}{diverged}  | " + " | ".join(parts))
    lines += _paired(data)
    return "\n".join(lines)


def _paired(data: dict) -> list[str]:
    """Each ELBO estimator's final held-out ELBO against the best one's, run for run (run r of
    every estimator shares its initialisation and data)."""
    from .style import paired_summary

    finals = {name: [e[-1] for e in data["runs"][name]["elbo"]] for name in data["names"]
              if data["objectives"][name] == "elbo"}
    return paired_summary(finals, data["num_runs"], "the final held-out ELBO", digits=4)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.MODULE [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
