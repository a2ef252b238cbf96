"""The paper programme at a tiny scale on the CPU: plan, budget, resume, shared ranks, results.

Uses the MNIST files where :func:`experiments.mnist.data.default_directory` finds them (or
$MNIST_DIR) and skips cleanly when there are none. Every training here is a few hundred images
per group (the programme's --quick scale); nothing is statistical.
"""

import json
import math

import numpy as np
import pytest
import torch

from experiments import paper
from experiments.__main__ import main


@pytest.fixture(scope="module", autouse=True)
def mnist():
    from experiments.mnist.data import MnistError, load_mnist

    try:
        load_mnist(split="test")
    except MnistError as error:
        pytest.skip(f"no MNIST files: {error}")


def _run(tmp_path, *settings):
    return main(["paper", "--quick", "--out", str(tmp_path), *settings])


def _results(tmp_path):
    return json.loads((tmp_path / "results" / "paper-quick.json").read_text())


def test_the_groups_of_each_part_each_part_its_own():
    config = paper.Config()
    groups = paper.groups_of(config)
    keys = [g.key for g in groups]
    # (a) and (b) both train pathwise_analytic_kl at latent 20, each its own group: (b)'s is
    # probed and trained on the comparison's device, whatever machine trained (a)'s.
    assert len(keys) == len(set(keys)) == 5 + 9 + 5
    assert all(len(g.parts) == 1 for g in groups)
    twins = [g for g in groups if g.label == "pathwise_analytic_kl" and g.latent == 20]
    assert [(g.key, g.parts) for g in twins] == [
        ("kingma-welling-pathwise_analytic_kl-z20", ("a",)),
        ("kingma-welling-estimators-pathwise_analytic_kl-z20", ("b",))]
    folders = paper.Folders(config, type("Paths", (), {"root": paper.Path("out"), "results": paper.Path("out/results"), "figures": paper.Path("out/figures")})())
    names = {paper._checkpoint(g, config, folders).name for g in twins}
    assert len(names) == 2  # and their checkpoints differ, in one state folder
    assert names.pop().startswith(("pathwise_analytic_kl-z20-", "estimators-"))
    burda = paper.study_config(config, paper.groups_of(config.replace(parts=("c",)))[0])
    assert burda.protocol == "burda" and burda.epochs == 3280 and burda.runs == 3
    assert all(paper.study_config(config, g).max_examples == 10_000_000 for g in twins)


def test_the_final_likelihood_is_priced_from_its_own_passes():
    config = paper.Config()
    group = paper.groups_of(config)[0]
    data = {"train": torch.zeros(60_000, 784), "test_all": torch.zeros(10_000, 784)}
    timing = {"seconds_per_step": 0.0, "seconds_per_evaluation": 0.0,
              "seconds_per_likelihood_chunk": 0.01}
    row = paper.estimate(group, config, data, timing, done_steps=0)
    # 3 runs x 100 batches of test images x 20 passes of 250 samples (k = 5000), 0.01 s each
    assert row["minutes"] == pytest.approx(3 * 100 * 20 * 0.01 / 60)
    # what the measuring run spent beyond its steps (compiling, say) is paid once more
    row = paper.estimate(group, config, data, {**timing, "setup_seconds": 30.0}, done_steps=0)
    assert row["minutes"] == pytest.approx((3 * 100 * 20 * 0.01 + 30.0) / 60)


def test_the_plan_fits_the_budget_in_order_and_cuts_the_rest():
    rows = [{"minutes": m} for m in (2.0, 3.0, 4.0, 1.0)]
    assert [r["verdict"] for r in paper.plan(rows, 6.0, partial=False)] == [
        "fits", "fits", "later", "later"]  # in order: a later small group waits its turn
    verdicts = [r["verdict"] for r in paper.plan([dict(r) for r in rows], 6.0, partial=True)]
    assert verdicts[:2] == ["fits", "fits"] and verdicts[2].startswith("partial (about 1.0")
    assert verdicts[3] == "later"


def test_a_verdict_says_beaten_matched_or_missed_with_the_spread():
    assert paper.verdict(-98.0, 0.4, -99.5, higher_is_better=True) == "beaten by 1.50 ± 0.40"
    assert paper.verdict(-99.3, 0.4, -99.5, higher_is_better=True).startswith("matched")
    assert paper.verdict(87.0, 0.1, 86.76, higher_is_better=False) == "missed by 0.24 ± 0.10"


def test_end_to_end_an_interrupted_invocation_loses_no_finished_group(tmp_path, monkeypatch,
                                                                       capsys):
    parts = ["--set", "parts=a,c"]
    original = paper.train_group
    calls = []

    def killed_at_the_third(*args, **kwargs):
        calls.append(args[0].key)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would, in the middle of a group
        return original(*args, **kwargs)

    monkeypatch.setattr(paper, "train_group", killed_at_the_third)
    plot = paper.plot
    monkeypatch.setattr(paper, "plot", lambda *args: [])  # drawn once, by `figures` below
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, *parts)
    err = capsys.readouterr().err
    assert "plan: 10 group(s) to train" in err and "fits" in err
    groups = tmp_path / "results" / "paper-quick" / "groups"
    done = sorted(p.name for p in groups.iterdir())
    assert done == sorted(f"{key}.json" for key in calls[:2])
    first = {name: (groups / name).read_text() for name in done}
    monkeypatch.setattr(paper, "train_group", original)
    # The next invocation plans only what is left and trains it; the finished groups stay.
    assert _run(tmp_path, *parts) == 0
    assert "plan: 8 group(s) to train" in capsys.readouterr().err
    for name, text in first.items():
        assert (groups / name).read_text() == text
    data = _results(tmp_path)["data"]
    assert data["complete"] and not data["left"] and len(data["records"]) == 10
    assert not (tmp_path / "results" / "paper-quick" / "state").exists()  # deleted when complete
    for key, record in data["records"].items():
        assert record["seeds"] == [0, 1] and len(record["finals"]) == 2
        assert record["invocations"][-1]["device_name"]
        assert record["invocations"][-1]["planned_minutes"] >= 0  # the plan, beside the seconds
        weights = tmp_path / record["weights"]
        shipped = paper.load_weights(weights)  # checked against its SHA-256
        assert len(shipped["runs"]) == 1 and shipped["seeds"] == [0]  # run 0's network only
        assert all(v.dtype == torch.float32 for v in shipped["runs"][0].values())
        assert not any("exp_avg" in k for k in shipped["runs"][0])  # no optimiser state
    table = paper.table(_results(tmp_path))
    assert "burda-iwae-k50-z50" in table and "NLL 84.78" in table and "Quick scale" in table
    assert "missed by" in table or "beaten by" in table or "matched" in table
    # figures from the saved results and the shipped weights alone
    monkeypatch.setattr(paper, "plot", plot)
    assert main(["figures", "--from", str(tmp_path)]) == 0
    for name in ("kingma-welling", "burda", "samples"):
        assert (tmp_path / "figures" / f"paper-{name}-quick.png").exists(), name
    # L_k from the shipped weights, no training
    key = "burda-pathwise-z50"
    assert paper.main(["evaluate", str(tmp_path / data["records"][key]["weights"]),
                       "--num-samples", "3", "--test-size", "20"]) == 0
    out = capsys.readouterr().out
    assert "run 0 (seed 0): L_3 = " in out
    # An invocation of part (a) alone keeps part (c)'s finished groups: the results merge.
    monkeypatch.setattr(paper, "plot", lambda *args: [])
    assert _run(tmp_path, "--set", "parts=a") == 0
    merged = _results(tmp_path)["data"]
    assert merged["parts"] == ["a", "c"] and len(merged["records"]) == 10
    # collect: the results again from the finished groups alone, training nothing
    (tmp_path / "results" / "paper-quick.json").unlink()
    assert paper.main(["collect", "--out", str(tmp_path), "--quick"]) == 0
    assert _results(tmp_path)["data"]["records"].keys() == merged["records"].keys()


def test_the_estimator_comparison_probes_gradients_and_draws_them(tmp_path, monkeypatch):
    # Four of part (b)'s groups, the shared one, one with a learned baseline and two of K = 5:
    # the same paths as all nine, in half the time.
    groups = [(label, 20) for label in ("pathwise_analytic_kl", paper.NVIL, "iwae:5", "vimco:5")]
    assert set(groups) <= set(paper.PARTS["b"]["groups"])
    monkeypatch.setitem(paper.PARTS["b"], "groups", groups)
    assert _run(tmp_path, "--set", "parts=b") == 0
    data = _results(tmp_path)["data"]
    assert len(data["records"]) == len(groups)
    reference = data["records"]["kingma-welling-estimators-pathwise_analytic_kl-z20"]
    assert set(reference["probes"][0]["stats"]) == {label for label, _ in groups} - {paper.NVIL}
    for record in data["records"].values():
        assert len(record["probes"][0]["runs"]) == 2  # each run on its own parameters
    # The page's tables: every estimator of (b) in (b)'s order, the ones not run said so
    results = _results(tmp_path)
    rows = paper.estimators_table(results).splitlines()[2:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [
        label for label, _ in paper.PARTS["b"]["groups"]]
    trained = {label for label, _ in groups}
    assert all(("not run yet" in r) != (r.split(" | ")[0].lstrip("| ") in trained) for r in rows)
    probes = paper.reference_probe_table(results).splitlines()
    assert len(probes) == 2 + len(reference["probes"][0]["stats"])  # a row each estimator
    assert probes[0].count("variance at") == probes[0].count("SNR at") == len(reference["probes"])
    paired = paper.estimators_paired(results)
    assert "the final test ELBO" in paired and "L_k" in paired
    assert len(paired.splitlines()) == 2 * len(groups)  # a heading and one line a follower
    for name in ("estimators-bound", "estimators-gradients"):
        assert (tmp_path / "figures" / f"paper-{name}-quick.png").exists()


def test_an_estimator_far_below_the_others_is_drawn_below_the_axes(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments import mnist_vae
    from experiments.common import Paths

    def record(label, start, end):
        bounds = list(np.linspace(start, end, 5))
        history = {"examples_seen": [1000 * (i + 1) for i in range(5)], "test_bound": bounds,
                   "wall_seconds": [float(i + 1) for i in range(5)]}
        return {"label": label, "estimator": label, "num_samples": 1, "examples_seen": 5000,
                "histories": [history, history]}

    runs = {"stl": record("stl", -150.0, -100.0), "score_function": record(
        "score_function", -800.0, -80_000.0)}
    view = {"labels": list(runs), "runs": runs, "settings": {"latent": 20},
            "protocol": "kingma-welling", "num_runs": 2, "eval_size": 100, "scale_note": "t"}
    drawn = {}
    monkeypatch.setattr(mnist_vae, "save_figure", lambda fig, *a: drawn.setdefault("fig", fig))
    mnist_vae._plot_bound(plt, view, tmp_path / "r.json", Paths(tmp_path))
    axes = drawn["fig"].axes[0]
    assert axes.get_ylim()[0] > -300  # the axes follow stl, not the score function's -80,000
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert "score_function (below the axes: ends at -80,000)" in legend
    assert "stl" in legend
    plt.close("all")


def test_a_budget_stops_a_group_partway_and_the_next_invocation_goes_on(tmp_path, monkeypatch,
                                                                        capsys):
    settings = ["--set", "parts=a", "--set", "images=400", "--set", "partial=true"]
    real = paper.estimate

    def slow(*args):  # as if each group needed far more than the budget
        return {**real(*args), "minutes": 50.0}

    original = paper.train_group

    def out_of_time(*args, time_limit=None, **kwargs):  # the time left runs out at once
        assert time_limit is not None  # the partial group, and only it, has a limit
        return original(*args, time_limit=0.0, **kwargs)

    monkeypatch.setattr(paper, "estimate", slow)
    monkeypatch.setattr(paper, "train_group", out_of_time)
    monkeypatch.setattr(paper, "plot", lambda *args: [])  # the end to end test draws them
    assert _run(tmp_path, *settings) == 0
    err = capsys.readouterr().err
    assert "partial (about" in err and "stopped at the budget" in err
    assert err.count(" later\n") == 4
    state = tmp_path / "results" / "paper-quick" / "state" / "a"  # its parts' own
    assert any(state.glob("pathwise_analytic_kl-z20-*.pt"))
    assert not _results(tmp_path)["data"]["records"]
    monkeypatch.setattr(paper, "estimate", real)
    monkeypatch.setattr(paper, "train_group", original)
    assert _run(tmp_path, *settings) == 0  # goes on from the checkpoint, then the rest
    record = _results(tmp_path)["data"]["records"]["kingma-welling-pathwise_analytic_kl-z20"]
    assert len(record["invocations"]) == 2 and not record["invocations"][0]["finished"]
    assert record["examples_seen"] == 400


def test_the_ranks_of_a_torchrun_share_the_groups_and_rank_0_writes_the_results(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr(paper, "_barrier", lambda: None)
    monkeypatch.setattr(paper, "_share", lambda refusal: refusal)
    monkeypatch.setattr(paper, "plot", lambda *args: [])
    settings = ["--set", "parts=a"]
    trained = {}
    original = paper.train_group

    def record(group, *args, **kwargs):
        trained.setdefault(paper._rank()[0], []).append(group.key)
        return original(group, *args, **kwargs)

    monkeypatch.setattr(paper, "train_group", record)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _run(tmp_path, *settings) == 0
    assert not (tmp_path / "results" / "paper-quick.json").exists()  # rank 1 writes none
    monkeypatch.setenv("RANK", "0")
    assert _run(tmp_path, *settings) == 0
    keys = [g.key for g in paper.groups_of(paper.Config(parts=("a",)))]
    assert trained[1] == keys[1::2] and trained[0] == keys[0::2]  # every other group each
    assert _results(tmp_path)["data"]["complete"]


@pytest.mark.parametrize("settings, message", [
    (["--set", "parts=a,d"], "unknown part(s) d; use --set parts= with any of a, b, c"),
    (["--parts", "x"], "unknown part(s) x"),
    (["--budget-minutes", "0"], "budget_minutes must be a positive number"),
    (["--set", "runs=0"], "runs must be >= 1"),
])
def test_bad_settings_fail_in_one_line_naming_the_fix(tmp_path, settings, message):
    with pytest.raises(SystemExit) as error:
        _run(tmp_path, *settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_budget_that_fits_no_group_says_the_smallest_that_does(tmp_path, monkeypatch):
    real = paper.estimate
    monkeypatch.setattr(paper, "estimate", lambda *args: {**real(*args), "minutes": 12.3})
    with pytest.raises(SystemExit, match=r"a budget of 5 minutes fits no group; the smallest "
                                         r"needs about 14 minutes: use --budget-minutes 14, or "
                                         r"--set partial=true"):
        _run(tmp_path, "--set", "parts=c", "--budget-minutes", "5")


def test_an_invocation_with_another_plan_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "train_group", lambda *args, **kwargs: False)
    _run(tmp_path, "--set", "parts=c")  # records the plan, trains nothing
    with pytest.raises(SystemExit, match=r"holds another plan \(it differs in runs: runs=2\); go "
                                         r"on with those settings, or start another with --set "
                                         r"state=NEW_FOLDER"):
        _run(tmp_path, "--set", "parts=c", "--set", "runs=3")
    state = tmp_path / "results" / "paper-quick" / "state"
    with pytest.raises(SystemExit, match="it differs in parts"):
        _run(tmp_path, "--set", "parts=a,c", "--set", f"state={state / 'c'}")
    # By default another choice of parts has a state folder of its own, beside the first: (a)
    # on one machine and (b), (c) on another never refuse each other.
    _run(tmp_path, "--set", "parts=a,c")
    plans = {folder.name: json.loads((folder / "plan.json").read_text())["parts"]
             for folder in state.iterdir()}
    assert plans == {"c": ["c"], "a-c": ["a", "c"]}


def test_the_published_numbers_the_table_compares_with():
    sources = {e["source"] for e in paper.mnist_vae.PUBLISHED}
    assert "Burda et al. 2016, Table 1 (IWAE, k = 50)" in sources
    assert not math.isnan(paper.mnist_vae.PUBLISHED[0]["value"])


def test_the_times_table_sets_measured_minutes_beside_the_plans():
    from experiments.paper import times_table

    def record(parts, invocations):
        return {"parts": parts, "wall_seconds": 3000.0, "invocations": [
            {"device": "cpu", "device_name": "x86_64", "seconds": s, "planned_minutes": p}
            for s, p in invocations]}

    results = {"data": {"groups": ["a20", "a200", "b20", "a10"], "records": {
        "a20": record(["a"], [(600.0, 8.0), (5400.0, 92.0)]),   # two invocations: 100 min vs 100
        "a200": record(["a"], [(60.0, None)]),                  # logged before plans were kept
        "b20": record(["b"], [(60.0, 2.0)])}}}                  # another part; a10 not run
    rows = times_table(results, "a").splitlines()[2:]
    assert len(rows) == 2, rows
    assert rows[0] == "| a20 | x86_64 (cpu) | 50.0 min | 2: 100.0 min | 100.0 min | 1.00 |"
    assert rows[1].endswith("| 1: 1.0 min | – | – |")
    assert len(times_table(results).splitlines()) == 5  # every part's finished groups
