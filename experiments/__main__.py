"""Command line: list the studies, run one or all, or redraw every figure from saved results.

    python -m experiments                      # list the studies
    python -m experiments STUDY [--quick] [--seed N] [--device D] [--set FIELD=VALUE ...]
    python -m experiments all --quick          # every study at small scale
    python -m experiments figures              # redraw every figure, no recomputation

A run writes under runs/quick/ (--quick) or runs/full/, folders git ignores, unless --out names
another folder: ``--out .`` regenerates the committed results/ and figures/.
``figures --from DIR --out DIR2`` reads DIR/results/ and draws into DIR2/figures/.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.util
import math
import sys
import time
from pathlib import Path

from . import STUDIES, available_studies
from .common import (ROOT, Paths, ResultsMismatch, StudyConfig, announce_figures,
                     check_parts_kept, check_threads, check_writable, describe_fields,
                     load_results, metadata, reading, resolve_device, save_results,
                     seed_everything, study_device, torch_threads)


MAX_SEED = 2 ** 32 - 1
MAX_INTEGER = 2 ** 63 - 1  # a --set integer must fit the 64-bit integers of torch and numpy
# Config fields with flags of their own: given both ways, nobody could tell which one counted.
FLAGS = {"seed": "--seed", "device": "--device", "threads": "--threads",
         "budget_minutes": "--budget-minutes", "parts": "--parts"}
# Runs write here unless --out says otherwise, so that no run touches the committed results
# (regenerating them is --out .): folders git ignores.
QUICK_OUT = ROOT / "runs" / "quick"
FULL_OUT = ROOT / "runs" / "full"


@dataclasses.dataclass(frozen=True)
class StudyText:
    """What --help and the list of studies say of a study, and the fields --set may name."""

    summary: str
    description: str
    epilog: str
    fields: tuple
    devices: tuple  # the device types its Config supports (StudyConfig.DEVICES)


@functools.lru_cache(maxsize=None)
def study_text(module_name: str) -> StudyText | None:
    """A study's text read from its source, without importing it (None where the module does not
    exist): a study imports torch, scipy and the library, seconds that --help and a mistyped
    flag need not wait for. A module whose SUMMARY or Config is not plain source is imported."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).read_text(encoding="utf-8")
    summary = config = None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["SUMMARY"]:
            try:
                summary = ast.literal_eval(node.value)
            except ValueError:
                pass
        elif isinstance(node, ast.ClassDef) and node.name == "Config":
            config = node
    if (not isinstance(summary, str) or config is None
            or [ast.unparse(base) for base in config.bases] != ["StudyConfig"]):
        module = importlib.import_module(module_name)
        doc = (module.Config.__doc__ or "").strip()
        return StudyText(module.SUMMARY, module.SUMMARY + ("\n\n" + doc if doc else ""),
                         describe_fields(module.Config),
                         tuple(f.name for f in dataclasses.fields(module.Config)),
                         module.Config.DEVICES)
    own = [node.target.id for node in config.body if isinstance(node, ast.AnnAssign)
           and isinstance(node.target, ast.Name)
           and not ast.unparse(node.annotation).startswith("ClassVar")]
    fields = tuple(dict.fromkeys([f.name for f in dataclasses.fields(StudyConfig)] + own))
    devices = StudyConfig.DEVICES
    for node in config.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["DEVICES"]:
            devices = ast.literal_eval(node.value)
    doc = ast.get_docstring(config) or ""
    lines = source.splitlines()[config.lineno - 1:config.end_lineno]  # the class's source
    return StudyText(summary, summary + ("\n\n" + doc if doc else ""),
                     describe_fields("\n".join(lines)), fields, devices)


def _integer(text: str, where: str) -> int:
    value = int(text)
    if abs(value) > MAX_INTEGER:
        raise SystemExit(f"error: {where}: {text} is out of range (integers lie within "
                         f"+-{MAX_INTEGER})")
    return value


def _parse_value(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, type) else str(field.type)
    current = field.default
    where = f"--set {field.name}={text}"
    try:
        if isinstance(current, bool) or kind in ("bool",):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int) or kind == "int":
            return _integer(text, where)
        if isinstance(current, float) or kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise SystemExit(f"error: {where}: {field.name} must be a finite number")
            return value
        if isinstance(current, tuple) or "tuple" in str(kind):
            items = [t for t in text.split(",") if t]
            sample = current[0] if current else ""
            values = tuple(t if isinstance(sample, str) else _integer(t, where)
                           if isinstance(sample, int) else type(sample)(t) for t in items)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise SystemExit(f"error: {where}: every entry must be a finite number")
            return values
    except ValueError:
        raise SystemExit(f"error: {where}: cannot read {text!r} as "
                         f"{type(current).__name__}") from None
    return text


def check_request(args, study: str, fields: tuple) -> dict:
    """The --set items as {field: text} (a field given twice: the last one counts), refused in
    one line before anything is imported or run: a field the study lacks, a field also given by
    its own flag, --set quick (--quick alone chooses the scale: the quick preset and the -quick
    results name), a seed or thread count out of range, and an empty --parts entry."""
    settings = {}
    for item in args.set or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects FIELD=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        if key not in fields:
            raise SystemExit(f"error: {study} has no config field {key!r}; fields: "
                             f"{', '.join(fields)}" + (
                                 " (with all, every --set must name a field of every study)"
                                 if args.study == "all" else ""))
        if key == "quick":
            raise SystemExit(f"error: --set quick={text}: --quick alone chooses the scale (the "
                             "quick preset and the -quick results name); drop --set quick")
        if key in FLAGS and getattr(args, key, None) is not None:
            raise SystemExit(f"error: {FLAGS[key]} and --set {key}={text} both set {key}; "
                             "give one of them")
        settings[key] = text
    base = {f.name: f for f in dataclasses.fields(StudyConfig)}
    for key in ("seed", "threads"):
        value, where = getattr(args, key), FLAGS[key]
        if value is None and key in settings:
            value, where = _parse_value(base[key], settings[key]), f"--set {key}"
        if value is None:
            continue
        if key == "seed" and not 0 <= value <= MAX_SEED:
            raise SystemExit(f"error: {where} must lie in 0..{MAX_SEED}, got {value}")
        if key == "threads":
            try:
                check_threads(value, where)
            except ValueError as error:
                raise SystemExit(f"error: {error}") from None
    parts = getattr(args, "parts", None)
    if parts is not None and "" in parts.split(","):
        raise SystemExit(f"error: --parts {parts!r} names an empty part; give e.g. --parts a,b")
    return settings


def build_config(module, args) -> object:
    """The study's Config from the flags and --set, every check made before any work: the
    request (:func:`check_request`), each value, the Config's and the study's own validation,
    the runs' seeds, and the device, which the returned Config names as resolved (cpu or cuda,
    never auto: the metadata records the device used)."""
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    settings = check_request(args, module.NAME, tuple(fields))
    config = module.Config.quick() if args.quick else module.Config()
    changes = {key: getattr(args, key) for key in ("seed", "device", "threads", "budget_minutes")
               if getattr(args, key, None) is not None}
    if getattr(args, "parts", None) is not None:  # the paper programme's own flag
        changes["parts"] = tuple(args.parts.split(","))
    changes.update({key: _parse_value(fields[key], text) for key, text in settings.items()})
    config = config.replace(**changes)  # the Config's own checks (__post_init__) run here
    runs = getattr(config, "runs", None)
    if isinstance(runs, int) and config.seed + runs - 1 > MAX_SEED:
        raise SystemExit(f"error: runs={runs}: run r takes seed {config.seed} + r, which must "
                         f"stay within {MAX_SEED}; use runs <= {MAX_SEED - config.seed + 1}")
    validate = getattr(module, "validate", None)
    if validate is not None:
        validate(config)
    return config.replace(device=str(study_device(config, module.NAME)))


def run_study(module, config, paths: Paths) -> list[Path]:
    """Run, save raw results with metadata, then draw from what was saved."""
    config = config.replace(device=str(study_device(config, module.NAME)))
    _writable(paths)
    if not getattr(module, "MERGES_PARTS", False):  # the paper programme merges its parts
        check_parts_kept(paths.results_file(module.NAME + ("-quick" if config.quick else "")),
                         config)
    try:
        check_threads(config.threads)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    seed_everything(config.seed)
    started = time.perf_counter()
    with torch_threads(config.threads):
        data = module.run(config, paths)
    if data is None:  # a rank of a torchrun invocation that left the results to rank 0
        return []
    meta = metadata(config, module.NAME, time.perf_counter() - started)
    results_path = paths.results_file(module.NAME + ("-quick" if config.quick else ""))
    save_results(results_path, data, meta)
    # Said before drawing, which takes seconds for the larger studies.
    print(f"{module.NAME}: {meta['wall_seconds']:.1f} s; results {results_path}; drawing the "
          "figures", flush=True)
    with announce_figures(lambda figure: print(f"  figure {figure}", flush=True)):
        return module.plot(load_results(results_path, module.NAME), results_path, paths)


def _writable(paths: Paths) -> None:
    """Refuse, before any work, output folders that could not be written."""
    for folder in (paths.results, paths.figures):
        try:
            check_writable(folder, "the output folder")
        except ValueError as error:
            raise SystemExit(f"error: {error}; choose another --out") from None


def redraw(paths: Paths, studies) -> int:
    """Every figure of every saved results file, full-scale and quick (their names differ).

    A results file that cannot be drawn is named in one line on stderr and the others are drawn;
    the command then ends with an error naming every such file. Nothing is created unless a
    figure is written.
    """
    found = [(name, module, path) for name, module in studies.items()
             for path in (paths.results_file(name), paths.results_file(name + "-quick"))
             if path.exists()]
    if not found:
        raise SystemExit(f"error: no saved results under {paths.results}; run a study first, or "
                         "name the folder that holds results/ with --from DIR")
    try:
        check_writable(paths.figures, "the figures folder", create=False)
    except ValueError as error:
        raise SystemExit(f"error: {error}; choose another --out") from None
    drawn, broken = 0, []
    for name, module, results_path in found:
        print(f"{name}: drawing the figures of {results_path.name}", file=sys.stderr, flush=True)
        try:
            results = load_results(results_path, name)
            with reading(results, results_path):
                figures = module.plot(results, results_path, paths)
        except (SystemExit, ResultsMismatch) as error:
            message = str(error).removeprefix("error: ")
            print(f"error: {message}", file=sys.stderr, flush=True)
            broken.append((results_path, message))
            _close_figures()
            continue
        for figure in figures:
            print(figure)
            drawn += 1
    if broken:
        if len(broken) == 1:
            raise SystemExit(f"error: drew {drawn} figure file(s); not drawn: {broken[0][1]}")
        raise SystemExit(f"error: drew {drawn} figure file(s); {len(broken)} results files could "
                         f"not be drawn (said above): {', '.join(str(p) for p, _ in broken)}")
    return drawn


def _close_figures() -> None:
    """Close what a plot that failed half-way left open."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def _add_common(parser):
    parser.add_argument("--quick", action="store_true",
                        help="small scale: a few minutes on a 2-core CPU")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or auto (default: cpu); the studies that compute "
                             "on the CPU only refuse cuda, and auto picks cpu for them")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1, which a shared or small CPU runs "
                             "fastest; 0: torch's default, one per core; at most four per core)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override one field of the study's Config (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder that receives results/ and figures/ (default: runs/full/, "
                             "with --quick runs/quick/, which git ignores; --out . regenerates "
                             "the committed results)")


def main(argv=None) -> int:
    studies = {name: text for name, module in STUDIES.items()
               if (text := study_text(module)) is not None}
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Measure how ELBO gradient estimators differ in bias and variance.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="studies:\n" + "\n".join(f"  {n:16s} {t.summary}" for n, t in studies.items()),
    )
    sub = parser.add_subparsers(dest="study", metavar="STUDY")
    for name, text in studies.items():
        p = sub.add_parser(name, help=text.summary, description=text.description,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=text.epilog)
        _add_common(p)
        if name == "paper":
            p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                           help="minutes this invocation may train for (default: the config's)")
            p.add_argument("--parts", default=None, metavar="a,b,c",
                           help="the parts to plan and train (default: all)")
    p_all = sub.add_parser("all", help="run every study in turn")
    _add_common(p_all)
    p_fig = sub.add_parser("figures", help="redraw every figure from saved results (no GPU, no recomputation)",
                           description="Redraw every figure from saved results: each "
                                       "FROM/results/STUDY.json (and STUDY-quick.json) into "
                                       "OUT/figures/.")
    p_fig.add_argument("--from", dest="source", type=Path, default=ROOT, metavar="DIR",
                       help="folder whose results/ is read (default: the repository; a run's "
                            "own: runs/quick or runs/full)")
    p_fig.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="folder that receives figures/ (default: the --from folder)")

    args = parser.parse_args(argv)
    if args.study is None:
        print("studies (python -m experiments STUDY --help for options):")
        for name, text in studies.items():
            print(f"  {name:16s} {text.summary}")
        print("  all              run every study in turn (add --quick for the small scale)")
        print("  figures          redraw every figure from saved results")
        return 0
    if args.study == "figures":
        redraw(Paths(args.source.resolve(), args.out and args.out.resolve()),
               available_studies())
        return 0
    out = args.out if args.out is not None else (
        QUICK_OUT if getattr(args, "quick", False) else FULL_OUT)
    paths = Paths(out.resolve())
    # `all` is every study at its scale; the paper programme is run on its own (it is the GPU job).
    chosen = [n for n in studies if n != "paper"] if args.study == "all" else [args.study]
    for name in chosen:  # mistakes in the request, answered before torch is imported
        settings = check_request(args, name, studies[name].fields)
        device = args.device or settings.get("device")
        if device is not None:  # with torch alone, not the seconds a study's imports take
            resolve_device(device, studies[name].devices, name)
    modules = {name: importlib.import_module(STUDIES[name]) for name in chosen}
    # Every study's config is built and checked before the first one runs.
    configs = {name: build_config(module, args) for name, module in modules.items()}
    _writable(paths)
    for name, module in modules.items():
        run_study(module, configs[name], paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
