"""The 15 MNIST-C corruptions, as google-research/mnist-c's corruptions.py defines them.

Each follows the reference function line by line (its severity table, its scikit-image calls,
its quirks), with two changes that make results reproducible: every image draws its randomness
from its own generator, seeded by (seed, corruption, level, image index), so a corrupted test set
does not depend on the evaluation batch size or on the order of evaluation; and motion blur uses
ImageMagick's MotionBlurImage algorithm ported to NumPy (the reference calls it through Wand),
checked against ImageMagick itself where it is installed (tests/data/test_corruptions.py).

Images are 28x28 grey levels in [0, 1]; the reference's /255 and *255 cancel. Levels are MNIST-C's
severities 1-5; corruptions without a severity take level 1. `MNIST_C_LEVEL` is the level the
reference uses by default, the one its published dataset was made with.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nin_cli.errors import ConfigError, install_hint

SIZE = 28  # MNIST-C is defined for 28x28 grey images


def _skimage():
    try:
        import skimage  # noqa: F401
        from skimage import color, feature, filters, transform, util
    except ImportError as exc:
        raise ConfigError(
            f"the MNIST-C corruptions need scikit-image: {install_hint('robustness')} (or evaluate without them: 'corruptions={{}}')"
        ) from exc
    return color, feature, filters, transform, util


# --- helpers of the reference ------------------------------------------------------------------


def plasma_fractal(rng: np.random.Generator, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the reference's plasma_fractal)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def line_from_points(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """A soft line between two points, zero outside columns [floor(c0), ceil(c1))."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cc, rr = np.meshgrid(np.linspace(0, SIZE - 1, SIZE), np.linspace(0, SIZE - 1, SIZE), sparse=True)
    m = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rr - (m * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    corruption = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    corruption[:, : int(np.floor(c0))] = 0
    corruption[:, int(np.ceil(c1)) :] = 0
    return np.clip(corruption, 0, 1)


def motion_blur_kernel(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's MotionBlurImage (effect.c): a one-sided Gaussian of width 2*ceil(radius)+1
    along `angle` degrees; (weights, column offsets, row offsets)."""
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i * i) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    a = math.radians(angle)
    px, py = width * math.sin(a), width * math.cos(a)
    norm = math.hypot(px, py)
    dx = np.ceil(i * py / norm - 0.5).astype(int)
    dy = np.ceil(i * px / norm - 0.5).astype(int)
    return kernel, dx, dy


def imagemagick_motion_blur(grey8: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """MotionBlurImage on an 8-bit grey image as ImageMagick Q16 computes it (edge pixels repeat
    outside the image, each result rounded to a 16-bit quantum), written back to 8 bits the way its
    PNG coder does (truncating q / 257: equal to ImageMagick 6.9's output, tested)."""
    kernel, dx, dy = motion_blur_kernel(radius, sigma, angle)
    h, w = grey8.shape
    q16 = grey8.astype(np.float64) * 257.0
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    out = np.zeros((h, w))
    for k, ox, oy in zip(kernel, dx, dy):
        out += k * q16[np.clip(rows + oy, 0, h - 1), np.clip(cols + ox, 0, w - 1)]
    quantum = np.clip(np.floor(out + 0.5), 0, 65535)
    return (quantum // 257).astype(np.uint8)


def _affine(x: np.ndarray, **params) -> np.ndarray:
    """skimage warp about the image centre (13.5, 13.5), as the reference's shear/rotate/scale."""
    _, _, _, transform, _ = _skimage()
    aff = transform.AffineTransform(**params)
    (a1, a2), (b1, b2) = aff.params[0, :2], aff.params[1, :2]
    aff = transform.AffineTransform(**params, translation=[13.5 * (1 - a1 - a2), 13.5 * (1 - b1 - b2)])
    return np.clip(transform.warp(x, inverse_map=aff), 0, 1)


def shear_matrix(c: float) -> np.ndarray:
    """The inverse map of MNIST-C's shear as the published 2019 dataset has it: scikit-image before
    0.21 built AffineTransform(shear=c) as [[1, -sin c], [0, cos c]] (0.21 made it [[1, -tan c],
    [0, 1]], scikit-image PR #6717), plus the reference's translation that keeps the centre
    (13.5, 13.5) fixed. Written out here, so the dataset does not move with scikit-image."""
    m = np.array([[1.0, -math.sin(c), 0.0], [0.0, math.cos(c), 0.0], [0.0, 0.0, 1.0]])
    m[0, 2] = 13.5 * (1 - m[0, 0] - m[0, 1])
    m[1, 2] = 13.5 * (1 - m[1, 0] - m[1, 1])
    return m


def _sign(rng: np.random.Generator) -> int:
    return int(rng.choice([-1, 1], 1)[0])


# --- the corruptions: (image in [0, 1], the level's parameter, rng) -> image in [0, 1] ----------


def shot_noise(x, c, rng):
    return np.clip(rng.poisson(x * c) / float(c), 0, 1)


def impulse_noise(x, c, rng):
    _, _, _, _, util = _skimage()
    return np.clip(util.random_noise(x, mode="s&p", amount=c, rng=rng), 0, 1)


def glass_blur(x, c, rng):
    """Blur, shuffle pixels locally, blur again. As in the reference, skimage's gaussian is called
    with multichannel=True on a 2-D image, so both blurs run along columns (axis 0) only."""
    _, _, filters, _, _ = _skimage()
    sigma, delta, iterations = c
    x = np.uint8(filters.gaussian(x, sigma=sigma, channel_axis=-1) * 255).tolist()
    span = range(SIZE - delta, delta, -1)
    # the reference's draws, made up front: a fair coin per visited pixel, and its (dx, dy)
    swap = rng.random((iterations, len(span), len(span))) < 0.5
    shift = rng.integers(-delta, delta, size=(iterations, len(span), len(span), 2)).tolist()
    for it in range(iterations):
        for i, h in enumerate(span):
            for j, w in enumerate(span):
                if swap[it, i, j]:  # pixels swapped in the reference's order: later swaps see earlier ones
                    dx, dy = shift[it][i][j]
                    hp, wp = h + dy, w + dx
                    x[h][w], x[hp][wp] = x[hp][wp], x[h][w]
    x = np.array(x, dtype=np.uint8)
    return np.clip(filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1)


def motion_blur(x, c, rng):
    radius, sigma = c
    grey8 = np.round(x * 255).astype(np.uint8)  # the reference blurs a PNG of the 8-bit image
    return imagemagick_motion_blur(grey8, radius, sigma, rng.uniform(-45, 45)) / 255.0


def shear(x, c, rng):
    _, _, _, transform, _ = _skimage()
    aff = transform.AffineTransform(matrix=shear_matrix(c * _sign(rng)))
    return np.clip(transform.warp(x, inverse_map=aff), 0, 1)


def scale(x, c, rng):
    return _affine(x, scale=(c, c))


def rotate(x, c, rng):
    return _affine(x, rotation=c * _sign(rng))


def brightness(x, c, rng):
    color, _, _, _, _ = _skimage()
    hsv = color.rgb2hsv(color.gray2rgb(x))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(color.rgb2gray(color.hsv2rgb(hsv)), 0, 1)


def translate(x, c, rng):
    _, _, _, transform, _ = _skimage()
    bit = rng.choice([-1, 1], 2)
    aff = transform.AffineTransform(translation=[c * bit[0], c * bit[1]])
    return np.clip(transform.warp(x, inverse_map=aff), 0, 1)


def stripe(x, c, rng):
    x = x.copy()
    x[:, :7] = 1 - x[:, :7]
    x[:, 21:] = 1 - x[:, 21:]
    return x


def fog(x, c, rng):
    strength, decay = c
    max_val = x.max()
    x = x + strength * plasma_fractal(rng, wibbledecay=decay)[:SIZE, :SIZE]
    return np.clip(x * max_val / (max_val + strength), 0, 1)


def spatter(x, c, rng):
    """Mud spatter (the reference draws mud at every level; its water branch is not in the code)."""
    _, _, filters, _, _ = _skimage()
    loc, scale_, sigma, threshold, sigma_mask, _ = c
    liquid = filters.gaussian(rng.normal(size=x.shape, loc=loc, scale=scale_), sigma=sigma)
    liquid[liquid < threshold] = 0
    m = filters.gaussian(np.where(liquid > threshold, 1, 0).astype(np.float32), sigma=sigma_mask)
    m[m < 0.8] = 0
    return np.clip(x * (1 - m) + 63 / 255.0 * m, 0, 1)


def dotted_line(x, c, rng):
    r0, r1 = rng.integers(low=0, high=27, size=2)
    corruption = line_from_points(0, r0, 27, r1)
    idx = np.arange(0, 30, 2)
    off = True
    for i in range(1, len(idx)):
        if off:
            corruption[:, idx[i - 1] : idx[i]] = 0
        off = not off
    return np.clip(x + corruption, 0, 1)


def zigzag(x, c, rng):
    a = b = 2.0  # length and width of the zigzags
    c0, c1 = 2, 25
    r0 = int(rng.integers(low=0, high=27))
    r1 = r0 + int(rng.integers(low=-5, high=5))
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    endpoints = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        endpoints.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        endpoints.append((d, r_i / (2 * (d - max_c))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot.dot(np.array(endpoints).T)
    cs, rs = cs + c0, rs + r0
    for i in range(1, len(cs)):
        x = np.clip(x + line_from_points(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
    return x


def canny_edges(x, c, rng):
    _, feature, _, _, _ = _skimage()
    return feature.canny(x).astype(np.float64)


@dataclass(frozen=True)
class Corruption:
    apply: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]
    levels: tuple  # the parameter of severity 1, 2, ... (one entry: no severity)
    mnist_c_level: int  # the severity MNIST-C's dataset uses


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": Corruption(shot_noise, (60, 25, 12, 5, 3), 5),
    "impulse_noise": Corruption(impulse_noise, (0.03, 0.06, 0.09, 0.17, 0.27), 4),
    "glass_blur": Corruption(glass_blur, ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), 1),
    "motion_blur": Corruption(motion_blur, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), 1),
    "shear": Corruption(shear, (0.2, 0.4, 0.6, 0.8, 1.0), 2),
    "scale": Corruption(scale, tuple(1 / s for s in (0.9, 0.8, 0.7, 0.6, 0.5)), 3),
    "rotate": Corruption(rotate, (0.2, 0.4, 0.6, 0.8, 1.0), 2),
    "brightness": Corruption(brightness, (0.1, 0.2, 0.3, 0.4, 0.5), 5),
    "translate": Corruption(translate, (1, 2, 3, 4, 5), 3),
    "stripe": Corruption(stripe, (None,), 1),
    "fog": Corruption(fog, ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)), 5),
    "spatter": Corruption(
        spatter,
        (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
        4,
    ),
    "dotted_line": Corruption(dotted_line, (None,), 1),
    "zigzag": Corruption(zigzag, (None,), 1),
    "canny_edges": Corruption(canny_edges, (None,), 1),
}
MNIST_C_LEVEL = {name: c.mnist_c_level for name, c in CORRUPTIONS.items()}


def check_corruption(name: str, level: float) -> None:
    """One line naming what is wrong with a configured corruption level."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    n = len(CORRUPTIONS[name].levels)
    if level != int(level) or not 1 <= level <= n:
        raise ConfigError(f"corruption {name}: level {level} is not one of MNIST-C's severities {list(range(1, n + 1))}")


def image_rng(seed: int, name: str, level: int, index: int) -> np.random.Generator:
    """The generator of one image of one corruption: independent of batches and of other images."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), level, index])


def corrupt(pixels: torch.Tensor, name: str, level: int, seed: int, first_index: int = 0) -> torch.Tensor:
    """MNIST-C corruption `name` at severity `level` of images (N, 1, 28, 28) in [0, 1]; image i
    uses the generator of index first_index + i."""
    check_corruption(name, level)
    if tuple(pixels.shape[1:]) != (1, SIZE, SIZE):
        raise ConfigError(f"MNIST-C corruptions need 28x28 grey images, not {tuple(pixels.shape[1:])}; set robustness.corruptions={{}}")
    spec = CORRUPTIONS[name]
    param = spec.levels[int(level) - 1]
    # the reference corrupts 8-bit images: pixels a float round trip left a hair off k/255 are put
    # back on the grid (glass blur's 8-bit truncation would otherwise flip on some of them)
    images = np.round(pixels.detach().cpu().double().numpy()[:, 0] * 255) / 255
    out = np.stack([spec.apply(img, param, image_rng(seed, name, int(level), first_index + i)) for i, img in enumerate(images)])
    return torch.from_numpy(out).to(pixels.dtype)[:, None].to(pixels.device)
