"""A tiny end-to-end run of the Table 2 protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_squint.data.validate import SlideError
from napari_squint.tasks.benchmark_impute import (
    benchmark_impute,
    guided_average,
    results_markdown,
    write_results,
)

TINY_OPTS = dict(batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, kmeans_cells=2000)


@pytest.fixture(scope="module")
def results(small_tissue):
    calls = []

    def oracle_mean(adata, held, test, seed):  # an extra method through the hook
        calls.append((held.sum(), test.size, seed))
        x = np.asarray(adata.X[test].toarray(), dtype=float) * 0 + 1.0
        return x, None

    oracle_mean.settings = {"fill": 1.0}  # recorded in the results' config
    res = benchmark_impute(small_tissue, section="section_0", seeds=(0, 1), epochs=1, options=TINY_OPTS,
                           variants={"SQuINT": {}, "SQuINT w/o C": {"use_covariates": False}},
                           extra_methods={"constant": oracle_mean})
    res["_calls"] = calls
    return res


def test_extra_method_settings_are_recorded(results):
    assert results["config"]["extra_settings"] == {"constant": {"fill": 1.0}}
    assert results["config"]["extra_methods"] == ["constant"]


def test_every_method_and_metric_is_scored(results):
    x_rows = set(results["summary"]["X"])
    n_rows = set(results["summary"]["X_nbr"])
    base = {"mean profile", "neighbourhood average", "neighbourhood average (log space)", "ring infill", "constant"}
    squint = {"SQuINT (context)", "SQuINT (infill)", "SQuINT (oneshot)", "SQuINT (context) sample",
              "SQuINT (context) logmean",
              "SQuINT-guided neighbour average", "SQuINT w/o C (context)"}
    assert base | squint <= x_rows
    assert base | squint | {"SQuINT (context) Σ", "SQuINT (infill) Σ", "SQuINT (oneshot) Σ"} <= n_rows
    for target in ("X", "X_nbr"):
        for method, summary in results["summary"][target].items():
            assert set(summary) == {"pc_cell", "pc_gene", "mmd", "energy"}, method
            assert summary["mmd"]["n"] == 2
            assert np.isfinite(summary["mmd"]["mean"]) and summary["mmd"]["mean"] >= 0
    # location-blind baselines score 0 per gene by construction
    assert results["summary"]["X"]["mean profile"]["pc_gene"]["mean"] == 0
    assert results["summary"]["X"]["constant"]["pc_gene"]["mean"] == 0


def test_runs_and_extra_hook(results, small_tissue):
    in_sec = (small_tissue.obs["section"] == "section_0").to_numpy().sum()
    assert [r["seed"] for r in results["runs"]] == [0, 1]
    for r in results["runs"]:
        assert r["n_test"] == 3 * round(0.03 * in_sec)
        assert r["n_train"] == small_tissue.n_obs - r["n_test"]
    # each call gets the run's seed (a trained extra method varies with it, as SQuINT does)
    assert results["_calls"] == [(r["n_test"], r["n_test"], r["seed"]) for r in results["runs"]]
    assert results["config"]["section"] == "section_0"


def test_write_results(results, tmp_path):
    res = {k: v for k, v in results.items() if not k.startswith("_")}
    js, md = write_results(res, tmp_path, stem="t")
    back = json.loads(js.read_text())
    assert back["summary"]["X"]["ring infill"]["pc_gene"]["n"] == 2
    text = md.read_text()
    assert "| neighbourhood average |" in text and "### Microenvironment X_nbr" in text
    assert text == results_markdown(res)


def test_extra_method_shape_is_checked(small_tissue):
    with pytest.raises(SlideError, match="returned shape"):
        benchmark_impute(small_tissue, section="section_0", seeds=(0,), variants={}, sampled=False,
                         extra_methods={"bad": lambda a, h, t, s: (np.zeros((2, 2)), None)})


def test_guided_average_copies_the_matching_neighbours():
    # two kinds of observed cells around a test cell; the model's guess picks the kind
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 10, size=(41, 2))
    coords[0] = [5, 5]
    kind = np.arange(41) % 2
    counts = np.where(kind[:, None] == 0, [[50, 1, 1]], [[1, 1, 50]]).astype(float)
    observed = np.ones(41, bool)
    observed[0] = False
    out = guided_average(coords, counts, observed, np.array([0]), np.array([[1.0, 1.0, 40.0]]),
                         candidates=16, k=4)
    assert np.allclose(out, [[1, 1, 50]])


def test_masked_token_accuracy_is_reported(results):
    tok = results["summary"]["tokens"]
    from napari_squint.tasks.masked_tokens import BASELINE_ROW, MODEL_ROW

    assert set(tok) == {MODEL_ROW, BASELINE_ROW}
    for row in tok.values():
        assert set(row) == {"top1", "top5", "code_top1"} and row["top1"]["n"] == 2
        assert 0.0 <= row["top1"]["mean"] <= row["top5"]["mean"] <= 1.0
        assert 0.0 <= row["code_top1"]["mean"] <= 1.0
    # the model's predicted token is its predicted codes: a right token has every head's code right
    assert tok[MODEL_ROW]["top1"]["mean"] <= tok[MODEL_ROW]["code_top1"]["mean"]
    for r in results["runs"]:
        for row in r["scores"]["tokens"].values():
            assert row["top1"] <= row["top5"]
    text = results_markdown({k: v for k, v in results.items() if not k.startswith("_")})
    assert "### Masked-token accuracy" in text and "top1" in text


def test_merge_results_over_seeds(results):
    from napari_squint.tasks.benchmark_impute import merge_results

    res = {k: v for k, v in results.items() if not k.startswith("_")}
    one = {"config": dict(res["config"], seeds=[0]), "runs": res["runs"][:1], "summary": {}}
    two = {"config": dict(res["config"], seeds=[1]), "runs": res["runs"][1:], "summary": {}}
    merged = merge_results([one, two])
    assert merged["config"]["seeds"] == [0, 1]
    for target in ("X", "X_nbr", "tokens"):
        assert merged["summary"][target] == res["summary"][target]
    with pytest.raises(ValueError, match="repeated"):
        merge_results([one, one])
    with pytest.raises(ValueError, match="differ"):
        merge_results([one, dict(two, config=dict(two["config"], section="elsewhere"))])


def test_any_keys_and_units_give_the_same_protocol(small_tissue):
    """Other section/spatial keys and coordinates in other units (x1000, shifted): same sites, same baseline scores."""
    a = small_tissue.copy()
    b = small_tissue.copy()
    b.obs["slice"] = b.obs.pop("section")
    b.obsm["xy_px"] = np.asarray(b.obsm.pop("spatial"), dtype=np.float64) * 1000.0 + 5e4
    kw = dict(seeds=(3,), variants={}, sampled=False, guided=False)
    ra = benchmark_impute(a, section="section_1", **kw)
    rb = benchmark_impute(b, section="section_1", section_key="slice", spatial_key="xy_px", **kw)
    assert rb["config"]["keys"] == {"section": "slice", "spatial": "xy_px", "spatial_dims": 2}
    assert ra["runs"][0]["n_test"] == rb["runs"][0]["n_test"]
    for target in ("X", "X_nbr"):
        for method in ("mean profile", "neighbourhood average", "ring infill"):
            for metric, value in ra["runs"][0]["scores"][target][method].items():
                assert rb["runs"][0]["scores"][target][method][metric] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_each_run_records_what_calibrate_output_chose(small_tissue, results):
    from napari_squint.api.squint_calibrate import RESIDUAL_WEIGHTS, SPREADS

    res = benchmark_impute(small_tissue, section="section_0", seeds=(0,), epochs=1, sampled=False,
                           options={**TINY_OPTS, "calibrate_output": True}, variants={"SQuINT": {}},
                           impute_methods=("context",))
    chosen = res["runs"][0]["calibration"]
    assert set(chosen) == {"residual_weight", "spread"}
    assert chosen["residual_weight"] in RESIDUAL_WEIGHTS and chosen["spread"] in SPREADS
    assert all("calibration" not in r for r in results["runs"])  # without the option nothing is recorded
