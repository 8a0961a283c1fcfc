

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
