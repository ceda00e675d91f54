"""Solutions to the exercises of notebook 06 (comparing runs).

Each exercise builds tiny fake run folders in the current directory, the way the main job leaves
them: numbers written with ``runs.record_metrics`` and a ``run.json`` written with
``runs.write_record`` (the preset, and per notebook its status and parameters). No notebook is
executed, so every exercise runs in about a second.
"""

from pathlib import Path

import numpy as np
from scipy import stats

import fundus_nb
from fundus_nb import metrics, runs

AZ_SES = ("05_evaluation", "image_level.ses.az")  # a number notebook 06 compares ("Test Az SeS")
RATIO = ("03_lenet_egl", "ratio_egl_random.n_patches.mean")  # EGL/random labelled patches


def fake_run(folder, params, numbers, preset="quick"):
    """A run folder holding ``numbers`` ({(section, dotted key): value}) run with ``params``."""
    sections = {}
    for (section, key), value in numbers.items():
        node = sections.setdefault(section, {})
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for section, values in sections.items():
        runs.record_metrics(folder, section, values)
    notebooks = {section: {"status": "ok", "parameters": {**params, "run_dir": str(folder)}, "wall_s": 1.0}
                 for section in sections}
    runs.write_record(folder, {"version": fundus_nb.__version__, "preset": preset, "notebooks": notebooks})
    return Path(folder)


def exercise_1():
    """Two runs that differ only in their seed give a and b: what std does compare_runs report?

    Answer: the sample standard deviation (n - 1) of two numbers, |a - b| / sqrt(2). Only the seed
    differs, so the two runs form one group (the preset) with two runs and two seeds.
    """
    a, b = 0.62, 0.70
    for seed, az in [(0, a), (1, b)]:
        fake_run(Path("ex1") / f"seed={seed}", {"seed": seed}, {AZ_SES: az})
    found = runs.runs_table("ex1")
    swept = runs.swept_parameters(found)
    assert swept == ["seed"] and runs.replicate_groups(swept) == ["preset"]
    row = runs.compare_runs(runs.collect_metrics("ex1"), runs.replicate_groups(swept)).iloc[0]
    predicted = abs(a - b) / np.sqrt(2)
    np.testing.assert_allclose(row["std"], predicted)
    assert row["runs"] == 2 and row["seeds"] == 2
    print(f"{row['metric']}: std {row['std']:.4f} = |a - b| / sqrt(2) = {predicted:.4f}")


def exercise_2():
    """A sweep of egl_k 16,32 and seed 0,1: what is swept, how are the runs grouped?

    Answer: swept_parameters finds egl_k and seed; replicate_groups makes one group per preset and
    egl_k (the seed is the replicate), two groups of two runs and two seeds each. Here egl_k moves
    the ratio by 0.20, far more than twice the seed spread (0.014): parameter_effects says bigger.
    Grouping by seed instead (compare_by = "seed") pools the two egl_k values in each group: the
    groups' standard deviation is then egl_k's effect, and each group holds one seed, so there is no
    seed spread to weigh the seed's own "effect" (0.02) against (bigger is None).
    """
    ratios = {(16, 0): 0.70, (16, 1): 0.72, (32, 0): 0.90, (32, 1): 0.92}
    for point in runs.sweep_grid({"egl_k": "16,32", "seed": "0,1"}):
        k, seed = int(point["egl_k"]), int(point["seed"])
        fake_run(Path("ex2") / runs.point_name(point), {"egl_k": k, "seed": seed}, {RATIO: ratios[k, seed]})
    table = runs.collect_metrics("ex2")
    swept = runs.swept_parameters(runs.runs_table("ex2"))
    assert swept == ["egl_k", "seed"] and runs.replicate_groups(swept) == ["preset", "egl_k"]
    groups = runs.compare_runs(table, runs.replicate_groups(swept))
    assert list(groups["egl_k"]) == ["16", "32"] and list(groups["runs"]) == [2, 2] and list(groups["seeds"]) == [2, 2]
    effects = runs.parameter_effects(table, swept).set_index("parameter")
    np.testing.assert_allclose(effects.loc["egl_k", "effect"], 0.20)
    np.testing.assert_allclose(effects.loc["egl_k", "spread"], np.std([0.70, 0.72], ddof=1))
    assert effects.loc["egl_k", "bigger"] is True and effects.loc["seed", "bigger"] is None
    by_seed = runs.compare_runs(table, ["preset", "seed"])
    np.testing.assert_allclose(by_seed["std"], np.std([0.70, 0.90], ddof=1), rtol=0.1)  # egl_k's effect
    print(groups[["egl_k", "runs", "seeds", "mean", "std"]].round(3).to_string(index=False))
    print(effects[["values", "effect", "spread", "bigger"]].round(3).to_string())


def exercise_3():
    """A 95 % bootstrap CI of the EGL/random ratio over five seeds: does it exclude 1?

    Answer: metrics.bootstrap_ratio resamples the seeds' ratios with replacement and takes the 2.5 %
    and 97.5 % quantiles of their geometric means; the same draws by hand give the same CI. With
    these five seeds EGL needed about 0.76 times random's labels and the CI stays below 1 (scipy's
    own percentile bootstrap agrees to about 0.02).
    """
    egl, random = [300, 260, 340, 280, 310], [400, 380, 390, 420, 360]
    labels = [("EGL patches", "03_lenet_egl", "needed.egl"), ("random patches", "03_lenet_egl", "needed.random")]
    for seed, (e, r) in enumerate(zip(egl, random, strict=True)):
        fake_run(Path("ex3") / f"seed={seed}", {"seed": seed}, {("03_lenet_egl", "needed.egl"): e,
                                                              ("03_lenet_egl", "needed.random"): r})
    values = runs.compared_metrics(runs.collect_metrics("ex3"), labels)
    wide = values.pivot_table(index="seed", columns="metric", values="value", observed=True)
    ci = metrics.bootstrap_ratio(wide["EGL patches"], wide["random patches"], n_bootstrap=4000, seed=0)
    ratio = wide["EGL patches"].to_numpy() / wide["random patches"].to_numpy()
    idx = np.random.default_rng(0).integers(0, len(ratio), (4000, len(ratio)))
    by_hand = np.quantile(np.exp(np.log(ratio[idx]).mean(axis=1)), [0.025, 0.975])
    np.testing.assert_allclose([ci["ci_low"], ci["ci_high"]], by_hand)
    theirs = stats.bootstrap((ratio,), stats.gmean, n_resamples=4000, method="percentile", random_state=0)
    np.testing.assert_allclose([ci["ci_low"], ci["ci_high"]], theirs.confidence_interval, atol=0.03)
    assert ci["ci_high"] < 1, "the CI excludes 1: EGL needed fewer labels in these seeds"
    print(f"EGL/random {ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}] over {ci['n_used']} seeds")


def compare_median(table, by):
    """compare_runs with the median and the interquartile range (25 % to 75 %) of each group."""
    values = runs.compared_metrics(table, by=by)
    grouped = values.groupby(["group", "metric"], observed=True)["value"]
    return grouped.agg(runs="count", median="median", q25=lambda v: v.quantile(0.25),
                       q75=lambda v: v.quantile(0.75), mean="mean").reset_index()


def exercise_4():
    """A variant of compare_runs with the median and the interquartile range: when does it differ?

    Answer: the median and quartiles match numpy's; they differ most from the mean and standard
    deviation when one run is an outlier (here a run whose training collapsed to Az 0.40): the mean
    drops by about 0.10, the median does not move.
    """
    for seed, az in enumerate([0.80, 0.81, 0.82, 0.40]):
        fake_run(Path("ex4") / f"seed={seed}", {"seed": seed}, {AZ_SES: az})
    table = runs.collect_metrics("ex4")
    row = compare_median(table, ["preset"]).iloc[0]
    az = np.array([0.80, 0.81, 0.82, 0.40])
    np.testing.assert_allclose([row["median"], row["q25"], row["q75"]],
                               [np.median(az), np.percentile(az, 25), np.percentile(az, 75)])
    np.testing.assert_allclose(row["mean"], runs.compare_runs(table, ["preset"]).iloc[0]["mean"])
    assert row["median"] - row["mean"] > 0.09, "the outlier pulls the mean, not the median"
    print(f"{row['metric']}: median {row['median']:.3f} [IQR {row['q25']:.3f}-{row['q75']:.3f}], "
          f"mean {row['mean']:.3f}")


if __name__ == "__main__":
    for exercise in (exercise_1, exercise_2, exercise_3, exercise_4):
        print(f"--- {exercise.__name__}")
        exercise()
