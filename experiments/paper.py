"""paper: the MNIST comparisons of the papers, planned to fit a GPU session and resumed across them.

Three parts, each a list of groups; a group is one estimator's ``runs`` training runs, trained as
one (:func:`experiments.mnist_vae.train_group`, :mod:`experiments.mnist.train`):

- (a) Kingma & Welling 2014, Figure 2: the 784-500-latent tanh network, batch 100, latents
  20, 200, 10, 5 and 3 (in that order), ``pathwise_analytic_kl``; the test bound against
  training images seen beside the digitised published AEVB curves, up to ``images`` images per
  run;
- (b) the estimator comparison at Kingma & Welling's scale (latent 20): ``pathwise_analytic_kl``,
  ``pathwise``, ``stl``, ``score_function``, ``score_function_loo:2``, NVIL, ``iwae:5``,
  ``dreg:5`` and ``vimco:5`` (the score-function estimator of the same 5-sample bound), with
  the encoder and decoder gradient variance and SNR probed during training (every estimator on
  run 0 of the first group, each estimator on each of its own runs);
- (c) Burda et al. 2016, Table 1, one stochastic layer: 784-200-200-50, batch 20, Adam on the
  3^i schedule (3280 passes), VAE k = 1 (``pathwise``), IWAE k = 5 and 50, DReG k = 5 and 50;
  the test NLL by L_5000 on all 10,000 test images.

An invocation first measures each unfinished group's step time on its device for a few steps,
then prints the plan (each group, the images it will see, its estimated minutes, whether it fits
in ``budget_minutes``), then trains the groups that fit, in order. A group's checkpoint lives in
the state folder (``results/paper/state/PARTS``, PARTS the chosen parts: ``a``, ``b-c``...),
so the next invocation of the same parts, on this machine or a new one, goes on where this one
stopped; a finished group is written at once, whole, to
``results/paper/groups/GROUP.json``, with its final weights (float32 state dicts, no optimiser
state) in ``results/paper/weights/GROUP.pt``, so an invocation stopped at any point loses no
finished group. With ``partial`` the first group that does not fit trains for the time left and
is checkpointed, to be continued by the next invocation (groups longer than one invocation).
The state folder records the plan; an invocation with another plan is refused. When every
group is finished, what the programme wrote in the state folder is deleted (and the folder, once
empty); a state folder holding other files, or one that is or holds the output folder, is
refused before any work. An invocation holds the state folder's lock (:mod:`experiments.mnist.lock`)
from start to end: a second invocation on the same state folder is refused at once.

Shipped weights carry a SHA-256 in the envelope of the checkpoints (:func:`save_weights`,
:func:`load_weights`); a damaged file is refused in one line. Before measuring anything an
invocation checks every finished group: its record is readable and its own, its weights are
there, inside the output folder, and match their checksum.

Under ``torchrun`` (one process per GPU) the ranks share the groups out, rank r taking every
world-th one of the plan, each on its own device; rank 0 then writes the results.

``python -m experiments figures`` redraws the figures from the saved results and, for the
pictures, from the shipped weights, on a CPU; ``python -m experiments.paper evaluate WEIGHTS``
computes L_k of a group's shipped weights on the test set with no training. Both need an
invocation's output first: the paper-scale ones come from a GPU
(``python -m experiments paper --device cuda --out .``), the quick ones from
``python -m experiments paper --quick`` on a CPU (under ``runs/quick/``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import mnist_vae
from .common import (StudyConfig, _device_name, _jsonable, atomic_write, machine_free, progress,
                     save_figure)
from .mnist.checkpoint import CheckedFileError
from .replicated import NVIL

NAME = "paper"
SUMMARY = ("the papers' MNIST comparisons (Kingma & Welling Fig. 2, the estimators, Burda et "
           "al. Table 1) in budgeted, resumable invocations")
SCRIPT = "experiments/paper.py"
# An invocation of some parts keeps the finished groups of the others: its results merge them
# (collect), so it never drops a part that an earlier invocation finished.
MERGES_PARTS = True

PARTS = {
    "a": {"title": "Kingma & Welling 2014, Figure 2", "protocol": "kingma-welling",
          "groups": [("pathwise_analytic_kl", latent) for latent in (20, 200, 10, 5, 3)]},
    # (b) trains its own groups, its pathwise_analytic_kl one too: its gradient probes and its
    # device are those of the comparison, whatever machine trained (a)'s latent 20.
    "b": {"title": "the estimator comparison at Kingma & Welling's scale",
          "protocol": "kingma-welling", "family": "estimators",
          "groups": [(label, 20) for label in ("pathwise_analytic_kl", "pathwise", "stl",
                                                "score_function", "score_function_loo:2", NVIL,
                                                "iwae:5", "dreg:5", "vimco:5")]},
    "c": {"title": "Burda et al. 2016, Table 1 (one stochastic layer)", "protocol": "burda",
          "groups": [(label, 50) for label in ("pathwise", "iwae:5", "iwae:50", "dreg:5",
                                                "dreg:50")]},
}


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    parts: tuple = ("a", "b", "c")  # which parts to plan and train: a, b, c
    budget_minutes: float = 8.0  # wall-clock minutes this invocation may train for (the plan fits it)
    partial: bool = False  # let the first group that does not fit train for the time left, to be continued
    runs: int = 3  # runs of every group, trained as one (seeds seed .. seed + runs - 1)
    images: int = 10_000_000  # (a), (b): training images per run
    kw_eval_every: int = 250_000  # (a), (b): training images between test-bound evaluations
    burda_epochs: int = 3280  # (c): passes over the training set (the schedule's 3280)
    burda_eval_every: int = 3_000_000  # (c): training images between evaluations
    train_size: int = 0  # training images, the first n (0: all 60,000)
    test_size: int = 0  # test images of the final numbers (0: all 10,000)
    eval_size: int = 1000  # test images of each evaluation during training
    likelihood_k: int = 5000  # k of the final L_k (Burda et al.: 5000)
    probe_fractions: tuple = (0.0, 0.01, 0.1, 1.0)  # (b): where in training gradients are probed
    probe_batch: int = 100  # (b): training images of the probe minibatch
    num_replicates: int = 256  # (b): independent gradient estimates per probe
    replicate_chunk: int = 64  # (b): replicates per vectorised pass
    measure_steps: int = 300  # steps timed per unfinished group to plan (after as many untimed)
    capture: str = "auto"  # CUDA graphs: "auto" (CUDA; eager elsewhere, silently), "true", "false"
    compile: bool = False  # torch.compile the step (CUDA)
    dtype: str = "float32"
    data_dir: str = ""  # MNIST folder ("": $MNIST_DIR or the default places)
    state: str = ""  # the state folder ("": results/paper/state/PARTS under the output folder)

    @classmethod
    def quick(cls) -> "Config":
        """A few hundred images per group on a CPU: every part end to end, for the tests."""
        return cls(quick=True, runs=2, images=200, kw_eval_every=100, burda_epochs=1,
                   burda_eval_every=100, train_size=200, test_size=130, eval_size=50,
                   likelihood_k=10, probe_fractions=(1.0,), probe_batch=10,
                   num_replicates=2, replicate_chunk=2, measure_steps=1, budget_minutes=30.0)


# --------------------------------------------------------------------------------------------
# Groups and the plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    protocol: str
    label: str  # NAME or NAME:K
    latent: int
    parts: tuple  # the parts it belongs to
    family: str = ""  # a part's own name for its groups ("": none), in the key and checkpoint

    @property
    def name(self) -> str:
        """The checkpoint's name: the label and latent, after the family if there is one."""
        slug = f"{self.label}-z{self.latent}".replace("+", "-").replace(":", "-k")
        return f"{self.family}-{slug}" if self.family else slug

    @property
    def key(self) -> str:
        return f"{self.protocol}-{self.name}"


def group_of(part: str, label: str, latent: int) -> Group:
    """The group of ``part`` that trains ``label`` at ``latent`` (its parts: that one)."""
    return Group(PARTS[part]["protocol"], label, latent, (part,), PARTS[part].get("family", ""))


def groups_of(config: Config) -> list[Group]:
    """The groups of the chosen parts, in order, each once (two parts that named the same
    protocol, estimator and latent without a family of their own would share the group)."""
    found: dict[str, Group] = {}
    for part in config.parts:
        for label, latent in PARTS[part]["groups"]:
            group = group_of(part, label, latent)
            if group.key in found:
                group = dataclasses.replace(found[group.key],
                                            parts=found[group.key].parts + (part,))
            found[group.key] = group
    return list(found.values())


def study_config(config: Config, group: Group) -> "mnist_vae.Config":
    """The mnist-vae study's config that trains ``group`` at the programme's scale."""
    kw = group.protocol == "kingma-welling"
    return mnist_vae.Config(
        seed=config.seed, device=config.device, quick=config.quick, protocol=group.protocol,
        latent=group.latent, estimators=(group.label,), runs=config.runs,
        epochs=0 if kw else config.burda_epochs, max_examples=config.images if kw else 0,
        train_size=config.train_size, test_size=config.test_size,
        eval_every=config.kw_eval_every if kw else config.burda_eval_every,
        eval_size=config.eval_size, likelihood_k=config.likelihood_k,
        probe_fractions=config.probe_fractions, probe_batch=config.probe_batch,
        num_replicates=config.num_replicates, replicate_chunk=config.replicate_chunk,
        manifold_latent=0, dtype=config.dtype, compile=config.compile,
        capture=capture_mode(config) != "false", data_dir=config.data_dir, resume=True)


CAPTURE_WORDS = {"auto": "auto", "true": "true", "1": "true", "yes": "true", "false": "false",
                 "0": "false", "no": "false"}


def capture_mode(config: Config) -> str:
    """"auto", "true" or "false" (``capture`` as given, bools and their words included)."""
    value = config.capture
    if isinstance(value, bool):
        return "true" if value else "false"
    return CAPTURE_WORDS.get(str(value).lower(), str(value))


def _measured(group: Group, config: Config) -> list[str]:
    """The estimators probed along the group's training: (b)'s, on run 0 of (b)'s first group."""
    if "b" not in group.parts:
        return []
    labels = [label for label, _ in PARTS["b"]["groups"]]
    return labels if group.label == labels[0] else [group.label]


def plan_identity(config: Config) -> dict:
    """What an invocation must share with the one that made the state folder."""
    fields = ("parts", "runs", "images", "kw_eval_every", "burda_epochs", "burda_eval_every",
              "train_size", "test_size", "eval_size", "likelihood_k", "probe_fractions",
              "probe_batch", "num_replicates", "replicate_chunk", "seed", "dtype", "quick")
    return {name: _plain(getattr(config, name)) for name in fields}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


class Folders:
    """Where the programme keeps its state and writes its results, under the output folder."""

    def __init__(self, config: Config, paths):
        base = paths.results / ("paper-quick" if config.quick else "paper")
        self.root = Path(paths.root)
        self.base = base
        # One state folder for each choice of parts: an invocation of (a) on one machine and
        # one of (b) and (c) on another keep their plans and checkpoints apart.
        self.own_state = not config.state
        self.state = Path(config.state) if config.state else base / "state" / "-".join(
            config.parts)
        self.groups = base / "groups"
        self.weights = base / "weights"
        self.outputs = (Path(paths.root), paths.results, paths.figures, base, self.groups,
                        self.weights)

    def group_file(self, group: Group) -> Path:
        return self.groups / f"{group.key}.json"

    def weights_file(self, group: Group) -> Path:
        return self.weights / f"{group.key}.pt"

    def state_bytes(self) -> int:
        if not self.state.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.state.rglob("*") if f.is_file())


def validate(config: Config) -> None:
    """Refuse, with one line naming the fix, what the programme cannot run."""
    unknown = [part for part in config.parts if part and part not in PARTS]
    problems = [
        ("" in config.parts, f"parts has an empty name ({','.join(config.parts)}); name parts "
                             f"separated by single commas, e.g. --parts a,b"),
        (not config.parts or bool(unknown),
         f"unknown part(s) {', '.join(unknown) or '(none given)'}; use --set parts= with any of "
         f"{', '.join(PARTS)}, e.g. --set parts=a,b"),
        (capture_mode(config) not in ("auto", "true", "false"),
         f"capture must be auto, true or false, got {config.capture!r}"),
        (len(set(config.parts)) != len(config.parts), "a part is named twice in parts"),
        (not config.budget_minutes > 0 or not math.isfinite(config.budget_minutes),
         f"budget_minutes must be a positive number, got {config.budget_minutes}"),
        (config.runs < 1, f"runs must be >= 1, got {config.runs}"),
        (config.measure_steps < 1, f"measure_steps must be >= 1, got {config.measure_steps}"),
        (min(config.images, config.kw_eval_every, config.burda_epochs,
             config.burda_eval_every) < 1, "images, eval intervals and burda_epochs must be >= 1"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: paper: {message}")
    for group in groups_of(config):
        mnist_vae.validate(study_config(config, group))


def _own_pattern(config: Config) -> re.Pattern:
    """The names of what the programme writes in a state folder: the plan, each group's
    checkpoint and probes (:func:`mnist_vae.checkpoint_path`: the trainer's settings hashed into
    the name), its invocations, and the temporary and lock files of their writes."""
    names = [re.escape("plan.json")]
    for group in groups_of(config):
        slug = re.escape(group.name)
        names += [slug + r"-[0-9a-f]{10}\.(pt|probes\.json)",
                  re.escape(f"{group.key}.invocations.json")]
    plain = "|".join(names)
    return re.compile(rf"({plain})|\.({plain})\.(\w+\.tmp|lock)")


def _check_state_folder(folders: Folders, config: Config) -> None:
    """Refuse a state folder the programme could not clean up after itself: one that is, or
    holds, the output folder or its results, or one that holds files the programme did not
    write (deleted with it when the programme completed, before this check)."""
    state = folders.state.resolve()
    for output in folders.outputs:
        output = output.resolve()
        if state == output or state in output.parents:
            raise SystemExit(f"error: paper: the state folder {folders.state} is "
                             f"{'the' if state == output else 'above the'} output folder "
                             f"{output if state == output else folders.root}; give "
                             "--set state= a folder of its own (default: results/paper/state/"
                             "PARTS under --out)")
    if not folders.state.exists():
        return
    if not folders.state.is_dir():
        raise SystemExit(f"error: paper: the state folder {folders.state} is a file; give "
                         "--set state= a folder")
    own = _own_pattern(config)
    other = sorted(p.name for p in folders.state.iterdir()
                   if not (p.is_file() and own.fullmatch(p.name)))
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise SystemExit(f"error: paper: the state folder {folders.state} holds files the "
                         f"programme did not write ({shown}); give --set state= a folder of its "
                         "own, or move them out")


def _clean_state(folders: Folders, config: Config) -> None:
    """Delete what the programme wrote in the state folder (the folder too, once empty)."""
    if not folders.state.is_dir():
        return
    own = _own_pattern(config)
    for path in folders.state.iterdir():
        if path.is_file() and own.fullmatch(path.name):  # lock files too: their holders ended
            path.unlink(missing_ok=True)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or not there
        pass


def _state_lock(folders: Folders):
    from .mnist.lock import holding

    return holding(folders.state, f"the state folder {folders.state}",
                   "wait for that invocation to end, or give this one its own --set state= "
                   "(or --out)")


def _read_plan(folders: Folders) -> dict | None:
    plan_file = folders.state / "plan.json"
    if not plan_file.exists():
        return None
    how = (f"restore it, or delete it to plan afresh (the checkpoints beside it are kept and "
           "resumed where they fit the new plan)")
    try:
        saved = json.loads(plan_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: paper: the plan {plan_file} is damaged or not JSON "
                         f"({type(error).__name__}); {how}") from None
    if not isinstance(saved, dict):
        raise SystemExit(f"error: paper: the plan {plan_file} holds a "
                         f"{type(saved).__name__}, not a plan; {how}")
    return saved


def _check_plan(folders: Folders, config: Config) -> None:
    """Refuse an invocation with another plan than the state folder records."""
    saved = _read_plan(folders)
    wanted = plan_identity(config)
    if saved is not None:
        changed = [k for k in wanted if saved.get(k) != wanted[k]]
        if changed:
            raise SystemExit(
                f"error: paper: the state folder {folders.state} holds another plan (it differs "
                f"in {', '.join(changed)}: {', '.join(f'{k}={saved.get(k)}' for k in changed)}); "
                f"go on with those settings, or start another with --set state=NEW_FOLDER")


def _record_plan(folders: Folders, config: Config) -> None:
    """Write the plan, once training starts (a refused invocation leaves none behind)."""
    if _read_plan(folders) is None:
        text = json.dumps(plan_identity(config), indent=1)
        atomic_write(folders.state / "plan.json", lambda tmp: Path(tmp).write_text(text))


# The keys of a finished group's record that the table, the figures and the checks read.
RECORD_KEYS = ("group", "label", "parts", "protocol", "latent", "seeds", "histories", "finals",
               "probes", "invocations", "weights", "runs_counted", "examples_seen", "test_elbo",
               "test_elbo_spread_se", "log_likelihood", "log_likelihood_spread_se",
               "likelihood_k", "settings", "eval_size")


def _inside(root: Path, relative) -> Path | None:
    """``root / relative`` if it stays inside ``root`` (no ``..`` out of it, no absolute path)."""
    if not isinstance(relative, str) or not relative:
        return None
    path = (Path(root) / relative).resolve()
    return path if Path(root).resolve() in (path, *path.parents) else None


def _check_finished(folders: Folders, config: Config) -> None:
    """Refuse, before any work, a finished group whose record or weights cannot be used (else
    found only when the results were collected, after every remaining group had trained)."""
    for group in groups_of(config):
        path = folders.group_file(group)
        if not path.exists():
            continue
        again = f"delete {path} to train the group again"
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SystemExit(f"error: paper: the finished group's record {path} is damaged or "
                             f"not JSON ({type(error).__name__}); restore it, or {again}") from None
        if not isinstance(record, dict) or record.get("group") != group.key:
            found = record.get("group") if isinstance(record, dict) else type(record).__name__
            raise SystemExit(f"error: paper: {path} is not the record of {group.key} (it holds "
                             f"{found!r}); restore it, or {again}")
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise SystemExit(f"error: paper: the record {path} lacks {', '.join(missing)}; "
                             f"restore it, or {again}")
        weights = _inside(folders.root, record["weights"])
        if weights is None:
            raise SystemExit(f"error: paper: the record {path} names weights "
                             f"{record['weights']!r} outside the output folder; restore it, or "
                             f"{again}")
        if not weights.is_file():
            raise SystemExit(f"error: paper: the weights of the finished group {group.key} "
                             f"({weights}) are missing; restore them, or {again}")
        try:
            payload = load_weights(weights)
        except WeightsError as error:
            advice = error.how if "has no checksum" in error.problem else "restore them"
            raise SystemExit(f"error: paper: {error.problem}; {advice}, or {again}") from None
        if payload["group"] != group.key:
            raise SystemExit(f"error: paper: {weights} holds the weights of "
                             f"{payload['group']}, not of {group.key}; restore them, or {again}")


# --------------------------------------------------------------------------------------------
# Measuring, planning, training
# --------------------------------------------------------------------------------------------


def _data(config: Config, device: str) -> dict:
    settings = mnist_vae.Config(seed=config.seed, device=device, train_size=config.train_size,
                                test_size=config.test_size, eval_size=config.eval_size,
                                probe_batch=config.probe_batch, data_dir=config.data_dir,
                                dtype=config.dtype, manifold_latent=0)
    return mnist_vae.load_data(settings)


def measure(group: Group, config: Config, data: dict, device: str) -> dict:
    """Seconds per step of the group on ``device`` (``measure_steps`` steps after as many untimed
    ones, which hold warm-up, capture and compiling), seconds per test-bound evaluation, and
    seconds per pass of the final L_k."""
    from .mnist.train import train

    trainer = mnist_vae.train_config(study_config(config, group).replace(device=device),
                                     group.label, group.latent)
    steps = config.measure_steps
    trainer = trainer.replace(max_examples=2 * steps * trainer.batch_size,
                              eval_every=steps * trainer.batch_size, epochs=max(
                                  trainer.epochs, math.ceil(2 * steps * trainer.batch_size
                                                            / len(data["train"]))))
    started = time.perf_counter()
    result = train(trainer, train_data=data["train"], test_images=data["test"],
                   distributed=False, announce=False)
    elapsed = time.perf_counter() - started
    wall = result.history["wall_seconds"]
    per_step = (wall[-1] - wall[0]) / steps if len(wall) > 1 else wall[-1] / (2 * steps)
    # An evaluation of the group's runs, timed on its own; what the measuring run spent beyond
    # its steps and its evaluations (building, compiling, capturing) every training pays once.
    per_evaluation = config.runs * _evaluation_seconds(result.vae, data["test"])
    setup = max(elapsed - 2 * steps * per_step - len(wall) * per_evaluation, 0.0)
    return {"seconds_per_step": per_step, "seconds_per_evaluation": per_evaluation,
            "setup_seconds": setup,
            "seconds_per_likelihood_chunk": _likelihood_chunk_seconds(result.vae, data["test"])}


def _evaluation_seconds(vae, images: torch.Tensor) -> float:
    """Seconds of one run's test bound on ``images``, after one untimed."""
    from .mnist.evaluate import test_elbo

    for _ in range(2):
        started = time.perf_counter()
        test_elbo(vae, images)  # returns a float: the device has finished
        elapsed = time.perf_counter() - started
    return elapsed


@torch.no_grad()
def _likelihood_chunk_seconds(vae, images: torch.Tensor, chunks: int = 2) -> float:
    """Seconds of one pass of the final L_k (LIKELIHOOD_CHUNK samples for LIKELIHOOD_BATCH test
    images), timed over ``chunks`` passes after one untimed: the final L_k makes
    ceil(k / LIKELIHOOD_CHUNK) passes a batch, so its time is priced from its own kernels on the
    device, not from a training step's (a GPU's step is latency-bound, its L_k pass is not)."""
    from .mnist.evaluate import (LIKELIHOOD_BATCH, LIKELIHOOD_CHUNK,
                                 importance_sampled_log_likelihood)

    vae.eval()
    x = images[:LIKELIHOOD_BATCH]
    for passes in (1, chunks):  # the first is the warm-up; .cpu() at the end synchronises
        started = time.perf_counter()
        importance_sampled_log_likelihood(vae, x, num_samples=passes * LIKELIHOOD_CHUNK,
                                          chunk=LIKELIHOOD_CHUNK, batch_size=LIKELIHOOD_BATCH)
        elapsed = time.perf_counter() - started
    return elapsed / chunks * LIKELIHOOD_BATCH / x.shape[0]


def estimate(group: Group, config: Config, data: dict, timing: dict, done_steps: int) -> dict:
    """The group's steps left, and the minutes they and its evaluations are expected to take."""
    from .mnist.evaluate import LIKELIHOOD_BATCH, LIKELIHOOD_CHUNK
    from .mnist.schedule import total_steps

    trainer = mnist_vae.train_config(study_config(config, group), group.label, group.latent)
    steps = total_steps(trainer, len(data["train"]))
    left = max(steps - done_steps, 0)
    batch = trainer.batch_size
    evaluations = left * batch // trainer.eval_every + 1
    probes = len(_measured(group, config)) * len(config.probe_fractions) * config.runs
    # The final L_k of every run: ceil(k / chunk) passes for each batch of test images.
    passes = (math.ceil(config.likelihood_k / LIKELIHOOD_CHUNK)
              * math.ceil(data["test_all"].shape[0] / LIKELIHOOD_BATCH))
    final = config.runs * passes * timing["seconds_per_likelihood_chunk"]
    seconds = (timing.get("setup_seconds", 0.0) + left * timing["seconds_per_step"]
               + evaluations * timing["seconds_per_evaluation"]
               + probes * timing["seconds_per_evaluation"] + final)
    return {"steps": steps, "steps_left": left, "images_per_run": steps * batch,
            "minutes": seconds / 60}


def _checkpoint(group: Group, config: Config, folders: Folders) -> Path:
    """The group's checkpoint in the state folder (as mnist_vae.train_group names it)."""
    trainer = mnist_vae.train_config(study_config(config, group), group.label, group.latent)
    return mnist_vae.checkpoint_path(folders.base, group.name, trainer,
                                     folders.state)


def _done_steps(group: Group, config: Config, folders: Folders) -> int:
    """Steps an unfinished group's checkpoint holds (0 if none)."""
    from .mnist.checkpoint import CheckpointError, load_checkpoint

    path = _checkpoint(group, config, folders)
    if not path.exists():
        return 0
    afresh = f"delete {path} to train the group afresh (finished groups are kept)"
    try:
        return int(load_checkpoint(path, how=afresh)["step"])
    except CheckpointError as error:
        raise SystemExit(f"error: paper: {error.problem}; {afresh}") from None
    except (KeyError, TypeError, ValueError):
        raise SystemExit(f"error: paper: {path} holds no step count; {afresh}") from None


def print_plan(rows: list[dict], budget: float, partial: bool, world: int) -> None:
    """The plan, one line a group, before any training."""
    print(f"plan: {len(rows)} group(s) to train; budget {budget:g} minutes"
          + (f" per rank, {world} ranks" if world > 1 else "")
          + ("; the first group that does not fit trains for the time left" if partial else ""),
          file=sys.stderr)
    header = (f"  {'group':50s} {'part':4s} {'protocol':15s} {'estimator':22s} {'K':>3s} "
              f"{'latent':>6s} {'runs':>4s} {'images/run':>11s} {'ms/step':>8s} {'minutes':>8s}"
              "  verdict")
    print(header, file=sys.stderr)
    for row in rows:
        group = row["group"]
        name, _, samples = group.label.partition(":")
        print(f"  {group.key:50s} {','.join(group.parts):4s} {group.protocol:15s} {name:22s} "
              f"{samples or '1':>3s} {group.latent:6d} {row['runs']:4d} "
              f"{row['images_per_run']:11,d} {1e3 * row['seconds_per_step']:8.2f} "
              f"{row['minutes']:8.2f}  {row['verdict']}", file=sys.stderr)


def plan(rows: list[dict], budget_minutes: float, partial: bool) -> list[dict]:
    """Mark each row "fits", "partial" or "later": in order, while the estimates fit the budget."""
    left = budget_minutes
    cut = False
    for row in rows:
        if not cut and row["minutes"] <= left:
            row["verdict"] = "fits"
            left -= row["minutes"]
        elif not cut and partial and left > 0:
            row["verdict"] = f"partial (about {left:.1f} of its {row['minutes']:.1f} minutes)"
            left, cut = 0.0, True
        else:
            row["verdict"] = "later"
            cut = True
    return rows


def run(config: Config, paths) -> dict | None:
    from .mnist.lock import LockHeld

    validate(config)
    folders = Folders(config, paths)
    rank, world, local = _rank()
    device = config.device
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{local}"  # one process per GPU, each its own groups
    _check_state_folder(folders, config)
    # Rank 0 holds the state folder for the whole invocation (the other ranks of a torchrun are
    # its own, and end before it does) and tells them whether it could.
    with contextlib.ExitStack() as held:
        refusal = None
        if rank == 0:
            try:
                held.enter_context(_state_lock(folders))
            except LockHeld as error:
                refusal = f"error: paper: {error}"
        if world > 1:
            refusal = _share(refusal)
        if refusal:
            raise SystemExit(refusal)
        _check_state_folder(folders, config)  # again, now that no other invocation writes
        results = _run_held(config, paths, folders, rank, world, device)
    if results is not None and results["complete"]:
        _remove_if_empty(folders.state)
        if folders.own_state:
            _remove_if_empty(folders.state.parent)
    return results


def _cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _run_held(config: Config, paths, folders: Folders, rank: int, world: int,
              device: str) -> dict | None:
    if rank == 0:
        _check_plan(folders, config)
    _check_finished(folders, config)
    mode = capture_mode(config)
    if rank == 0 and mode != "false" and (mode == "true" or _cuda(device)):
        # Once for the invocation; the trainer, which trains each group, is told to keep quiet.
        print("paper: capture: each step runs as one CUDA graph (after 3 eager warm-up steps)"
              if _cuda(device) else "paper: capture: skipped (CUDA graphs need a CUDA device); "
              "steps run eagerly", file=sys.stderr)
    every = groups_of(config)
    # Rank r's groups are every world-th of the plan, whatever is finished: each rank the same
    # groups in every invocation, so their checkpoints are always its own.
    mine = [g for g in every[rank::world] if not folders.group_file(g).exists()]
    data = _data(config, device)
    started = time.perf_counter()
    rows = []
    for group in progress(mine, desc="paper: measuring"):
        timing = measure(group, config, data, device)
        rows.append({"group": group, "runs": config.runs, **timing,
                     **estimate(group, config, data, timing, _done_steps(group, config, folders))})
    rows = plan(rows, config.budget_minutes - (time.perf_counter() - started) / 60,
                config.partial)
    print_plan(rows, config.budget_minutes, config.partial, world)
    training = [row for row in rows if row["verdict"] != "later"]
    if mine and not training:
        smallest = min(row["minutes"] for row in rows)
        raise SystemExit(f"error: paper: a budget of {config.budget_minutes:g} minutes fits no "
                         f"group; the smallest needs about {math.ceil(smallest + 1)} minutes: "
                         f"use --budget-minutes {math.ceil(smallest + 1)}, or --set partial=true "
                         "to train a part of one and go on in the next invocation")
    if rank == 0:
        _record_plan(folders, config)
    deadline = started + 60 * config.budget_minutes
    for row in training:
        group = row["group"]
        limit = None if row["verdict"] == "fits" else max(deadline - time.perf_counter(), 0.0)
        finished = train_group(group, config, paths, folders, data, device, time_limit=limit,
                               planned_minutes=row["minutes"])
        if not finished:
            print(f"paper: {group.key} stopped at the budget; its state is in {folders.state}"
                  f" ({folders.state_bytes() / 2 ** 20:.1f} MB)", file=sys.stderr)
    if world > 1:
        _barrier()
    if rank != 0:
        return None
    return collect(config, paths, folders)


def _share(refusal: str | None) -> str | None:
    """Rank 0's refusal (or None), as every rank of a torchrun sees it."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    box = [refusal]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    """Wait for every rank's groups (gloo: no GPU needed for the wait)."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    torch.distributed.barrier()


def command_line(argv) -> str:
    """The invocation as records keep it: no folder of this machine, neither as a word
    (``--out /home/...``) nor as a value (``--set state=/home/...``)."""
    return " ".join([Path(sys.executable).name, "-m", "experiments", *map(machine_free, argv)])


def _earlier_invocations(log: Path) -> list:
    """The invocations that trained a group before this one (a damaged log is named)."""
    if not log.exists():
        return []
    try:
        earlier = json.loads(log.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        earlier = None
    if not isinstance(earlier, list):
        raise SystemExit(f"error: paper: {log} is damaged (not a list of invocations); delete "
                         "it (the group's record then lists this invocation only) and go on")
    return earlier


def train_group(group: Group, config: Config, paths, folders: Folders, data: dict, device: str,
                time_limit: float | None = None, planned_minutes: float | None = None) -> bool:
    """Train (or go on training) one group; write its record and weights when it finishes.

    ``planned_minutes``: the plan's estimate for what this invocation trains of the group, kept
    beside the measured seconds so that the plan can be checked against what happened."""
    study = study_config(config, group).replace(device=device)
    own = {**data, "total": mnist_vae.total_examples(study, len(data["train"]))}
    log = folders.state / f"{group.key}.invocations.json"
    earlier = _earlier_invocations(log)  # read first: a damaged log costs no training
    started = time.perf_counter()
    record, _ = mnist_vae.train_group(study, group.label, paths, own, _measured(group, config),
                                      latent=group.latent, checkpoints=folders.state,
                                      time_limit=time_limit, distributed=False, who=NAME,
                                      announce=False, name=group.name)
    invocation = {"command": command_line(sys.argv[1:]),
                  "device": device, "device_name": _device_name(device),
                  "seconds": round(time.perf_counter() - started, 3),
                  "planned_minutes": (None if planned_minutes is None
                                      else round(planned_minutes, 2)),
                  "finished": record is not None}
    if record is None:
        text = json.dumps(earlier + [invocation])
        atomic_write(log, lambda tmp: Path(tmp).write_text(text))
        return False
    weights = _ship_weights(group, config, study, folders, record)
    record.update(group=group.key, parts=list(group.parts), protocol=group.protocol,
                  invocations=earlier + [invocation], weights=mnist_vae._relative(
                      weights, paths.root),
                  settings=mnist_vae.settings(study),
                  train_size=len(data["train"]), test_size=int(data["test_all"].shape[0]),
                  likelihood_k=config.likelihood_k, eval_size=int(data["test"].shape[0]))
    record.pop("checkpoint", None)
    text = json.dumps(_jsonable(record))
    atomic_write(folders.group_file(group), lambda tmp: Path(tmp).write_text(text))
    checkpoint = _checkpoint(group, config, folders)
    for leftover in (checkpoint, checkpoint.with_suffix(".probes.json"), log):
        leftover.unlink(missing_ok=True)
    return True


def _ship_weights(group: Group, config: Config, study, folders: Folders, record: dict) -> Path:
    """Run 0's final network, float32, no optimiser state: what figures and L_k need."""
    from .mnist.checkpoint import load_checkpoint
    from .mnist.group import build_group
    from .mnist.train import DTYPES

    trainer = mnist_vae.train_config(study, group.label, group.latent)
    saved = load_checkpoint(_checkpoint(group, config, folders))
    stacked = build_group(trainer.replace(device="cpu"), torch.device("cpu"),
                          DTYPES[trainer.dtype])
    stacked.vae.load_state_dict(saved["vae"])
    # Run 0's network only (3 to 5 MB): the pictures and L_k need one; every run's numbers are
    # in the group's record.
    runs = [{k: v.to(torch.float32) for k, v in stacked.run_vae(0).state_dict().items()}]
    payload = {"group": group.key, "architecture": trainer.architecture, "latent": trainer.latent,
               "likelihood": trainer.likelihood, "seeds": trainer.seeds[:1], "runs": runs}
    return save_weights(payload, folders.weights_file(group))


WEIGHTS_FORMAT = "vae-gradients MNIST weights, version 1"


# Where weights come from, for a message about a file that is not there.
_WHERE_WEIGHTS = ("the paper programme writes them under results/paper/weights/ of its --out "
                  "folder, on a GPU (python -m experiments paper --device cuda --out .), or under "
                  "runs/quick/results/paper-quick/weights/ with python -m experiments paper "
                  "--quick on a CPU; run one first")


class WeightsError(CheckedFileError):
    """Shipped weights that cannot be used; the message names the file and what to do."""


def _payload_problem(payload) -> str | None:
    """What makes ``payload`` not a weights payload, or None: a dict with group, architecture,
    latent, likelihood, seeds and runs (one state dict of tensors per seed)."""
    from .mnist.models import ARCHITECTURES

    if not isinstance(payload, dict):
        return f"holds a {type(payload).__name__}, not a dict of weights"
    missing = [key for key in ("group", "architecture", "latent", "likelihood", "seeds", "runs")
               if key not in payload]
    if missing:
        return f"lacks {', '.join(missing)}"
    runs, seeds = payload["runs"], payload["seeds"]
    checks = [
        (isinstance(payload["group"], str), "its group is not a name"),
        (payload["architecture"] in ARCHITECTURES,
         f"its architecture {payload['architecture']!r} is unknown"),
        (isinstance(payload["latent"], int) and not isinstance(payload["latent"], bool)
         and payload["latent"] >= 1, "its latent is not a positive integer"),
        (payload["likelihood"] in ("bernoulli", "gaussian"), "its likelihood is unknown"),
        (isinstance(runs, list) and len(runs) >= 1
         and all(isinstance(r, dict) and r and all(torch.is_tensor(v) for v in r.values())
                 for r in runs), "its runs are not state dicts of tensors"),
        (isinstance(seeds, list) and isinstance(runs, list) and len(seeds) == len(runs),
         "it has not one seed per run"),
    ]
    return next((problem for ok, problem in checks if not ok), None)


def save_weights(payload: dict, path) -> Path:
    """Write a weights payload (a dict with group, architecture, latent, likelihood, seeds and
    runs, as the programme ships them) at ``path`` with its SHA-256, atomically.

    Weights written without a checksum by an earlier version are converted by loading them and
    saving them again: ``save_weights(torch.load(path, weights_only=True), path)``, or
    ``python -m experiments.paper checksum FILE ...``.
    """
    from .mnist.checkpoint import save_checked

    problem = _payload_problem(payload)
    if problem is not None:
        raise ValueError(f"not a weights payload: it {problem}")
    return save_checked(Path(path), payload, WEIGHTS_FORMAT)


def load_weights(path) -> dict:
    """The weights payload :func:`save_weights` wrote at ``path``, checked against its SHA-256
    and its structure; :class:`WeightsError` with one line otherwise (a damaged, truncated,
    empty, foreign or text file, or weights without a checksum)."""
    from .mnist.checkpoint import load_checked

    path = Path(path)
    again = "restore them, or train the group again"
    if not path.is_file():
        raise WeightsError(f"no weights file {path}", _WHERE_WEIGHTS)
    try:
        payload = load_checked(path, WEIGHTS_FORMAT, what="weights of the paper programme",
                               error=WeightsError, how=again)
    except WeightsError as error:
        if "(format None" in error.problem and _legacy(path):
            raise WeightsError(f"{path} has no checksum (weights written before they had one)",
                               f"add one with python -m experiments.paper checksum {path}") \
                from None
        raise
    problem = _payload_problem(payload)
    if problem is not None:
        raise WeightsError(f"{path} is not weights of the paper programme: it {problem}", again)
    return payload


def _legacy(path: Path) -> bool:
    """Whether ``path`` holds a weights payload as earlier versions saved it, unchecked."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001: any failure means it is not one
        return False
    return _payload_problem(payload) is None


def weights_vae(payload: dict, run: int = 0, path=None):
    """Run ``run``'s VAE from a weights payload, on the CPU, in evaluation mode."""
    from .mnist.models import ARCHITECTURES, VAE

    vae = VAE(ARCHITECTURES[payload["architecture"]](payload["latent"]),
              likelihood=payload["likelihood"])
    try:
        vae.load_state_dict(payload["runs"][run])
    except (RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:160]
        raise WeightsError(f"{path or 'the weights'} do not fit their architecture "
                           f"{payload['architecture']} with latent {payload['latent']} ({first})",
                           "restore them, or train the group again") from None
    return vae.eval()


def checksum_weights(argv) -> int:
    """``python -m experiments.paper checksum FILE ...``: give weights an earlier version wrote
    without a checksum their SHA-256 (files that have one are checked and left as they are)."""
    if not argv or any(a.startswith("-") for a in argv):
        raise SystemExit("usage: python -m experiments.paper checksum WEIGHTS.pt ...")
    for name in argv:
        path = Path(name)
        try:
            load_weights(path)
            print(f"{path}: has its checksum, unchanged")
            continue
        except WeightsError as error:
            if not _legacy(path):
                raise SystemExit(f"error: {error}") from None
        save_weights(torch.load(path, map_location="cpu", weights_only=True), path)
        load_weights(path)
        print(f"{path}: checksum added")
    return 0


def collect_command(argv) -> int:
    """``python -m experiments.paper collect [--out DIR] [--quick]``: the results file and the
    figures from the finished groups under DIR, with no training (while an invocation is still
    under way elsewhere, or after one that was stopped between groups)."""
    import argparse

    from .common import Paths, load_results, metadata, save_results

    parser = argparse.ArgumentParser(
        prog="python -m experiments.paper collect",
        description="Write results/paper.json and draw the figures from the finished groups under "
                    "an output folder (results/paper/groups/), training nothing and leaving the "
                    "state folder as it is.")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="the output folder of the programme's invocations (default: .)")
    parser.add_argument("--quick", action="store_true",
                        help="the quick programme's groups (results/paper-quick/)")
    args = parser.parse_args(argv)
    paths = Paths(args.out)
    config = Config.quick() if args.quick else Config()
    folders = Folders(config, paths)
    plan = _read_plan(folders)  # an invocation under way: its settings, not the defaults
    if plan:
        known = {f for f in plan_identity(config)}
        config = config.replace(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in plan.items() if k in known})
    if not folders.groups.is_dir() or not any(folders.groups.glob("*.json")):
        raise SystemExit(f"error: no finished groups under {folders.groups}: the programme "
                         "writes them (python -m experiments paper --out DIR); collect them "
                         "from that DIR")
    started = time.perf_counter()
    data = collect(config, paths, folders, clean=False)
    meta = metadata(config, NAME, time.perf_counter() - started, module="experiments.paper",
                    argv=["collect", *argv])
    path = paths.results_file(NAME + ("-quick" if config.quick else ""))
    save_results(path, data, meta)
    results = load_results(path, NAME)
    print(summary(results))
    for figure in plot(results, path, paths):
        print(f"  figure {figure}")
    return 0


# --------------------------------------------------------------------------------------------
# Results: every finished group, the table beside the published numbers
# --------------------------------------------------------------------------------------------


def collect(config: Config, paths, folders: Folders, clean: bool = True) -> dict:
    """The results file's data: every finished group in the output folder, of any part (an
    invocation of some parts keeps the others' finished groups: the results merge), and what is
    left of the chosen parts. ``clean``: once the chosen parts are complete, delete what the
    programme kept in the state folder to resume them."""
    finished = {path.stem for path in folders.groups.glob("*.json")} if folders.groups.is_dir() \
        else set()
    chosen = {g.key for g in groups_of(config)}
    # Another part is kept when a group of its own (not one it shares with the chosen parts)
    # has finished.
    present = list(config.parts) + [part for part in PARTS if part not in config.parts and any(
        key in finished and key not in chosen
        for key in (group_of(part, label, latent).key
                    for label, latent in PARTS[part]["groups"]))]
    every = groups_of(config.replace(parts=tuple(present)))
    records = {}
    for group in every:
        path = folders.group_file(group)
        if path.exists():
            records[group.key] = json.loads(path.read_text())
    left = [g.key for g in every if g.key in chosen and g.key not in records]
    complete = not left
    if complete and clean:  # nothing left to resume: what the programme kept for it goes
        _clean_state(folders, config)
    return {"parts": present, "groups": [g.key for g in every], "records": records,
            "left": left, "complete": complete, "quick": config.quick, "runs": config.runs,
            "state_bytes": folders.state_bytes(),
            "plan": plan_identity(config)}


def verdict(ours: float, se: float, published: float, higher_is_better: bool) -> str:
    """'beaten', 'matched' (within 2 s.e. over runs) or 'missed', and by how much."""
    difference = ours - published if higher_is_better else published - ours
    if not math.isnan(se) and abs(difference) <= 2 * se:
        return f"matched ({difference:+.2f} ± {se:.2f})"
    return f"{'beaten' if difference > 0 else 'missed'} by {abs(difference):.2f} ± {se:.2f}"


def table(results: dict) -> str:
    """Every finished group beside its published number, as Markdown."""
    data = results["data"]
    lines = ["| part | group | runs | images per run | test ELBO | NLL = −L_k | published "
             "| verdict | device | wall time | command |", "|---|---|---|---|---|---|---|---|---|"
             "---|---|"]
    for key in data["groups"]:
        record = data["records"].get(key)
        if record is None:
            lines.append(f"| {','.join(_parts_of(key, data))} | {key} | – | – | not run | | | "
                         f"| | | |")
            continue
        fake = {"protocol": record["protocol"]}
        published = [e for e in mnist_vae.PUBLISHED if mnist_vae._matches(e, fake, record)]
        notes, verdicts = [], []
        for entry in published:
            if entry["metric"] == "nll":
                ours, se = -record["log_likelihood"], record["log_likelihood_spread_se"]
                notes.append(f"NLL {entry['value']:.2f} ({entry['source']})")
                verdicts.append(verdict(ours, se, entry["value"], higher_is_better=False))
            else:
                ours, se = record["test_elbo"], record["test_elbo_spread_se"]
                notes.append(f"bound {entry['value']:.1f} ({entry['source']})")
                verdicts.append(verdict(ours, se, entry["value"], higher_is_better=True))
        last = record["invocations"][-1]
        seconds = sum(i["seconds"] for i in record["invocations"])
        k = record["likelihood_k"]
        lines.append(
            f"| {','.join(record['parts'])} | {key} | {record['runs_counted']} | "
            f"{record['examples_seen']:,} | {mnist_vae._mean_se(record, 'test_elbo')} | "
            f"{mnist_vae._mean_se(record, 'log_likelihood', sign=-1)} (k = {k}) | "
            f"{'; '.join(notes) or '–'} | {'; '.join(verdicts) or '–'} | {last['device_name']} | "
            f"{seconds / 60:.1f} min | `{last['command']}` |")
    if not data["complete"]:
        lines.append("")
        lines.append(f"Left to train: {len(data['left'])} group(s); the state folder holds "
                     f"{data['state_bytes'] / 2 ** 20:.1f} MB.")
    kw = [r for r in data["records"].values() if "a" in r["parts"]]
    if kw and not data["quick"]:
        from .kingma_welling import compare, table as kingma_welling_table

        lines += ["", "Kingma & Welling 2014, Figure 2: our test bound (single-sample ELBO on "
                      f"the first {kw[0]['eval_size']:,} test images, as evaluated during "
                      "training) beside the digitised published AEVB test curves; within = "
                      "|ours − published| <= 2 s.e. + 0.5 nats of digitisation", "",
                  kingma_welling_table([compare(r) for r in kw])]
    if data["quick"]:
        lines.append("")
        lines.append("**Quick scale** (a few hundred images per group, CPU): these numbers "
                     "exercise the programme; they are not comparable with the published ones.")
    return "\n".join(lines)


def times_table(results: dict, part: str | None = None) -> str:
    """Each finished group's time against the plan's, as Markdown: the training time its history
    records (every invocation that trained it, a killed one too), the seconds of the invocations
    that logged themselves (a killed invocation logs nothing), and their planned minutes."""
    data = results["data"]
    lines = ["| group | device | training | invocations logged | their planned minutes "
             "| measured / planned |", "|---|---|---|---|---|---|"]
    for key in data["groups"]:
        record = data["records"].get(key)
        if record is None or (part is not None and part not in record["parts"]):
            continue
        logged = record["invocations"]
        seconds = sum(i["seconds"] for i in logged)
        planned = [i.get("planned_minutes") for i in logged]
        known = None if any(p is None for p in planned) else sum(planned)
        lines.append(
            f"| {key} | {logged[-1]['device_name']} ({logged[-1]['device']}) | "
            f"{record['wall_seconds'] / 60:.1f} min | {len(logged)}: {seconds / 60:.1f} min | "
            + ("– | – |" if known is None else f"{known:.1f} min | "
               + (f"{seconds / 60 / known:.2f} |" if known > 0 else "– |")))
    return "\n".join(lines)


def estimators_table(results: dict) -> str:
    """Part (b)'s finished groups, one row an estimator in (b)'s order, as Markdown: the final
    test ELBO and L_k (mean ± s.e. over runs), active units, the encoder gradient's total
    variance and mean SNR at the last probe on the estimator's own runs, the device and the
    training minutes."""
    data = results["data"]
    records = {r["label"]: r for r in data["records"].values() if "b" in r["parts"]}
    lines = ["| estimator | runs | test ELBO | L_k (k) | active units | encoder gradient variance "
             "| encoder SNR | device | training |", "|---|---|---|---|---|---|---|---|---|"]
    for label, _ in PARTS["b"]["groups"]:
        record = records.get(label)
        if record is None:
            lines.append(f"| {label} | – | not run yet | | | | | | |")
            continue
        probe = _own_last_probe(record)
        lines.append(
            f"| {label} | {record['runs_counted']} | {mnist_vae._mean_se(record, 'test_elbo')} | "
            f"{mnist_vae._mean_se(record, 'log_likelihood')} ({record['likelihood_k']}) | "
            f"{record['active_units']:.1f} | "
            + (f"{probe['total_variance']:.3g} | {probe['mean_snr']:.3g} |" if probe else "– | – |")
            + f" {record['invocations'][-1]['device_name']} | {record['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def _own_last_probe(record: dict) -> dict | None:
    """The encoder's total variance and mean SNR at the last probe, averaged over the runs."""
    last = record["probes"][-1] if record.get("probes") else {}
    values = [run["encoder"] for run in last.get("runs", []) if "encoder" in run]
    if not values:
        return None
    return {key: float(np.mean([v[key] for v in values])) for key in ("total_variance",
                                                                     "mean_snr")}


def reference_probe_table(results: dict) -> str:
    """Every estimator of (b) on the same parameters, run 0 of (b)'s first group, at each probe:
    the encoder gradient's total variance and mean SNR, as Markdown (one row an estimator)."""
    data = results["data"]
    first = group_of("b", *PARTS["b"]["groups"][0]).key
    record = data["records"].get(first)
    if record is None or not record.get("probes"):
        return ""
    probes = record["probes"]
    seen = [f"{p['examples_seen']:,} images" for p in probes]
    lines = ["| estimator | " + " | ".join(f"variance at {s}" for s in seen) + " | "
             + " | ".join(f"SNR at {s}" for s in seen) + " |",
             "|---|" + "---|" * (2 * len(probes))]
    for label in probes[-1]["stats"]:
        cells = [probe["stats"][label]["encoder"] for probe in probes]
        lines.append(f"| {label} | " + " | ".join(f"{c['total_variance']:.3g}" for c in cells)
                     + " | " + " | ".join(f"{c['mean_snr']:.3g}" for c in cells) + " |")
    return "\n".join(lines)


def estimators_paired(results: dict) -> str:
    """Part (b)'s paired differences (run r of every group shares its seed) of the final test
    ELBO and of L_k to the best estimator's, as printed text."""
    from .style import paired_summary

    data = results["data"]
    records = [r for r in data["records"].values() if "b" in r["parts"]]
    lines = []
    for key, what in (("test_elbo", "the final test ELBO"), ("log_likelihood", "L_k")):
        finals = {r["label"]: [f[key] for f in r["finals"]] for r in records}
        lines += paired_summary(finals, data["runs"], what)
    return "\n".join(lines)


def _parts_of(key: str, data: dict) -> list[str]:
    return [part for part in data["parts"]
            if any(group_of(part, label, latent).key == key
                   for label, latent in PARTS[part]["groups"])]


def summary(results: dict) -> str:
    data = results["data"]
    done = len(data["records"])
    return (f"paper ({results['metadata']['wall_seconds']:.0f} s this invocation; {done} of "
            f"{len(data['groups'])} groups finished{'' if data['complete'] else ', more to go'})"
            "\n\n" + table(results)
            + (f"\n\nTimes against the plan\n\n{times_table(results)}" if done else ""))


# --------------------------------------------------------------------------------------------
# Figures: from the saved results, and the pictures from the shipped weights
# --------------------------------------------------------------------------------------------


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .style import rc_context

    _remove_stale_figures(paths)
    data = results["data"]
    records = data["records"]
    figures = []
    note = ("quick scale: not comparable with the published numbers" if data["quick"] else
            "paper scale")
    with rc_context():
        kw = [r for r in records.values() if "a" in r["parts"]]
        if kw:
            from .kingma_welling import plot as plot_kingma_welling

            fig = plot_kingma_welling(plt, kw, note=note)
            figures += save_figure(fig, paths, "paper-kingma-welling", results_path, SCRIPT)
        comparison = {r["label"]: r for r in records.values() if "b" in r["parts"]}
        if comparison:
            labels = [label for label, _ in PARTS["b"]["groups"] if label in comparison]
            view = {"labels": labels, "runs": comparison, "reference": labels[0],
                    "settings": next(iter(comparison.values()))["settings"],
                    "protocol": "kingma-welling", "num_runs": data["runs"],
                    "eval_size": next(iter(comparison.values()))["eval_size"],
                    "num_replicates": data["plan"]["num_replicates"],
                    "probe_batch": data["plan"]["probe_batch"], "scale_note": note}
            figures += mnist_vae._plot_bound(plt, view, results_path, paths,
                                             name="paper-estimators-bound", script=SCRIPT)
            if all(r["probes"] for r in comparison.values()):
                figures += mnist_vae._plot_gradients(plt, view, results_path, paths,
                                                     name="paper-estimators-gradients",
                                                     script=SCRIPT)
        figures += _plot_burda(plt, records, results_path, paths, note)
        figures += _plot_pictures(plt, records, results_path, paths, note)
    return figures


STALE_SECONDS = 600  # a figure is written in seconds: a temporary file this old was abandoned


def _remove_stale_figures(paths) -> list[Path]:
    """Remove the temporary files of this programme's figures that a kill while drawing left
    (``figures/.paper-NAME.pdf.XXXX.tmp``); one younger than STALE_SECONDS may be another
    drawing's, under way, and is left."""
    folder = Path(paths.figures)
    stale = [p for p in folder.glob(".paper-*.tmp")
             if time.time() - p.stat().st_mtime > STALE_SECONDS] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _plot_burda(plt, records, results_path, paths, note):
    burda = [r for r in records.values() if "c" in r["parts"]]
    if not burda:
        return []
    fig, ax = plt.subplots(figsize=(8, 4.4), constrained_layout=True)
    for index, record in enumerate(burda):
        published = [e for e in mnist_vae.PUBLISHED
                     if mnist_vae._matches(e, {"protocol": "burda"}, record)]
        ours, se = -record["log_likelihood"], record["log_likelihood_spread_se"]
        ax.errorbar(index, ours, yerr=0 if math.isnan(se) else se, marker="o", capsize=4,
                    color="C0", label="ours (mean ± s.e. over runs)" if index == 0 else None)
        for entry in published:
            ax.scatter(index, entry["value"], marker="_", s=400, color="black",
                       label="Burda et al. 2016, Table 1" if index == 0 else None)
    ax.set_xticks(range(len(burda)), [r["label"] for r in burda])
    ax.set_ylabel(f"test NLL = −L_{burda[0]['likelihood_k']} (nats, lower is better)")
    ax.set_title("Burda et al. 2016, Table 1, one stochastic layer\n" + note, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, paths, "paper-burda", results_path, SCRIPT)


def _plot_pictures(plt, records, results_path, paths, note):
    """Samples and reconstructions of run 0 of (a)'s latent-20 group, from its shipped weights."""
    chosen = [r for r in records.values()
              if "a" in r["parts"] and r["latent"] == 20]
    if not chosen:
        return []
    weights = _inside(paths.root, chosen[0]["weights"])
    if weights is None:  # a results file is data: it never points outside its folder
        print(f"paper: the weights {chosen[0]['weights']!r} of {chosen[0]['group']} lie outside "
              f"the output folder {paths.root}; the pictures are skipped", file=sys.stderr)
        return []
    if not weights.exists():
        print(f"paper: no weights at {weights}; the pictures are skipped", file=sys.stderr)
        return []
    try:
        vae = weights_vae(load_weights(weights), 0, weights)
    except WeightsError as error:
        print(f"paper: {error}; the pictures are skipped", file=sys.stderr)
        return []
    # In float64 the pixels round to the same 8-bit values whatever the threads or the machine
    # (in float32 a few of the 470,000 land on the other side of a rounding boundary).
    vae = vae.double()
    from .mnist.data import MnistError, load_mnist

    try:
        test, labels = load_mnist(None, "test")
    except MnistError as error:
        print(f"paper: the pictures need the MNIST test files ({error})", file=sys.stderr)
        return []
    grey = test.reshape(len(test), -1).to(torch.float64) / 255
    images = torch.bernoulli(grey, generator=torch.Generator().manual_seed(1)).float()
    pictures = mnist_vae.pictures(vae, images, grey, labels, seed=3)
    view = {"pictures": pictures, "reference": chosen[0]["label"], "scale_note": note}
    return mnist_vae._plot_pictures(plt, view, results_path, paths, prefix="paper",
                                    script=SCRIPT)


# --------------------------------------------------------------------------------------------
# Command line: python -m experiments.paper [RESULTS] | evaluate GROUP
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SystemExit(f"error: {message} (see --help)")


def evaluate_weights(argv) -> int:
    """L_k of a group's shipped weights on the test images, every run, on the CPU."""
    from .mnist import evaluate
    from .mnist.data import SIZES, MnistError, load_mnist

    parser = _Parser(prog="python -m experiments.paper evaluate",
                     description="L_k of a group's shipped weights on the test images, with no "
                                 "training. The weights come from an invocation of the paper "
                                 "programme: results/paper/weights/GROUP.pt under its --out "
                                 "folder (a GPU run), or runs/quick/results/paper-quick/weights/"
                                 "GROUP.pt after python -m experiments paper --quick.")
    parser.add_argument("weights", type=Path, help="a GROUP.pt file of a weights/ folder")
    parser.add_argument("--num-samples", type=int, default=5000, help="k (default 5000)")
    parser.add_argument("--test-size", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    problems = [
        (args.num_samples < 1, f"--num-samples must be >= 1, got {args.num_samples}"),
        (not 0 <= args.test_size <= SIZES["test"],
         f"--test-size must lie in 0..{SIZES['test']} (0: all), got {args.test_size}"),
        (not 0 <= args.seed <= 2 ** 32 - 2, f"--seed must lie in 0..{2 ** 32 - 2}, got "
                                            f"{args.seed}"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: {message}")
    try:
        payload = load_weights(args.weights)
        vaes = [weights_vae(payload, run, args.weights) for run in range(len(payload["runs"]))]
        test, _ = load_mnist(None, "test")
    except (WeightsError, MnistError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.test_size:
        test = test[:args.test_size]
    grey = test.reshape(len(test), -1).to(torch.float32) / 255
    images = torch.bernoulli(grey, generator=torch.Generator().manual_seed(args.seed + 1))
    values = []
    for run, vae in enumerate(vaes):
        torch.manual_seed(args.seed + run)
        bound = evaluate.importance_sampled_log_likelihood(vae, images, args.num_samples)
        values.append(bound.mean().item())
        print(f"run {run} (seed {payload['seeds'][run]}): L_{args.num_samples} = "
              f"{values[-1]:.3f} on {len(images)} test images")
    if len(values) > 1:
        se = float(np.std(values, ddof=1) / math.sqrt(len(values)))
        print(f"mean over {len(values)} runs: {np.mean(values):.3f} ± {se:.3f}")
    return 0


def main(argv=None) -> int:
    """``python -m experiments.paper [RESULTS]``: the table; ``... evaluate WEIGHTS``: L_k;
    ``... checksum WEIGHTS ...``: a checksum for weights an earlier version wrote without one;
    ``... collect [--out DIR]``: the results and figures from the finished groups, no training."""
    from .common import Paths, summary_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        return evaluate_weights(argv[1:])
    if argv[:1] == ["checksum"]:
        return checksum_weights(argv[1:])
    if argv[:1] == ["collect"]:
        return collect_command(argv[1:])
    results = Paths().results
    if not [a for a in argv if not a.startswith("-")] and not any(
            (results / f"{NAME}{suffix}.json").exists() for suffix in ("", "-quick")):
        raise SystemExit(f"error: no paper results at {results / 'paper.json'}: the paper "
                         "programme writes them, on a GPU (python -m experiments paper --device "
                         "cuda --out .); python -m experiments paper --quick writes "
                         "runs/quick/results/paper-quick.json on a CPU, which this command "
                         "prints when given that file")
    return summary_main(NAME, summary, argv, quick_fallback=True)


if __name__ == "__main__":
    raise SystemExit(main())
