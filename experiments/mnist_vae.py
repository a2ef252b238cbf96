"""mnist-vae: the image VAE on MNIST trained with each ELBO gradient estimator, as in the papers.

Two protocols (the ``protocol`` field):

- "kingma-welling": Kingma & Welling 2014, section 5: one hidden layer of 500 tanh units, a
  latent of 3, 5, 10, 20 or 200 units, minibatches of 100, one sample of z per image; their
  Figure 2 plots the bound against the number of training images seen, up to 10^8. We use Adam
  (they used Adagrad with a weight-decay prior), so curves are comparable in kind, not in detail.
- "burda": Burda et al. 2016, one stochastic layer: 784-200-200-50 tanh, minibatches of 20,
  Adam on the schedule of 3^i passes at 1e-3 * 10^(-i/7), i = 0..7 (3280 passes); their Table 1
  reports the test NLL as -L_5000.

Every run of ``estimators`` trains the same network from the same initialisation on the same data
with :func:`experiments.mnist.train.train`, for the same number of training images. Recorded:
the test bound during training (the estimator-independent single-sample ELBO); at fixed points of
training, the total variance and the signal-to-noise ratio of the encoder (lambda) and decoder
(theta) gradients of every estimator, on the parameters of the first run and one fixed minibatch
(:func:`experiments.mnist.evaluate.gradient_variance`, R replicates in one vectorised pass), and
of each run's own estimator along its own run; after training, the test ELBO, L_k
(Burda et al. 2016) and the active units. The first run's model also gives samples from the
prior, reconstructions, interpolations and latent arithmetic; a model with a 2-D latent gives the
20 x 20 manifold of Kingma & Welling's Figure 4. Runs keep checkpoints under
``checkpoints/mnist-vae/`` and resume from them; each run's gradient probes are kept beside its
checkpoint with the settings they were measured with, and a resumed run refuses probes measured
with other settings.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .common import ROOT, StudyConfig, atomic_write, progress, resolve_device, save_figure
from .replicated import NVIL

NAME = "mnist-vae"
SUMMARY = "the MNIST VAE trained with each estimator: bound vs images seen, gradient SNR, pictures"

PUBLISHED_CSV = ROOT / "data" / "published" / "kingma_welling_2014_fig2_mnist.csv"

# What each protocol fixes (the Config fields left at 0 or "" take these).
PROTOCOLS = {
    "kingma-welling": {"architecture": "kingma-welling", "latent": 20, "batch_size": 100,
                       "schedule": "constant", "epochs": 1667},  # 1667 x 60,000 = 10^8 images
    "burda": {"architecture": "iwae", "latent": 50, "batch_size": 20, "schedule": "iwae",
              "epochs": 3280},
}

# Published numbers: protocol, estimator, samples per image, latent, value.
# Burda et al. 2016, Table 1 (one stochastic layer): test NLL = -L_5000, nats.
# Kingma & Welling 2014, Figure 2: final test lower bound, nats (read off the figure, about ±0.5).
PUBLISHED = [
    {"source": "Burda et al. 2016, Table 1 (VAE, k = 1)", "protocol": "burda",
     "estimator": "pathwise", "num_samples": 1, "latent": 50, "metric": "nll", "value": 86.76},
    {"source": "Burda et al. 2016, Table 1 (VAE, k = 50)", "protocol": "burda",
     "estimator": "pathwise", "num_samples": 50, "latent": 50, "metric": "nll", "value": 86.35},
    {"source": "Burda et al. 2016, Table 1 (IWAE, k = 5)", "protocol": "burda",
     "estimator": "iwae", "num_samples": 5, "latent": 50, "metric": "nll", "value": 85.54},
    {"source": "Burda et al. 2016, Table 1 (IWAE, k = 50)", "protocol": "burda",
     "estimator": "iwae", "num_samples": 50, "latent": 50, "metric": "nll", "value": 84.78},
    *[{"source": f"Kingma & Welling 2014, Fig. 2 (N_z = {latent})",
       "protocol": "kingma-welling", "estimator": "pathwise_analytic_kl", "num_samples": 1,
       "latent": latent, "metric": "test_bound", "value": value}
      for latent, value in ((3, -133.6), (5, -118.8), (10, -103.2), (20, -99.5), (200, -99.6))],
]


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    protocol: str = "kingma-welling"  # "kingma-welling" (Kingma & Welling 2014) or "burda" (Burda et al. 2016)
    latent: int = 0  # latent units (0: the protocol's, 20 or 50; Kingma & Welling: 3, 5, 10, 20, 200)
    estimators: tuple = ("pathwise_analytic_kl", "pathwise", "stl", "score_function", "score_function_loo:2", NVIL, "iwae:5", "vimco:5")  # groups: NAME or NAME:K (K samples per image); the first group's first run gives the pictures
    runs: int = 5  # independent training runs of each estimator, trained as one group (seeds seed .. seed + runs - 1)
    num_samples: int = 1  # K of every run that does not name its own
    batch_size: int = 0  # images per step (0: the protocol's, 100 or 20)
    learning_rate: float = 1e-3  # Adam's rate (the burda schedule decays it from here)
    epochs: int = 0  # passes over the training set (0: the protocol's, 1667 = 10^8 images or 3280)
    max_examples: int = 0  # stop every run after this many training images (0: no cap)
    train_size: int = 0  # training images, the first n (0: all 60,000)
    test_size: int = 0  # test images for the final test ELBO, L_k and active units (0: all 10,000)
    eval_every: int = 0  # training images between test-bound evaluations (0: once per epoch)
    eval_size: int = 1000  # test images per evaluation during training
    likelihood_k: int = 5000  # k of the final L_k on the test set (Burda et al.: 5000)
    probe_fractions: tuple = (0.0, 0.01, 0.1, 1.0)  # where in training (fraction of the images) gradients are probed
    probe_batch: int = 100  # training images of the fixed probe minibatch
    num_replicates: int = 256  # R: independent gradient estimates per probe
    replicate_chunk: int = 64  # replicates per vectorised pass (bounds memory)
    manifold_latent: int = 2  # latent of the extra run drawn as a 2-D manifold (0: no such run)
    manifold_size: int = 20  # the manifold is manifold_size x manifold_size decoded points
    likelihood: str = "bernoulli"  # decoder: "bernoulli" (binary pixels) or "gaussian" (grey)
    binarization: str = "dynamic"  # "dynamic" (a fresh draw each minibatch), "fixed" or "grey"
    dtype: str = "float32"  # float32 or float64
    compile: bool = False  # torch.compile the training step (GPU)
    capture: bool = False  # replay each training step as one CUDA graph (GPU; eager elsewhere)
    data_dir: str = ""  # MNIST folder ("": $MNIST_DIR or the default places)
    resume: bool = True  # continue a run from its checkpoint under checkpoints/mnist-vae/

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, runs=3, train_size=5000, epochs=3, eval_every=1000, eval_size=500,
                   test_size=500, likelihood_k=100, probe_fractions=(0.0, 1.0),
                   probe_batch=50, num_replicates=16, replicate_chunk=16)


# --------------------------------------------------------------------------------------------
# Runs, settings and checks
# --------------------------------------------------------------------------------------------


def parse_run(label: str, default_samples: int) -> tuple[str, int]:
    """'iwae:5' -> ('iwae', 5); 'stl' -> ('stl', default_samples)."""
    name, _, samples = label.partition(":")
    if not samples:
        return name, default_samples
    try:
        return name, int(samples)
    except ValueError:
        raise SystemExit(f"error: mnist-vae: run {label!r}: K after ':' must be an integer, "
                         "e.g. iwae:5") from None


def settings(config: Config) -> dict:
    """The protocol's architecture, latent, batch size, schedule and epochs, with overrides."""
    chosen = dict(PROTOCOLS[config.protocol])
    for key in ("latent", "batch_size", "epochs"):
        if getattr(config, key):
            chosen[key] = getattr(config, key)
    return chosen


def validate(config: Config) -> None:
    """Refuse, with one line naming the field and the fix, a config the study cannot run.

    The study's own fields are checked here; every run's trainer config (the manifold run's too)
    goes through :meth:`TrainConfig.validate`, so nothing the trainer refuses reaches training.
    """
    from .mnist.evaluate import estimator_for, estimator_names

    if config.protocol not in PROTOCOLS:
        raise SystemExit(f"error: mnist-vae: unknown protocol {config.protocol!r}; "
                         f"use --set protocol={' or '.join(PROTOCOLS)}")
    if not config.estimators:
        raise SystemExit("error: mnist-vae: estimators is empty; name at least one run, "
                         "e.g. --set estimators=pathwise_analytic_kl")
    for label in config.estimators:
        name, samples = parse_run(label, config.num_samples)
        if name not in estimator_names():
            raise SystemExit(f"error: mnist-vae: unknown estimator {name!r}; choose from "
                             f"{', '.join(estimator_names())}")
        if samples < estimator_for(name).min_samples:
            raise SystemExit(f"error: mnist-vae: {name} needs K >= {estimator_for(name).min_samples}"
                             f" samples per image; write it as {name}:{estimator_for(name).min_samples}")
    if len(set(config.estimators)) != len(config.estimators):
        raise SystemExit("error: mnist-vae: a run is named twice in estimators; name each once")
    problems = [
        (config.num_samples < 1, f"num_samples must be >= 1, got {config.num_samples}"),
        (config.runs < 1, f"runs must be >= 1 (2 or more give a spread), got {config.runs}"),
        (min(config.latent, config.batch_size, config.epochs) < 0,
         "latent, batch_size and epochs must be >= 0 (0: the protocol's)"),
        (config.test_size < 0, f"test_size must be >= 0 (0: all 10,000), got {config.test_size}"),
        (config.num_replicates < 2, f"num_replicates must be >= 2 to estimate a variance, got "
                                    f"{config.num_replicates}"),
        (config.replicate_chunk < 2, f"replicate_chunk must be >= 2, got {config.replicate_chunk}"),
        (min(config.likelihood_k, config.probe_batch) < 1,
         "likelihood_k and probe_batch must be >= 1"),
        (any(not 0 <= f <= 1 for f in config.probe_fractions),
         f"probe_fractions must lie in [0, 1], got {config.probe_fractions}"),
        (config.manifold_latent not in (0, 2),
         f"manifold_latent must be 2 (drawn as a plane) or 0 (no manifold), got "
         f"{config.manifold_latent}"),
        (config.manifold_size < 2, f"manifold_size must be >= 2, got {config.manifold_size}"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: mnist-vae: {message}")
    runs = [(label, None, None, label) for label in config.estimators]
    if config.manifold_latent:
        label = config.estimators[0]
        runs.append((label, config.manifold_latent, 1, f"{label} (the 2-D manifold run)"))
    for label, latent, count, name in runs:
        try:
            train_config(config, label, latent, count).validate()
        except ValueError as error:  # the trainer's one-line message names the field and the fix
            raise SystemExit(f"error: mnist-vae: run {name}: {error}") from None


def train_config(config: Config, label: str, latent: int | None = None,
                 runs: int | None = None):
    """The trainer's config of one group of the study (``runs`` runs; default ``config.runs``)."""
    from .mnist.train import TrainConfig

    chosen = settings(config)
    name, samples = parse_run(label, config.num_samples)
    return TrainConfig(
        architecture=chosen["architecture"], latent=latent or chosen["latent"],
        likelihood=config.likelihood, estimator=name, num_samples=samples,
        batch_size=chosen["batch_size"], learning_rate=config.learning_rate,
        schedule=chosen["schedule"], epochs=chosen["epochs"], max_examples=config.max_examples,
        train_size=config.train_size,
        binarization="grey" if config.likelihood == "gaussian" else config.binarization,
        seed=config.seed, num_runs=runs or config.runs, device=config.device, dtype=config.dtype,
        data_dir=config.data_dir, eval_every=config.eval_every, eval_size=config.eval_size,
        compile=config.compile, capture=config.capture)


def checkpoint_path(root: Path, label: str, trainer_config, folder: Path | None = None) -> Path:
    """One file per distinct trainer config, so a changed config never resumes a stale run;
    under ``folder``, else ``root/checkpoints/mnist-vae``."""
    fields = {k: v for k, v in dataclasses.asdict(trainer_config).items()
              if k not in ("checkpoint", "checkpoint_every", "data_dir", "compile", "device")}
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    slug = label.replace("+", "-").replace(":", "-k")
    return Path(folder or Path(root) / "checkpoints" / NAME) / f"{slug}-{digest}.pt"


def total_examples(config: Config, num_train: int) -> int:
    """Training images each run sees: the trainer's steps times the batch size (every run has
    the same steps; only the estimator differs)."""
    from .mnist.train import total_steps

    trainer_config = train_config(config, config.estimators[0])
    return total_steps(trainer_config, num_train) * trainer_config.batch_size


# --------------------------------------------------------------------------------------------
# Pictures: the manifold grid, latent arithmetic, images stored small
# --------------------------------------------------------------------------------------------


def manifold_grid(size: int) -> torch.Tensor:
    """Latent coordinates of Kingma & Welling's Figure 4: a size x size grid, (size^2, 2).

    Linearly spaced points (i + 1/2) / size of the unit square, mapped through the inverse CDF of
    the standard normal, so each cell holds equal prior mass. Row r, column c is
    (z_1, z_2) = (Phi^-1(u_c), Phi^-1(u_{size-1-r})): z_2 grows upwards as in a plot.
    """
    levels = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    axis = torch.distributions.Normal(0.0, 1.0).icdf(levels)
    z1 = axis.repeat(size)
    z2 = axis.flip(0).repeat_interleave(size)
    return torch.stack([z1, z2], -1)


def latent_direction(means: torch.Tensor, ink: torch.Tensor, labels: torch.Tensor,
                     fraction: float = 0.25):
    """The mean latent difference between thick- and thin-stroke digits.

    Ink mass is measured relative to the median of the image's class, so the direction is about
    stroke width and not about which digit it is (a 1 holds less ink than an 8). ``thick`` and
    ``thin`` are the top and bottom ``fraction`` of images by relative ink. Returns
    (direction, thick mask, thin mask), direction = mean(means[thick]) - mean(means[thin]).
    """
    ink, means = ink.double(), means.double()
    medians = torch.zeros(int(labels.max()) + 1, dtype=torch.float64)
    for digit in labels.unique():
        medians[digit] = torch.quantile(ink[labels == digit], 0.5)
    relative = ink / medians[labels]
    low, high = torch.quantile(relative, fraction), torch.quantile(relative, 1 - fraction)
    thin, thick = relative <= low, relative >= high
    return means[thick].mean(0) - means[thin].mean(0), thick, thin


def encode_images(pixels: torch.Tensor) -> dict:
    """Images with values in [0, 1], (N, 784), as base64 uint8: small enough for a JSON file."""
    array = (pixels.detach().double().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return {"shape": [int(array.shape[0]), 28, 28],
            "uint8_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_images(stored: dict) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(stored["uint8_base64"]), dtype=np.uint8)
    return raw.reshape(stored["shape"])


@torch.no_grad()
def decode_mean(vae, z: torch.Tensor) -> torch.Tensor:
    """The decoder's mean image for each z: pixel probabilities (Bernoulli) or grey levels."""
    z = z.to(device=next(vae.parameters()).device, dtype=next(vae.parameters()).dtype)
    return vae.observation(z).mean  # Independent's mean is its base distribution's


@torch.no_grad()
def pictures(vae, test_images: torch.Tensor, test_grey: torch.Tensor, test_labels: torch.Tensor,
             seed: int) -> dict:
    """Prior samples, reconstructions, interpolations and latent arithmetic of one model."""
    generator = torch.Generator().manual_seed(seed)
    latent = vae.latent_dim
    out = {}
    z = torch.randn(100, latent, generator=generator, dtype=torch.float64)
    out["prior_samples"] = encode_images(decode_mean(vae, z))
    # Reconstructions: one test digit of each class, twice.
    picks = torch.cat([torch.nonzero(test_labels == d)[:2, 0] for d in range(10)])
    picks = picks[torch.argsort(torch.arange(len(picks)) % 2, stable=True)]
    means = vae.posterior(test_images.to(next(vae.parameters()))).mean.double().cpu()
    out["reconstruction_inputs"] = encode_images(test_images[picks])
    out["reconstructions"] = encode_images(decode_mean(vae, means[picks]))
    # Interpolations between posterior means of pairs of test digits of different classes.
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (7, 1)]
    first = [int(torch.nonzero(test_labels == a)[2, 0]) for a, _ in pairs]
    second = [int(torch.nonzero(test_labels == b)[3, 0]) for _, b in pairs]
    weights = torch.linspace(0, 1, 10, dtype=torch.float64)
    path = ((1 - weights)[None, :, None] * means[first][:, None]
            + weights[None, :, None] * means[second][:, None])
    out["interpolations"] = encode_images(decode_mean(vae, path.reshape(-1, latent)))
    out["interpolation_pairs"] = [[a, b] for a, b in pairs]
    # Latent arithmetic: add the thick-minus-thin direction to thin digits.
    ink = test_grey.double().cpu().sum(-1)
    direction, thick, thin = latent_direction(means, ink, test_labels.cpu())
    order = torch.nonzero(thin)[:, 0]
    # Eight thin digits, of different classes where the test images allow.
    first_of_class = torch.cat([order[test_labels[order] == d][:1] for d in range(10)])
    rest = order[~torch.isin(order, first_of_class)]
    chosen = torch.cat([first_of_class, rest])[:8]
    steps = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    shifted = means[chosen][:, None] + steps[None, :, None] * direction
    out["arithmetic_inputs"] = encode_images(test_grey[chosen])
    out["arithmetic"] = encode_images(decode_mean(vae, shifted.reshape(-1, latent)))
    out["arithmetic_steps"] = steps
    out["arithmetic_groups"] = {"thick": int(thick.sum()), "thin": int(thin.sum())}
    out["direction_norm"] = direction.norm().item()
    return out


# --------------------------------------------------------------------------------------------
# Training runs and measurements
# --------------------------------------------------------------------------------------------


def _probe_targets(config: Config, total: int) -> list[int]:
    return sorted({int(round(f * total)) for f in config.probe_fractions})


def _measure(vae, baseline, owner: str, x, labels, config, seed, bar=None) -> dict:
    """gradient_variance of each run's estimator (with its own K) on these parameters and x.

    ``baseline`` is what the run being probed learned (the NVIL network, the EmaBaseline or
    None) and ``owner`` that run's estimator: only the same estimator gets it, as the two kinds
    do not fit each other. NVIL without its own network is skipped; score_function_ema without its
    own average starts from a fresh one.
    """
    from .mnist.evaluate import gradient_variance

    out = {}
    for label in labels:
        name, samples = parse_run(label, config.num_samples)
        learned = baseline if name == owner else None
        options = {}
        if name == NVIL and learned is None:
            continue  # NVIL's baseline is learned along its own run; this model has none
        if name == "score_function_ema" and learned is not None:
            options = {name: {"state": learned}}
        stats = gradient_variance(vae, x, [name], config.num_replicates, samples,
                                  baseline=learned if name == NVIL else None,
                                  options=options, replicate_chunk=config.replicate_chunk,
                                  seed=seed)
        out[label] = stats[name]
        if bar is not None:
            bar.update(1)
    return out


def probe_settings(config: Config, measure: list[str]) -> dict:
    """What a group's probes depend on beyond its trainer config (which names its checkpoint)."""
    return {"runs": {label: parse_run(label, config.num_samples)[1] for label in measure},
            "num_replicates": config.num_replicates, "replicate_chunk": config.replicate_chunk,
            "probe_batch": config.probe_batch, "probe_fractions": list(config.probe_fractions)}


def _afresh(checkpoint: Path, who: str) -> str:
    """How to start a group afresh, in the words of the command that trains it."""
    if who == "paper":
        return f"delete {checkpoint} to train the group afresh"
    return (f"rerun with --set resume=false (every run afresh) or delete {checkpoint} (this run "
            "afresh)")


def _saved_probes(probes_file: Path, wanted: dict, label: str, checkpoint: Path,
                  who: str = NAME) -> list:
    """The probes of a resumed group, refused (one line) when measured with other settings."""
    how = f"{_afresh(checkpoint, who)}, or restore the settings it was probed with"
    if not probes_file.exists():
        raise SystemExit(f"error: {who}: run {label}: its checkpoint has no gradient probes "
                         f"({probes_file} is missing), so the early probes cannot be measured; "
                         f"{how}")
    try:
        saved = json.loads(probes_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: {who}: run {label}: {probes_file} is damaged or not JSON "
                         f"({type(error).__name__}); {how}") from None
    if (not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict)
            or not isinstance(saved.get("probes"), list)):
        raise SystemExit(f"error: {who}: run {label}: {probes_file} records no probe "
                         f"settings and probes (an older version, or something else, wrote it); "
                         f"{how}")
    changed = [key for key in wanted if saved["settings"].get(key) != wanted[key]]
    if changed:
        what = ", ".join("estimators probed" if key == "runs" else key for key in changed)
        raise SystemExit(f"error: {who}: run {label}: its gradient probes ({probes_file}) "
                         f"were measured with other settings ({what}); {how}")
    return saved["probes"]


def save_probes(probes_file: Path, recorded: dict, probes: list) -> None:
    """The probes of one group so far, with the settings they were measured with."""
    text = json.dumps({"settings": recorded, "probes": probes})
    atomic_write(probes_file, lambda tmp: Path(tmp).write_text(text))


def train_group(config: Config, label: str, paths, data: dict, measure: list[str],
                latent: int | None = None, runs: int | None = None, *,
                checkpoints: Path | None = None, time_limit: float | None = None,
                distributed: bool = True, who: str = NAME, announce: bool = True,
                name: str | None = None) -> tuple[dict | None, object]:
    """Train one estimator's group of runs (resuming from its checkpoint), probing gradients at
    the fixed points: run 0 with every estimator of ``measure``, each run with its own.

    ``checkpoints`` is the folder of its checkpoint (default ``checkpoints/mnist-vae`` under the
    output folder). With ``time_limit`` (seconds) the training may stop early, checkpointed, and
    ``(None, None)`` is returned: call again to go on. ``distributed`` False trains in this
    process alone under torchrun (the paper programme shares whole groups over the ranks).
    ``who`` is the command whose words errors use ("mnist-vae" or "paper"); ``announce`` as for
    :func:`experiments.mnist.train.train`. ``name``: the checkpoint's name before its settings'
    hash (default the label, and the latent if given).
    """
    from .mnist.checkpoint import CheckpointError
    from .mnist.lock import LockHeld, holding
    from .mnist.train import TrainingDiverged, train

    trainer_config = train_config(config, label, latent, runs)
    if name is None:
        name = label if latent is None else f"{label}-z{latent}"
    checkpoint = checkpoint_path(paths.root, name, trainer_config, checkpoints)
    # A checkpoint at most once an epoch (or an evaluation interval, if longer): writing the
    # group's Adam state at every evaluation of a quick run took a third of its time.
    per_epoch = len(data["train"]) // trainer_config.batch_size
    per_evaluation = (trainer_config.eval_every // trainer_config.batch_size) or per_epoch
    trainer_config = dataclasses.replace(trainer_config, checkpoint=str(checkpoint),
                                         checkpoint_every=max(per_epoch, per_evaluation, 1))
    # The checkpoint's lock is held from before its probes file is read or written to the end
    # of the training (the trainer is told it is held): a second invocation on the same
    # checkpoint is refused before it touches either.
    rank = _distributed_rank() if distributed else 0
    lock = (holding(checkpoint, f"run {label}'s checkpoint {checkpoint}",
                    "wait for the invocation that trains it to end, or use another --out")
            if rank == 0 else contextlib.nullcontext())
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(lock)
        except LockHeld as error:
            raise SystemExit(f"error: {who}: {error}") from None
        probes_file = checkpoint.with_suffix(".probes.json")
        resume = config.resume and checkpoint.exists()
        # The checkpoint's name hashes the trainer's settings only: the probes file records its
        # own and a resumed group refuses probes measured otherwise.
        wanted = probe_settings(config, measure)
        probes = []
        if measure:
            if resume:
                probes = _saved_probes(probes_file, wanted, label, checkpoint, who)
            else:  # a fresh group: record the settings now, before the first checkpoint
                save_probes(probes_file, wanted, probes)
        targets = [t for t in _probe_targets(config, data["total"])
                   if all(p["examples_seen"] < t for p in probes)] if measure else []
        owner = trainer_config.estimator
        # Each run's probes draw from its own seed: run r of a group reports what the solo run
        # of seed s + r reports (run 0's is also the one every estimator is probed on).
        probe_seeds = [seed + PROBE_NOISE_OFFSET for seed in trainer_config.seeds]

        def callback(state):
            if not targets or state.examples_seen < targets[0]:
                return
            while targets and state.examples_seen >= targets[0]:
                targets.pop(0)
            # A probe takes a while (every estimator, R replicates each): a bar of its own.
            bar = progress(total=len(measure) + state.num_runs - 1,
                           desc=f"mnist-vae: probing {label} at {state.examples_seen:,} images")
            every = _measure(state.vae(0), state.baseline(0), owner, data["probe_x"], measure,
                             config, seed=probe_seeds[0], bar=bar)
            own = [every.get(label)] + [
                _measure(state.vae(run), state.baseline(run), owner, data["probe_x"], [label],
                         config, seed=probe_seeds[run], bar=bar).get(label)
                for run in range(1, state.num_runs)]
            bar.close()
            probes.append({"step": int(state.step), "examples_seen": int(state.examples_seen),
                           "stats": every, "runs": own})
            save_probes(probes_file, wanted, probes)

        try:
            result = train(trainer_config, train_data=data["train"], test_images=data["test"],
                           callback=callback, resume=resume, overwrite=not resume,
                           time_limit=time_limit, distributed=distributed, announce=announce,
                           checkpoint_locked=True)
        except TrainingDiverged as error:
            raise SystemExit(f"error: {who}: run {label} diverged ({error}); lower "
                             "--set learning_rate=...") from None
        except CheckpointError as error:  # the trainer's advice names its own flags
            raise SystemExit(f"error: {who}: run {label}: {error.problem}; "
                             f"{_afresh(checkpoint, who)}") from None
        except ValueError as error:  # the trainer's one-line message names the field and the fix
            raise SystemExit(f"error: {who}: run {label}: {error}") from None
    if not result.finished:
        return None, None
    histories = [{k: list(v) for k, v in run.history.items()} for run in result.runs]
    first = histories[0]
    record = {"label": label, "estimator": trainer_config.estimator,
              "num_samples": trainer_config.num_samples, "latent": trainer_config.latent,
              "seeds": trainer_config.seeds, "histories": histories, "probes": probes,
              "diverged": result.diverged,
              "examples_seen": int(first["examples_seen"][-1]) if first["examples_seen"] else 0,
              "wall_seconds": float(first["wall_seconds"][-1]) if first["wall_seconds"] else 0.0,
              "steps": int(first["step"][-1]) if first["step"] else 0,
              "checkpoint": _relative(checkpoint, paths.root)}
    finals = []
    for run in result.runs:
        run.vae.eval()
        finals.append(final_evaluation(run.vae, data["test_all"], config, run.seed))
    record["finals"] = finals
    record.update(spread(finals, {d["run"] for d in result.diverged}))
    return record, result.runs[0].vae


def _distributed_rank() -> int:
    from .mnist.train import _distributed

    return _distributed()[0]


def _relative(path: Path, root: Path) -> str:
    """``path`` as results record it: relative to the output folder, never absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return Path(path).name


FINAL_NUMBERS = ("test_elbo", "log_likelihood", "active_units")


def spread(finals: list[dict], skipped=frozenset()) -> dict:
    """Each final number's mean over the runs that did not diverge, and its standard error over
    them: ``{key: mean, key_se: s.e.}`` (s.e. NaN with one run), and ``runs_counted``."""
    out = {}
    kept = [f for index, f in enumerate(finals) if index not in skipped]
    for key in FINAL_NUMBERS:
        values = np.asarray([f[key] for f in kept], dtype=float)
        out[key] = float(values.mean()) if len(values) else math.nan
        out[f"{key}_spread_se"] = (float(values.std(ddof=1) / math.sqrt(len(values)))
                                   if len(values) > 1 else math.nan)
    out["runs_counted"] = len(kept)
    return out


def final_evaluation(vae, test_images: torch.Tensor, config: Config, seed: int) -> dict:
    """Test ELBO, L_k and active units of one run, drawn from its own seed."""
    from .mnist import evaluate
    from .mnist.streams import stream_seed

    torch.manual_seed(stream_seed(seed, "final evaluation"))
    elbo = evaluate.test_elbo(vae, test_images)
    values = evaluate.importance_sampled_log_likelihood(
        vae, test_images, num_samples=config.likelihood_k,
        description=f"final L_{config.likelihood_k}, seed {seed}")
    return {"test_elbo": elbo, "log_likelihood": values.mean().item(),
            "log_likelihood_se": (values.std() / math.sqrt(values.numel())).item(),
            "active_units": evaluate.active_units(vae, test_images),
            "test_images": int(test_images.shape[0])}


# The probe minibatch's Bernoulli draw (the one seed-0 runs always had), and the offset of each
# run's probe noise from its seed: no group seed moves either, so that probes, like the test
# bounds, of run r of a group are those of the solo run of seed s + r.
PROBE_SEED = 2
PROBE_NOISE_OFFSET = 1000

PICTURE_DIGITS = 4  # test digits of every class the pictures need (an interpolation takes the 4th)


def _check_test_labels(config: Config, labels: torch.Tensor) -> None:
    """Refuse, before any training, a test set without PICTURE_DIGITS digits of every class."""
    used = labels[:config.test_size] if config.test_size else labels
    counts = torch.bincount(used, minlength=10)
    if counts.min() >= PICTURE_DIGITS:
        return
    digit = int(counts.argmin())
    what = (f"test_size={config.test_size} holds" if config.test_size
            else "the test files hold")
    # The shortest prefix of the test set with enough digits of every class, if there is one.
    if min(int((labels == d).sum()) for d in range(10)) >= PICTURE_DIGITS:
        need = max(int(torch.nonzero(labels == d)[PICTURE_DIGITS - 1, 0]) + 1 for d in range(10))
        fix = f"use --set test_size={need} or more (0: all)"
    else:
        fix = "use the full MNIST test files"
    raise SystemExit(f"error: mnist-vae: {what} {int(counts[digit])} test digits of class "
                     f"{digit}; the pictures need at least {PICTURE_DIGITS} of every class: {fix}")


def load_data(config: Config) -> dict:
    """MNIST once for every run: training set and test images on the device."""
    from .mnist.data import TEST_SEED, DeviceDataset, MnistError, load_mnist

    try:
        train_uint8, _ = load_mnist(config.data_dir or None, "train")
        test_uint8, test_labels = load_mnist(config.data_dir or None, "test")
    except MnistError as error:
        raise SystemExit(f"error: mnist-vae: {error}") from None
    if config.train_size:
        train_uint8 = train_uint8[:config.train_size]
    _check_test_labels(config, test_labels)
    if config.test_size:
        test_uint8, test_labels = test_uint8[:config.test_size], test_labels[:config.test_size]
    device = str(resolve_device(config.device))
    dtype = getattr(torch, config.dtype)
    binarization = "grey" if config.likelihood == "gaussian" else config.binarization
    train_set = DeviceDataset(train_uint8, binarization, device, dtype, seed=config.seed)
    # One draw of the test images for every seed, run and estimator: the same yardstick.
    test_set = DeviceDataset(test_uint8, binarization, device, dtype, seed=TEST_SEED)
    test_all = test_set.evaluation_images(seed=TEST_SEED)
    # seed: with binarization "fixed" the probe minibatch is the training set's own draw; else
    # one draw that no training seed moves, like the test images'
    probe_set = DeviceDataset(train_uint8[:config.probe_batch], binarization, device, dtype,
                              seed=config.seed)
    return {"train": train_set, "test": test_all[:config.eval_size], "test_all": test_all,
            "test_grey": test_uint8.reshape(len(test_uint8), -1).to(torch.float64) / 255,
            "test_labels": test_labels,
            "probe_x": probe_set.evaluation_images(seed=PROBE_SEED),
            "total": total_examples(config, len(train_set))}


def run(config: Config, paths) -> dict:
    validate(config)
    data = load_data(config)
    labels = list(config.estimators)
    runs, reference_vae = {}, None
    for index, label in enumerate(progress(labels, desc="mnist-vae: groups")):
        # Run 0 of the first group is probed with every estimator; every run with its own.
        measure = labels if index == 0 else [label]
        runs[label], vae = train_group(config, label, paths, data, measure)
        if index == 0:
            reference_vae = vae
    out = {"labels": labels, "reference": labels[0], "runs": runs, "num_runs": config.runs,
           "protocol": config.protocol, "settings": settings(config),
           "train_size": len(data["train"]), "test_size": int(data["test_all"].shape[0]),
           "likelihood_k": config.likelihood_k, "num_replicates": config.num_replicates,
           "eval_size": int(data["test"].shape[0]),
           "probe_batch": config.probe_batch, "quick": config.quick,
           "pictures": pictures(reference_vae, data["test_all"].cpu(), data["test_grey"],
                                data["test_labels"], config.seed + 3)}
    if config.manifold_latent:
        # A picture, not a comparison: one run.
        record, vae = train_group(config, labels[0], paths, data, [],
                                  latent=config.manifold_latent, runs=1)
        grid = manifold_grid(config.manifold_size)
        record["images"] = encode_images(decode_mean(vae, grid))
        record["grid"] = grid
        record["size"] = config.manifold_size
        out["manifold"] = record
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def published_curves(latent: int) -> dict:
    """Kingma & Welling 2014, Figure 2, AEVB curves at this latent: split -> (images, bound)."""
    curves = {}
    with open(PUBLISHED_CSV) as handle:
        for row in csv.DictReader(handle):
            if int(row["Nz"]) == latent and row["method"] == "AEVB":
                curves.setdefault(row["split"], []).append(
                    (float(row["train_samples_evaluated"]), float(row["lower_bound_nats"])))
    return {split: tuple(np.asarray(v).T) for split, v in curves.items()}


def scale_of(results: dict) -> dict:
    """Whether saved results are at the paper's scale: every training image and epoch of the
    protocol, no cap on images, all 10,000 test images and L_5000. Else "quick" or "reduced"."""
    from .mnist.train import TrainConfig, total_steps

    data = results["data"]
    s = data["settings"]
    seen = max(data["runs"][label]["examples_seen"] for label in data["labels"])
    protocol = TrainConfig(batch_size=s["batch_size"], schedule=s["schedule"],
                           epochs=PROTOCOLS[data["protocol"]]["epochs"])
    full = total_steps(protocol, 60_000) * s["batch_size"]
    paper = (not data["quick"] and data["train_size"] == 60_000 and seen >= full
             and data["test_size"] == 10_000 and data["likelihood_k"] >= 5000)
    kind = "quick" if data["quick"] else "paper" if paper else "reduced"
    where = {"quick": "quick CPU run, not paper scale",
             "reduced": f"reduced-scale run ({seen:,} training images seen of the protocol's "
                        f"{full:,}), not paper scale",
             "paper": "paper-scale run"}[kind]
    note = (f"{where}: {data['protocol']} protocol, {data['train_size']:,} training images, "
            f"{s['architecture']} network, latent {s['latent']}, batch {s['batch_size']}")
    return {"kind": kind, "seen": seen, "full": full, "note": note}


def _label(run: dict) -> str:
    return run["label"] if ":" in run["label"] else (
        f"{run['label']}" + (f" (K = {run['num_samples']})" if run["num_samples"] > 1 else ""))


def _style(run: dict) -> dict:
    """The group's estimator in its family's hue, line style and marker (experiments.style);
    labels such as iwae:5 and score_function+nvil draw as their estimator or family member."""
    from .style import estimator_style

    style = estimator_style(run["label"])
    return {"color": style["color"], "linestyle": style["linestyle"], "marker": style["marker"],
            "linewidth": 1.4}


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .style import rc_context

    data = dict(upgrade(results)["data"], scale_note=scale_of(results)["note"])
    with rc_context():
        figures = _plot_bound(plt, data, results_path, paths)
        figures += _plot_gradients(plt, data, results_path, paths)
        figures += _plot_pictures(plt, data, results_path, paths)
    return figures


SCRIPT = "experiments/mnist_vae.py"


def upgrade(results: dict) -> dict:
    """Results of an earlier version, whose every estimator was one run, read as groups of one."""
    data = results["data"]
    records = [data["runs"][label] for label in data["labels"]]
    if "manifold" in data:
        records.append(data["manifold"])
    for record in records:
        if "histories" in record:
            continue
        record["histories"] = [record["history"]]
        record["finals"] = [{key: record[key] for key in (*FINAL_NUMBERS, "log_likelihood_se",
                                                          "test_images") if key in record}]
        record.update(spread(record["finals"]))
        record.setdefault("seeds", [results["metadata"].get("seed", 0)])
        record.setdefault("diverged", [])
        for probe in record.get("probes", []):
            probe.setdefault("runs", [probe["stats"].get(record["label"])])
    data.setdefault("num_runs", 1)
    return results


def _curves(record: dict, key: str) -> np.ndarray:
    """(runs, evaluations): one history entry ``key`` of every run of a group."""
    return np.asarray([history[key] for history in record["histories"]], dtype=float)


def _plot_bound(plt, data, results_path, paths, name="mnist-vae-bound", script=None):
    from .style import plot_band

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.6), constrained_layout=True)
    latent = data["settings"]["latent"]
    published = published_curves(latent) if data["protocol"] == "kingma-welling" else {}
    seen = max(data["runs"][n]["examples_seen"] for n in data["labels"])
    first = min(data["runs"][n]["histories"][0]["examples_seen"][0] for n in data["labels"])
    shown = False
    for split, style in (("train", ":"), ("test", "-")):
        if split in published:
            images, bound = published[split]
            inside = images <= 2 * seen  # the published curve where this run reaches
            if inside.any():
                shown = True
                axes[0].plot(images[inside], bound[inside], color="0.55", alpha=0.6,
                             linewidth=2.5, linestyle=style,
                             label=f"Kingma & Welling 2014, Fig. 2, AEVB {split} (N_z = {latent})")
    # Early bounds are hundreds of nats down; the interesting part is near the end. An estimator
    # that ends far below the best (the score function without a baseline at 10^7 images ends
    # tens of thousands of nats down) would squash every other curve into a line: the axes
    # follow the others, and its legend entry says where it ends.
    finals = {n: float(np.nanmean(_curves(data["runs"][n], "test_bound")[:, -1]))
              for n in data["labels"]}
    best = max(finals.values())
    off = {n for n, final in finals.items() if not final >= best - OFF_SCALE_NATS}
    for label in data["labels"]:
        record = data["runs"][label]
        history = record["histories"][0]
        tests = _curves(record, "test_bound")
        legend = _label(record) + (f" (below the axes: ends at {finals[label]:,.0f})"
                                   if label in off else "")
        plot_band(axes[0], history["examples_seen"], tests, label=legend,
                  markersize=2.5, **_style(record))
        plot_band(axes[1], history["wall_seconds"], tests, label=legend,
                  markersize=2.5, **_style(record))
    axes[0].set_xscale("log")
    axes[0].set_xlim(first / 1.5, 2 * seen if shown else 1.5 * seen)
    axes[0].set_xlabel("training images seen per run (log scale)")
    axes[1].set_xlabel(f"training time of the group of {data['num_runs']} runs "
                       "(s; evaluations excluded)")
    for ax in axes:
        ax.set_ylabel("test lower bound (ELBO), nats per image")
    kept = [n for n in data["labels"] if n not in off]
    lows = [float(np.nanmin(_curves(data["runs"][n], "test_bound"))) for n in kept]
    top = max([finals[n] for n in kept]
              + ([published["test"][1].max()] if shown and "test" in published else []))
    bottom = min(min(finals[n] for n in kept) - 10, max(min(lows), top - 150))
    for ax in axes:
        ax.set_ylim(bottom - 5, top + 10)
    axes[0].set_title("(a) against training images seen\n(Kingma & Welling 2014, Fig. 2)"
                      + ("" if shown or not published else
                         f"; the published curves start\nat {published['test'][0].min():.1e} "
                         "images, beyond this run"), fontsize=9)
    axes[1].set_title("(b) against training time", fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("MNIST VAE, each estimator for the same training images: test bound on "
                 f"{data['eval_size']:,} test images\n(single-sample ELBO, "
                 f"estimator-independent); mean of {data['num_runs']} runs, band ±1 s.e. over "
                 "runs\n" + data["scale_note"], fontsize=9)
    return save_figure(fig, paths, name, results_path, script or SCRIPT)


OFF_SCALE_NATS = 150  # an estimator ending this far below the best is drawn below the axes


def _plot_gradients(plt, data, results_path, paths, name="mnist-vae-gradients",
                    script=None):
    from .style import mean_and_se, plain_log_ticks

    # One row a quantity, (a) and (b) side by side: four columns were 18 inches wide.
    fig, axes = plt.subplots(4, 2, figsize=(10.4, 12.0), constrained_layout=True)
    reference = data["runs"][data["reference"]]
    symbols = {"encoder": "λ", "decoder": "θ"}
    quantities = [(group, key, se) for group in ("encoder", "decoder")
                  for key, se in (("total_variance", "total_variance_se"),
                                  ("mean_snr", "mean_snr_se"))]
    for label in data["labels"]:
        record = data["runs"][label]
        # (a): run 0 of the first group, every estimator, with the replicates' standard errors
        points = [(p["examples_seen"], p["stats"][label]) for p in reference["probes"]
                  if label in p["stats"]]
        if points:
            seen = np.maximum(np.asarray([p[0] for p in points], float), 1.0)
            for row, (group, key, se) in enumerate(quantities):
                axes[row, 0].errorbar(
                    seen, [s[group][key] for _, s in points],
                    yerr=[s[group][se] for _, s in points], markersize=3.5,
                    capsize=2, label=_label(record), **_style(record))
        # (b): every run of the group with its own estimator: mean and s.e. over runs
        own = [(p["examples_seen"], [s for s in p["runs"] if s is not None])
               for p in record["probes"]]
        own = [(x, stats) for x, stats in own if stats]
        if not own:
            continue
        seen = np.maximum(np.asarray([x for x, _ in own], float), 1.0)
        for row, (group, key, _) in enumerate(quantities):
            means, errors = zip(*[(m.item(), e.item()) for m, e in (
                mean_and_se(np.asarray([[s[group][key]] for s in stats]))
                for _, stats in own)])
            axes[row, 1].errorbar(seen, means, yerr=errors, markersize=3.5,
                                  capsize=2, label=_label(record), **_style(record))
    for row, (group, key, _) in enumerate(quantities):
        axes[row, 0].set_ylabel(
            f"total variance, {group} ({symbols[group]})\ngradient (trace of covariance)"
            if key == "total_variance" else
            f"mean SNR, {group} ({symbols[group]}) gradient\n(|mean| / sd per parameter)")
        for ax in axes[row]:
            ax.set_yscale("log")
            ax.set_xscale("log")  # the trainer's first evaluation follows its first steps
            plain_log_ticks(ax)
    for ax in axes[-1]:
        ax.set_xlabel("training images seen when probed")
    for row, (group, key, _) in enumerate(quantities):
        what = f"{group} {'variance' if key == 'total_variance' else 'SNR'}"
        axes[row, 0].set_title(f"({'aceg'[row]}) {what}, on run 0 of {data['reference']}",
                               fontsize=9)
        axes[row, 1].set_title(f"({'bdfh'[row]}) {what}, on each estimator's own runs",
                               fontsize=9)
    handles, labels = [], []
    for ax in axes[0]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False,
               handlelength=2.6)
    fig.suptitle(f"gradient noise during training: {data['num_replicates']} independent "
                 f"minibatch gradients on one fixed minibatch of {data['probe_batch']} training "
                 f"images.\nLeft: every estimator on the parameters of run 0 of "
                 f"{data['reference']}, ±1 s.e. over the replicates; right: each estimator on "
                 f"its own {data['num_runs']} runs,\nmean and ±1 s.e. over runs. {NVIL} needs "
                 "its own learned baseline, so it is drawn on the right only. On the left the "
                 "K = 1 ELBO\nestimators draw the same z, and given z their decoder gradients "
                 "are the same, so those curves coincide\n" + data["scale_note"], fontsize=9)
    return save_figure(fig, paths, name, results_path, script or SCRIPT)


def _mosaic(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Images (N, 28, 28) as one array of rows of ``columns``, separated by white lines."""
    rows = math.ceil(len(images) / columns)
    out = np.full((rows * (28 + pad) + pad, columns * (28 + pad) + pad), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[pad + r * (28 + pad):pad + r * (28 + pad) + 28,
            pad + c * (28 + pad):pad + c * (28 + pad) + 28] = image
    return out


def _show(ax, images, columns, title):
    ax.imshow(255 - _mosaic(images, columns), cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _plot_pictures(plt, data, results_path, paths, prefix="mnist-vae", script=None):
    import re

    pics = data["pictures"]
    reference = data["reference"]
    note = data["scale_note"]
    figures = []

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 5.6), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1]})
    _show(axes[0], decode_images(pics["prior_samples"]), 10,
          "(a) decoder means of z ~ p(z) = N(0, I)")
    inputs = decode_images(pics["reconstruction_inputs"])
    outputs = decode_images(pics["reconstructions"])
    half = len(inputs) // 2
    rows = np.concatenate([inputs[:half], outputs[:half], inputs[half:], outputs[half:]])
    _show(axes[1], rows, half, "(b) test digits (rows 1, 3) and their reconstructions\n"
                               "(rows 2, 4: decoder mean at the encoder mean)")
    fig.suptitle(f"samples and reconstructions of the model trained with {reference}\n{note}",
                 fontsize=9)
    figures += save_figure(fig, paths, f"{prefix}-samples", results_path,
                               script or SCRIPT)

    if "manifold" in data:
        manifold = data["manifold"]
        size = manifold["size"]
        fig, ax = plt.subplots(figsize=(8, 8.6), constrained_layout=True)
        _show(ax, decode_images(manifold["images"]), size, "")
        axis = np.asarray(manifold["grid"])[:size, 0]
        step = 28 + 1
        ticks = [0, size // 2, size - 1]
        ax.set_xticks([1 + step * i + 14 for i in ticks], [f"{axis[i]:.2f}" for i in ticks])
        ax.set_yticks([1 + step * i + 14 for i in ticks], [f"{axis[::-1][i]:.2f}" for i in ticks])
        ax.set_xlabel("z₁ = Φ⁻¹(u), u evenly spaced in (0, 1)")
        ax.set_ylabel("z₂ = Φ⁻¹(u)")
        # The scale note names the study's own latent (20); this model's is its own, 2.
        own_note = re.sub(r"latent \d+", f"latent {manifold.get('latent', 2)}", note)
        fig.suptitle(f"learned MNIST manifold of a 2-D latent model (Kingma & Welling 2014, "
                     f"Fig. 4):\ndecoder means on a {size} × {size} grid through the inverse "
                     f"Gaussian CDF; trained with {manifold['label']}; test bound "
                     f"{manifold['test_elbo']:.1f} nats\n{own_note}", fontsize=8.5)
        figures += save_figure(fig, paths, f"{prefix}-manifold", results_path,
                               script or SCRIPT)

    fig, ax = plt.subplots(figsize=(9, 6), constrained_layout=True)
    pairs = pics["interpolation_pairs"]
    _show(ax, decode_images(pics["interpolations"]), 10,
          "each row: decoder means along the straight line between the encoder means of two test "
          "digits\n(" + ", ".join(f"{a} → {b}" for a, b in pairs) + ")")
    fig.suptitle(f"interpolation in the latent space of the model trained with {reference}\n{note}",
                 fontsize=9)
    figures += save_figure(fig, paths, f"{prefix}-interpolation", results_path,
                               script or SCRIPT)

    fig, ax = plt.subplots(figsize=(7, 9), constrained_layout=True)
    steps = np.asarray(pics["arithmetic_steps"])
    inputs = decode_images(pics["arithmetic_inputs"])
    shifted = decode_images(pics["arithmetic"]).reshape(len(inputs), len(steps), 28, 28)
    rows = np.concatenate([inputs[:, None], shifted], 1).reshape(-1, 28, 28)
    _show(ax, rows, len(steps) + 1, "column 1: a thin test digit; columns 2-6: decoded z + a · d, "
                                    "a = " + ", ".join(f"{s:g}" for s in steps))
    groups = pics["arithmetic_groups"]
    fig.suptitle("latent arithmetic (the seed's 'glasses' example, with digits):\nd = mean encoder "
                 "mean of thick-stroke minus thin-stroke test digits (top and bottom quarter\nof "
                 f"ink mass relative to the class median: {groups['thick']} and {groups['thin']} "
                 f"images; |d| = {pics['direction_norm']:.2f}),\nadded to the encoder mean z of "
                 f"thin digits; model trained with {reference}\n{note}", fontsize=8)
    figures += save_figure(fig, paths, f"{prefix}-arithmetic", results_path,
                               script or SCRIPT)
    return figures


# --------------------------------------------------------------------------------------------
# Key numbers and the results table: python -m experiments.mnist_vae [RESULTS.json ...]
# --------------------------------------------------------------------------------------------


def _command(entry: dict) -> str:
    """The paper programme's invocation that trains the group behind a published number."""
    part = "c" if entry["protocol"] == "burda" else "a"
    return f"python -m experiments paper --device cuda --parts {part} --budget-minutes 9 --out ."


def _rows(results: dict):
    """(data, run record) for every run of one results file, the manifold run included."""
    data = results["data"]
    records = [data["runs"][label] for label in data["labels"]]
    if "manifold" in data:
        records.append(data["manifold"])
    for record in records:
        yield data, record


def _matches(entry: dict, data: dict, record: dict) -> bool:
    return (entry["protocol"] == data["protocol"] and entry["estimator"] == record["estimator"]
            and entry["num_samples"] == record["num_samples"]
            and entry["latent"] == record["latent"])


def _mean_se(record: dict, key: str, sign: int = 1, digits: int = 2) -> str:
    """'mean ± s.e.' over a group's runs (the mean alone for a group of one run)."""
    mean, se = sign * record[key], record[f"{key}_spread_se"]
    return f"{mean:.{digits}f}" + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


def results_table(results) -> str:
    """Our numbers beside the published ones, as Markdown; ``results``: one results dict or a list."""
    files = [upgrade(r) for r in (results if isinstance(results, list) else [results])]
    lines = []
    for results in files:
        data, meta = results["data"], results["metadata"]
        s = data["settings"]
        k = data["likelihood_k"]
        scale = scale_of(results)
        if scale["kind"] == "quick":
            what = (f"**Scale: quick CPU run** ({data['train_size']:,} training images, "
                    f"{s['epochs']} epochs, {data['test_size']:,} test images, L_k with "
                    f"k = {k}). These numbers are **not comparable** with the published ones, "
                    "which need the paper-scale run on a GPU (commands below).")
        elif scale["kind"] == "reduced":
            what = (f"**Scale: reduced** ({scale['seen']:,} training images seen of the "
                    f"protocol's {scale['full']:,}; {data['train_size']:,} training images, "
                    f"{data['test_size']:,} test images, L_k with k = {k}). These numbers are "
                    "**not comparable** with the published ones, which need the paper-scale "
                    "run (commands below).")
        else:
            what = (f"**Scale: paper** ({scale['seen']:,} training images seen, "
                    f"{data['test_size']:,} test images, L_k with k = {k}).")
        lines += [f"Protocol {data['protocol']} ({s['architecture']} network, batch "
                  f"{s['batch_size']}, {s['schedule']} learning rate); "
                  f"device: {meta.get('device_name', meta.get('device'))}. {what} Each number "
                  "is the mean over the runs of a group ± its standard error over them (the "
                  "runs differ in their seed only); n: the runs counted (a run that diverged is "
                  "left out and named).", "",
                  f"| run | n | latent | test ELBO | L_{k} | NLL = −L_{k} | active units | "
                  "training images seen per run | training time of the group | published |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for data_, record in _rows(results):
            published = [e for e in PUBLISHED if _matches(e, data_, record)]
            note = "; ".join(
                f"{e['source']}: " + (f"NLL {e['value']:.2f}" if e["metric"] == "nll"
                                      else f"test bound ≈ {e['value']:.1f}")
                + ("" if scale["kind"] == "paper" else f" (not comparable: {scale['kind']} scale)")
                for e in published) or "–"
            diverged = "".join(f", run {d['run']} diverged at step {d['step']}"
                               for d in record.get("diverged", []))
            lines.append(
                f"| {record['label']} | {record['runs_counted']}{diverged} | {record['latent']} | "
                f"{_mean_se(record, 'test_elbo')} | {_mean_se(record, 'log_likelihood')} | "
                f"{_mean_se(record, 'log_likelihood', sign=-1)} | "
                f"{_mean_se(record, 'active_units', digits=1)} | "
                f"{record['examples_seen']:,} | {record['wall_seconds']:.1f} s | {note} |")
        lines.append("")
    lines += ["Published numbers and the command that trains the group behind each (the paper "
              "programme, repeated until its plan is done; its own table is printed by "
              "python -m experiments.paper):", "",
              "| published | value | ours | command |", "|---|---|---|---|"]
    for entry in PUBLISHED:
        ours = []
        for results in files:
            for data, record in _rows(results):
                if _matches(entry, data, record):
                    value = (_mean_se(record, "log_likelihood", sign=-1) if entry["metric"] == "nll"
                             else _mean_se(record, "test_elbo"))
                    kind = scale_of(results)["kind"]
                    ours.append(f"{value}" + ("" if kind == "paper" else f" ({kind} scale)"))
        metric = "test NLL (−L_5000)" if entry["metric"] == "nll" else "final test bound"
        lines.append(f"| {entry['source']}, {metric} | {entry['value']:.2f} | "
                     f"{', '.join(ours) or 'not run'} | `{_command(entry)}` |")
    return "\n".join(lines)


def summary(results: dict) -> str:
    """The key numbers of saved results, then the results table."""
    data = upgrade(results)["data"]
    lines = [f"mnist-vae ({results['metadata']['wall_seconds']:.0f} s; {scale_of(results)['note']}): "
             f"per group of {data['num_runs']} runs, the test ELBO of the trained networks on "
             f"{data['test_size']:,} test images (mean ± s.e. over runs, as in the table below), "
             "the group's training time, and the encoder / decoder gradient variance and mean SNR "
             "at the last probe (mean over the runs, each on its own parameters)"]
    for label in data["labels"]:
        record = data["runs"][label]
        parts = []
        own = [s for s in record["probes"][-1]["runs"] if s is not None] if record["probes"] else []
        if own:
            parts = [f"{g} var {np.mean([s[g]['total_variance'] for s in own]):.3g} SNR "
                     f"{np.mean([s[g]['mean_snr'] for s in own]):.3f}"
                     for g in ("encoder", "decoder")]
        lines.append(f"  {label:24s} test ELBO {_mean_se(record, 'test_elbo'):>15s}  "
                     f"{record['wall_seconds']:7.1f} s  " + " | ".join(parts))
    return "\n".join(lines + _paired(data)) + "\n\n" + results_table(results)


def paired(results: dict) -> str:
    """The paired differences of the final test ELBO to the best group, as printed text."""
    return "\n".join(_paired(upgrade(results)["data"])).strip("\n")


def _paired(data: dict) -> list[str]:
    """Each group's final test ELBO against the best group's, run for run (run r of every group
    has the same seed: initialisation, minibatch order, binarization)."""
    from .style import paired_summary

    finals = {label: [f["test_elbo"] for f in data["runs"][label]["finals"]]
              for label in data["labels"]}
    return paired_summary(finals, data.get("num_runs", 1), "the final test ELBO")


def main(argv=None) -> int:
    """The key numbers and the results table (Markdown) of one results file; of several
    (paper-scale runs, one per published number), one table."""
    from .common import summary_main

    return summary_main(NAME, summary, argv, table=results_table, quick_fallback=True)


if __name__ == "__main__":
    raise SystemExit(main())
