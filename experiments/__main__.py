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
import dataclasses
import math
import sys
import time
from pathlib import Path

from . import available_studies
from .common import (ROOT, Paths, ResultsMismatch, announce_figures, check_parts_kept,
                     check_writable, describe_fields, load_results, metadata, reading,
                     save_results, seed_everything, torch_threads)


MAX_SEED = 2 ** 32 - 1
# Runs write here unless --out says otherwise, so that no run touches the committed results
# (regenerating them is --out .): folders git ignores.
QUICK_OUT = ROOT / "runs" / "quick"
FULL_OUT = ROOT / "runs" / "full"


def _parse_value(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, type) else str(field.type)
    current = field.default
    try:
        if isinstance(current, bool) or kind in ("bool",):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int) or kind == "int":
            return int(text)
        if isinstance(current, float) or kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise SystemExit(f"error: --set {field.name}={text}: {field.name} must be a "
                                 "finite number")
            return value
        if isinstance(current, tuple) or "tuple" in str(kind):
            items = [t for t in text.split(",") if t]
            sample = current[0] if current else ""
            values = tuple(type(sample)(t) if not isinstance(sample, str) else t for t in items)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise SystemExit(f"error: --set {field.name}={text}: every entry must be a "
                                 "finite number")
            return values
    except ValueError:
        raise SystemExit(f"error: --set {field.name}={text}: cannot read {text!r} as "
                         f"{type(current).__name__}") from None
    return text


def build_config(module, args) -> object:
    config = module.Config.quick() if args.quick else module.Config()
    changes = {"seed": args.seed if args.seed is not None else config.seed,
               "device": args.device or config.device,
               "threads": args.threads if args.threads is not None else config.threads}
    for option, field in (("budget_minutes", "budget_minutes"), ("parts", "parts")):
        value = getattr(args, option, None)
        if value is not None:  # the paper programme's own flags
            changes[field] = tuple(value.split(",")) if option == "parts" else value
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    if not 0 <= changes["seed"] <= MAX_SEED:
        raise SystemExit(f"error: --seed must lie in 0..{MAX_SEED}, got {changes['seed']}")
    for item in args.set or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in fields:
            raise SystemExit(f"error: {module.NAME} has no config field {key!r}; "
                             f"fields: {', '.join(fields)}")
        changes[key] = _parse_value(fields[key], value)
    return config.replace(**changes)


def run_study(module, config, paths: Paths) -> list[Path]:
    """Run, save raw results with metadata, then draw from what was saved."""
    from .common import resolve_device

    resolve_device(config.device)
    _writable(paths)
    check_parts_kept(paths.results_file(module.NAME + ("-quick" if config.quick else "")), config)
    if config.threads < 0:
        raise SystemExit(f"error: --threads must be >= 0 (0: torch's default), got "
                         f"{config.threads}")
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
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1, which a shared or small CPU runs "
                             "fastest; 0: torch's default, one per core)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override one field of the study's Config (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder that receives results/ and figures/ (default: runs/full/, "
                             "with --quick runs/quick/, which git ignores; --out . regenerates "
                             "the committed results)")


def main(argv=None) -> int:
    studies = available_studies()
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Measure how ELBO gradient estimators differ in bias and variance.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="studies:\n" + "\n".join(f"  {n:16s} {m.SUMMARY}" for n, m in studies.items()),
    )
    sub = parser.add_subparsers(dest="study", metavar="STUDY")
    for name, module in studies.items():
        config_doc = (module.Config.__doc__ or "").strip()
        p = sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY + (
            "\n\n" + config_doc if config_doc else ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=describe_fields(module.Config))
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
        for name, module in studies.items():
            print(f"  {name:16s} {module.SUMMARY}")
        print("  all              run every study in turn (add --quick for the small scale)")
        print("  figures          redraw every figure from saved results")
        return 0
    if args.study == "figures":
        redraw(Paths(args.source.resolve(), args.out and args.out.resolve()), studies)
        return 0
    out = args.out if args.out is not None else (
        QUICK_OUT if getattr(args, "quick", False) else FULL_OUT)
    paths = Paths(out.resolve())
    # `all` is every study at its scale; the paper programme is run on its own (it is the GPU job).
    chosen = ({n: m for n, m in studies.items() if n != "paper"} if args.study == "all"
              else {args.study: studies[args.study]})
    for name, module in chosen.items():
        run_study(module, build_config(module, args), paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
