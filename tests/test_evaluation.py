

def test_score_fusion_scores_colour_on_luminance():
    import numpy as np

    from alignfuse.evaluation import score_fusion
    from alignfuse.io import rgb_to_ycbcr

    rng = np.random.default_rng(0)
    vis = rng.random((40, 48, 3)).astype(np.float32)
    ir = rng.random((40, 48)).astype(np.float32)
    fused = 0.5 * (rgb_to_ycbcr(vis)[0] + ir)
    colour = score_fusion(vis, ir, fused, ["Qabf", "Mutinf"])
    grey = score_fusion(rgb_to_ycbcr(vis)[0], ir, fused, ["Qabf", "Mutinf"])
    assert list(colour) == ["Qabf", "Mutinf"] and colour == grey
    assert score_fusion(vis, ir, ir, ["Qabf"])["Qabf"] != colour["Qabf"]


def test_evaluate_metrics_option_selects_vifb_or_named_metrics(tmp_path, capsys):
    import json as _json

    from alignfuse.cli import main

    from pathlib import Path

    samples = Path(__file__).resolve().parents[1] / "samples"
    assert main(["evaluate", "--data", str(samples), "--preset", "none", "--limit", "1", "--model", "identity+average",
                 "--metrics", "vifb", "--json", str(tmp_path / "e.json"), "-q"]) == 0
    from alignfuse.metrics.fusion import VIFB_METRIC_NAMES

    summary = _json.loads((tmp_path / "e.json").read_text())["summary"]["identity+average"]
    assert set(VIFB_METRIC_NAMES) <= set(summary) and "CC_mean" not in summary
    capsys.readouterr()
    assert main(["evaluate", "--data", str(samples), "--preset", "none", "--limit", "1", "--model", "identity+average",
                 "--metrics", "Qabf,Nope", "-q"]) == 2
    assert "unknown metric(s) Nope" in capsys.readouterr().err


def test_a_metric_defined_on_fewer_pairs_says_over_how_many_it_was_averaged():
    from alignfuse.evaluation import format_table, summarise

    rows = [{"name": "a", "Qabf": 0.5, "Qcb": float("nan")}, {"name": "b", "Qabf": 0.7, "Qcb": 0.4}]
    summary = summarise(rows)
    assert summary["Qcb"] == {"mean": 0.4, "std": 0.0, "n": 1} and summary["Qabf"]["n"] == 2
    table = format_table({"m": summary}, ["Qabf", "Qcb"])
    assert "0.4 ± 0 (n=1)" in table and "0.6 ± 0.1 |" in table
