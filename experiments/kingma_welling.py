"""Our MNIST test bounds beside the digitised curves of Kingma & Welling (2014), Figure 2.

The paper programme's part (a) trains the 784-500-N_z network with ``pathwise_analytic_kl`` for
each latent size N_z in 3, 5, 10, 20, 200 (a group of runs each) and evaluates the single-sample
test ELBO every 250,000 training images. This module puts those curves beside the published AEVB
test curves (``data/published/kingma_welling_2014_fig2_mnist.csv``, digitised from the paper's
PDF to about ±0.5 nats):

- at every digitised point that our runs pass (published images seen within our evaluations),
  each run's bound is interpolated linearly in log(images seen) between its two neighbouring
  evaluations; the point gets the mean over runs and its standard error;
- the verdict says whether ours lies **above**, **within** or **below** the published value:
  within when |ours − theirs| <= 2 s.e. + the digitisation's 0.5 nats;
- at the end of our training (10^7 images at the programme's scale) ours is also set beside the
  published curve's last point, reached after about 2.5 × 10^8 images with Adagrad.

The published runs used Adagrad with a small step and no learning-rate schedule; ours use Adam
(learning rate 1e-3), so ours are expected to rise faster. Nothing here is tuned to the
published values: the comparison reports the runs as they are.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DIGITISATION_NATS", "interpolate", "compare", "table", "plot"]

DIGITISATION_NATS = 0.5  # the accuracy of the digitised curves (data/published/README.md)


def interpolate(images: np.ndarray, bounds: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each run's bound at ``at`` images, linear in log(images); NaN outside its evaluations.

    ``images`` (E,) the evaluations' images seen, ``bounds`` (runs, E), ``at`` (P,) -> (runs, P).
    """
    images, bounds, at = (np.asarray(a, dtype=float) for a in (images, bounds, at))
    keep = images > 0
    x, y = np.log(images[keep]), np.atleast_2d(bounds)[:, keep]
    inside = (at >= images[keep].min()) & (at <= images[keep].max())
    out = np.full((y.shape[0], at.size), np.nan)
    for run in range(y.shape[0]):
        out[run, inside] = np.interp(np.log(at[inside]), x, y[run])
    return out


def _verdict(difference: float, se: float) -> str:
    allowance = (0.0 if math.isnan(se) else 2 * se) + DIGITISATION_NATS
    if abs(difference) <= allowance:
        return "within"
    return "above" if difference > 0 else "below"


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return float(values.mean()), se


def compare(record: dict) -> dict:
    """One finished part-(a) group's record against the published test curve of its latent.

    Returns ``{"latent", "runs", "points": [{"images", "published", "ours", "se", "difference",
    "verdict"}, ...], "end": {...the same at our last evaluation, beside the published curve
    there...}, "published_end": {"images", "published"}, "end_versus_published_end":
    {"ours", "se", "published", "difference"}}``.
    """
    from .mnist_vae import published_curves

    latent = int(record["latent"])
    curves = published_curves(latent)
    if "test" not in curves:
        raise ValueError(f"no published test curve for latent {latent}")
    published_images, published_bounds = (np.asarray(a) for a in curves["test"])
    order = np.argsort(published_images)
    published_images, published_bounds = published_images[order], published_bounds[order]
    images = np.asarray(record["histories"][0]["examples_seen"], dtype=float)
    bounds = np.asarray([h["test_bound"] for h in record["histories"]], dtype=float)
    ours = interpolate(images, bounds, published_images)
    points = []
    for index, (at, theirs) in enumerate(zip(published_images, published_bounds)):
        mean, se = _mean_se(ours[:, index])
        if math.isnan(mean):
            continue  # a published point our runs did not pass
        points.append({"images": float(at), "published": float(theirs), "ours": mean, "se": se,
                       "difference": mean - float(theirs),
                       "verdict": _verdict(mean - float(theirs), se)})
    last = images.max()
    end_mean, end_se = _mean_se(bounds[:, -1])
    on_curve = float(np.interp(np.log(last), np.log(published_images), published_bounds))
    end = {"images": float(last), "ours": end_mean, "se": end_se, "published": on_curve,
           "difference": end_mean - on_curve, "verdict": _verdict(end_mean - on_curve, end_se)}
    final = {"images": float(published_images[-1]), "published": float(published_bounds[-1])}
    return {"latent": latent, "runs": bounds.shape[0], "points": points, "end": end,
            "published_end": final,
            "end_versus_published_end": {
                "ours": end_mean, "se": end_se, "published": final["published"],
                "difference": end_mean - final["published"],
                "verdict": _verdict(end_mean - final["published"], end_se)}}


def _fmt(mean: float, se: float) -> str:
    return f"{mean:.2f}" + ("" if math.isnan(se) else f" ± {se:.2f}")


def table(comparisons: list[dict], every: int = 1) -> str:
    """The comparisons as Markdown: a summary row per latent, then each latent's points.

    ``every``: show every n-th digitised point (the summary row is always complete).
    """
    lines = ["| N_z | runs | ours at the end (images) | published there | verdict | published "
             "end (images) | ours − published end | points above / within / below |",
             "|---|---|---|---|---|---|---|---|"]
    for c in sorted(comparisons, key=lambda c: c["latent"]):
        e, f, v = c["end"], c["published_end"], c["end_versus_published_end"]
        counts = {k: sum(p["verdict"] == k for p in c["points"]) for k in
                  ("above", "within", "below")}
        lines.append(f"| {c['latent']} | {c['runs']} | {_fmt(e['ours'], e['se'])} "
                     f"({e['images']:.3g}) | {e['published']:.2f} | {e['verdict']} | "
                     f"{f['published']:.2f} ({f['images']:.3g}) | {v['difference']:+.2f} "
                     f"({v['verdict']}) | "
                     f"{counts['above']} / {counts['within']} / {counts['below']} |")
    for c in sorted(comparisons, key=lambda c: c["latent"]):
        lines += ["", f"N_z = {c['latent']}: at each digitised point of the published test curve "
                      f"that our runs pass (mean ± s.e. over {c['runs']} runs)", "",
                  "| images seen | published | ours | ours − published | verdict |",
                  "|---|---|---|---|---|"]
        for p in c["points"][::every]:
            lines.append(f"| {p['images']:,.0f} | {p['published']:.2f} | "
                         f"{_fmt(p['ours'], p['se'])} | {p['difference']:+.2f} | {p['verdict']} |")
    return "\n".join(lines)


def _power(images: float) -> str:
    """2.5e8 -> '$2.5 \\times 10^{8}$', 1e7 -> '$10^{7}$' (matplotlib's mathtext)."""
    exponent = math.floor(math.log10(images))
    mantissa = round(images / 10**exponent, 1)
    if mantissa == 10.0:
        exponent, mantissa = exponent + 1, 1.0
    power = f"10^{{{exponent}}}"
    return f"${power}$" if mantissa == 1.0 else f"${mantissa:.1f} \\times {power}$"


def _plot_margins(ax, comparisons: list[dict]) -> None:
    """Ours at the end of training minus the published end value, one point per latent."""
    latents = [c["latent"] for c in comparisons]
    margins = [c["end_versus_published_end"] for c in comparisons]
    where = np.arange(len(latents))
    ax.axhspan(-DIGITISATION_NATS, DIGITISATION_NATS, color="black", alpha=0.08, linewidth=0,
               label=f"±{DIGITISATION_NATS} nats: the digitisation")
    ax.axhline(0.0, color="black", linewidth=0.8, alpha=0.5)
    bars = [0.0 if math.isnan(m["se"]) else 2 * m["se"] for m in margins]
    ax.errorbar(where, [m["difference"] for m in margins], yerr=bars, fmt="o", color="#1f77b4",
                capsize=3, label="ours − theirs, ± 2 s.e. over runs")
    for x, m, bar in zip(where, margins, bars):
        ax.annotate(f"{m['difference']:+.1f}\n{m['verdict']}", (x, m["difference"] + bar),
                    textcoords="offset points", xytext=(0, 3), fontsize=7, ha="center",
                    va="bottom")
    ax.set_xticks(where, [str(latent) for latent in latents])
    ax.set_xlim(-0.6, len(latents) - 0.4)
    top = max(m["difference"] + bar for m, bar in zip(margins, bars))
    low = min(m["difference"] - bar for m, bar in zip(margins, bars))
    ax.set_ylim(min(-1.0, low - 0.5), max(1.0, top) + 1.2)  # room for the labels above the bars
    ax.set_xlabel("latent size N_z")
    ax.set_ylabel("nats per image")
    images = max(c["end"]["images"] for c in comparisons)
    theirs = max(c["published_end"]["images"] for c in comparisons)
    ax.set_title(f"ours at {_power(images)} images minus\ntheir end value at {_power(theirs)}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower left")


def plot(plt, records: list[dict], note: str = ""):
    """One panel per latent: the published AEVB test curve and ours (mean ± 1 s.e. over runs);
    with two latents or more, a last panel sets each latent's end beside the published end value
    (:func:`compare`'s ``end_versus_published_end``)."""
    from .mnist_vae import published_curves
    from .style import plot_band

    records = sorted(records, key=lambda r: r["latent"])
    comparisons = [compare(r) for r in records if "test" in published_curves(r["latent"])]
    summary = len(comparisons) >= 2
    panels = len(records) + summary
    columns = min(3, panels)  # no empty columns while only some latents have finished
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(max(3.4 * columns, 6.4), 3.7 * rows),
                             squeeze=False, constrained_layout=True)
    for ax, record in zip(axes.flat, records):
        latent = record["latent"]
        curves = published_curves(latent)
        if "test" in curves:
            ax.plot(*curves["test"], color="black", linewidth=2.5, alpha=0.35,
                    label="Kingma & Welling 2014 (AEVB, Adagrad)")
        images = record["histories"][0]["examples_seen"]
        bounds = np.asarray([h["test_bound"] for h in record["histories"]], dtype=float)
        plot_band(ax, images, bounds, color="#1f77b4", marker="o", markersize=2,
                  label=f"ours (Adam), mean ± s.e. of {len(bounds)} runs")
        ax.set_xscale("log")
        ax.set_title(f"N_z = {latent}", fontsize=10)
        ax.set_xlabel("training images seen per run")
        ax.set_ylabel("test lower bound (nats per image)")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], -160))  # the first evaluations start far below
        ax.legend(fontsize=7, loc="lower right")
    if summary:
        _plot_margins(axes.flat[len(records)], comparisons)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle("Kingma & Welling 2014, Figure 2: MNIST test bound against images seen\n"
                 "published curves (grey) and ours" + (f"; {note}" if note else ""), fontsize=10)
    return fig
