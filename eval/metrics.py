"""Matting metrics, as the video matting literature defines them (shared/reference/peers.md §4).

Every function takes alpha as float arrays in [0, 1]: one frame is (H, W), a clip is (T, H, W).
Scales follow RobustVideoMatting's evaluator (evaluation/evaluate_lr.py), so numbers read like
the papers': MAD and MSE x1e3, Grad / 1000 (a per-frame sum, so it grows with the frame size),
dtSSD x1e2. IoU is a plain fraction, the flicker score is x1e3 (same unit as MAD).
"""

import numpy as np


def mad(pred, true):
    """Mean absolute difference, x1e3."""
    return float(np.abs(pred - true).mean() * 1e3)


def mse(pred, true):
    """Mean squared error, x1e3."""
    return float(((pred - true) ** 2).mean() * 1e3)


def _gauss_kernels(sigma=1.4, epsilon=1e-2):
    """The separable halves of Rhemann et al.'s derivative-of-Gaussian filter (as RVM builds it:
    filter_x[i, j] = g(i) * g'(j), normalised to unit L2 norm)."""
    half = np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -x * g / sigma**2
    norm = np.sqrt((np.outer(g, dg) ** 2).sum())
    return g / np.sqrt(norm), dg / np.sqrt(norm)


_G, _DG = _gauss_kernels()


def _correlate_1d(img, kernel, axis):
    """Correlation along one axis with replicated borders (cv2.filter2D with BORDER_REPLICATE)."""
    r = len(kernel) // 2
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="edge")
    out = np.zeros_like(img, dtype=np.float64)
    n = img.shape[axis]
    for k, w in enumerate(kernel):
        out += w * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def gauss_gradient(img):
    """Gradient magnitude of `img` (H, W) under the sigma-1.4 derivative-of-Gaussian filters."""
    gx = _correlate_1d(_correlate_1d(img, _G, 0), _DG, 1)  # filter_x = g(row) * g'(col)
    gy = _correlate_1d(_correlate_1d(img, _DG, 0), _G, 1)  # filter_y = its transpose
    return np.sqrt(gx**2 + gy**2)


def _minmax(img):
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def grad_frame(pred, true):
    """Gradient error of one frame: sum of squared differences of the gradient magnitudes of the
    min-max normalised mattes, / 1000."""
    diff = gauss_gradient(_minmax(pred.astype(np.float64))) - gauss_gradient(_minmax(true.astype(np.float64)))
    return float((diff**2).sum() / 1000)


def grad(pred, true):
    """Mean over the clip's frames of `grad_frame`."""
    return float(np.mean([grad_frame(p, t) for p, t in zip(pred, true)]))


def iou(pred, true, threshold=0.5):
    """Intersection over union of alpha >= threshold, pooled over the whole clip (so frames where
    the subject is small count as little as they weigh). 1.0 when both are empty."""
    p, t = pred >= threshold, true >= threshold
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0


def dtssd(pred, true):
    """Temporal coherence (Erofeev et al. 2015): per frame t >= 1,
    sqrt(mean(((pred_t - pred_t-1) - (true_t - true_t-1))^2)), x1e2, averaged over those frames."""
    if len(pred) < 2:
        return 0.0
    d = np.diff(pred.astype(np.float64), axis=0) - np.diff(true.astype(np.float64), axis=0)
    return float(np.sqrt((d**2).mean(axis=(1, 2))).mean() * 1e2)


def _box3(img):
    """3x3 mean with replicated borders, over the last two axes."""
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    h, w = img.shape[-2:]
    return sum(p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def still_pixels(luma, threshold=3.0):
    """(T-1, H, W) bool: where the picture did not change between frame t-1 and t, i.e. the
    3x3-averaged |dY| (8-bit luma) is below `threshold` (above H.264 noise, below real motion)."""
    dy = np.abs(np.diff(luma.astype(np.float32), axis=0))
    return _box3(dy) < threshold


def flicker(pred, luma, threshold=3.0):
    """Mean |alpha_t - alpha_t-1| over the pixels whose picture did not change (`still_pixels`),
    x1e3: needs no ground truth, so it works on real footage. Also returns the fraction of
    pixels that counted as still."""
    still = still_pixels(luma, threshold)
    if not still.any():
        return 0.0, 0.0
    da = np.abs(np.diff(pred.astype(np.float32), axis=0))
    return float(da[still].mean() * 1e3), float(still.mean())
