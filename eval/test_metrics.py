"""Checks of eval/metrics.py on small synthetic arrays, with answers worked out by hand.

Run by `make eval` before the evaluation: `python eval/test_metrics.py` (no pytest needed).
"""

import sys

import numpy as np

import metrics


def test_perfect_prediction_scores_zero():
    rng = np.random.default_rng(1)
    clip = rng.random((4, 20, 30))
    assert metrics.mad(clip, clip) == 0
    assert metrics.mse(clip, clip) == 0
    assert metrics.grad(clip, clip) == 0
    assert metrics.dtssd(clip, clip) == 0
    assert metrics.iou(clip, clip) == 1


def test_mad_and_mse_scales():
    true = np.zeros((2, 10, 10))
    pred = np.full((2, 10, 10), 0.1)
    assert abs(metrics.mad(pred, true) - 100) < 1e-9  # 0.1 x 1e3
    assert abs(metrics.mse(pred, true) - 10) < 1e-9  # 0.01 x 1e3


def test_iou_pools_the_clip():
    true = np.zeros((2, 1, 4))
    true[:, 0, :2] = 1  # 4 foreground pixels
    pred = np.zeros((2, 1, 4))
    pred[0, 0, :3] = 0.6  # 2 hits + 1 false alarm
    pred[1, 0, :1] = 0.9  # 1 hit, 1 miss
    assert abs(metrics.iou(pred, true) - 3 / 5) < 1e-12


def test_dtssd_sees_flicker_not_motion():
    t, h, w = 5, 8, 8
    moving = np.zeros((t, h, w))
    for i in range(t):
        moving[i, :, i : i + 2] = 1  # a bar moving right
    # Following the motion exactly: no temporal error even though alpha changes every frame.
    assert metrics.dtssd(moving, moving) == 0
    # A static truth, and a prediction that alternates 0 / 0.2 everywhere: every step is 0.2.
    still = np.zeros((t, h, w))
    flicker = np.zeros((t, h, w))
    flicker[1::2] = 0.2
    assert abs(metrics.dtssd(flicker, still) - 20) < 1e-9  # 0.2 x 1e2


def test_grad_matches_the_dense_2d_filter():
    # The separable filter must equal RVM's dense filter_x[i, j] = g(i) g'(j) / norm.
    sigma, eps = 1.4, 1e-2
    half = np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * eps)))
    x = np.arange(-half, half + 1)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dense = np.outer(g, -x * g / sigma**2)
    dense /= np.sqrt((dense**2).sum())
    rng = np.random.default_rng(2)
    img = rng.random((15, 17))
    r = len(x) // 2
    padded = np.pad(img, r, mode="edge")
    gx = np.zeros_like(img)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            gx[i, j] = (padded[i : i + 2 * r + 1, j : j + 2 * r + 1] * dense).sum()
    gy = np.zeros_like(img)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            gy[i, j] = (padded[i : i + 2 * r + 1, j : j + 2 * r + 1] * dense.T).sum()
    assert np.allclose(metrics.gauss_gradient(img), np.sqrt(gx**2 + gy**2), atol=1e-12)


def test_grad_prefers_a_sharp_edge_to_a_blurred_one():
    true = np.zeros((1, 32, 32))
    true[:, :, 16:] = 1
    blurred = np.zeros((1, 32, 32))
    blurred[:, :, 12:20] = np.linspace(0, 1, 8)
    blurred[:, :, 20:] = 1
    shifted = np.zeros((1, 32, 32))
    shifted[:, :, 17:] = 1
    assert metrics.grad(blurred, true) > 0
    assert metrics.grad(shifted, true) > 0
    assert metrics.grad(true, true) == 0


def test_flicker_counts_only_still_pixels():
    t, h, w = 3, 6, 6
    luma = np.full((t, h, w), 100.0)
    luma[1:, :, 3:] = 200  # the right half changes between frame 0 and 1: not still there
    alpha = np.zeros((t, h, w))
    alpha[1, :, :] = 0.5  # alpha jumps everywhere at frame 1, back at frame 2
    score, still_fraction = metrics.flicker(alpha, luma)
    # Still pixels: step 0->1 the left half less its border column (3x3 average reaches the
    # changed half), step 1->2 everything. |d alpha| is 0.5 at every one of them.
    assert abs(score - 500) < 1e-6, score
    assert abs(still_fraction - (6 * 2 + 36) / 72) < 1e-9, still_fraction


def main():
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_")]
    failed = 0
    for name, f in tests:
        try:
            f()
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name}: {e}")
    print(f"metrics: {len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
