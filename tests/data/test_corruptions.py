"""The MNIST-C corruptions (nin_cli/data/corruptions.py): seeded per image, independent of the batch,
growing with severity, on the 8-bit grid, and equal to the references that made the published data."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from harness import QUICK, make_cfg
from omegaconf import OmegaConf

from nin_cli.data.corruptions import CORRUPTIONS, corrupt, imagemagick_motion_blur
from nin_cli.data.datasets import load_dataset
from nin_cli.robustness.evaluate import PixelSpace

needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs the robustness extra (scikit-image)")


@pytest.fixture(scope="module")
def pixels():
    data = load_dataset(make_cfg(*QUICK).dataset)
    return PixelSpace(data).to_pixels(data.test.x)  # the 1000 test images of the embedded slice


@needs_skimage
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_mnist_c_corruptions_are_seeded_per_image_and_grow_with_severity(pixels, name):
    x = pixels[:64]
    spec = CORRUPTIONS[name]
    top = len(spec.levels)
    out = corrupt(x, name, top, seed=3)
    assert torch.equal(out, corrupt(x, name, top, seed=3)) and out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # image i's randomness is its own: a later slice, told where it starts, gives the same images
    assert torch.equal(out[40:], corrupt(x[40:], name, top, seed=3, first_index=40))
    distortion = [float((corrupt(x, name, level, seed=3) - x).abs().mean()) for level in range(1, top + 1)]
    assert distortion[0] > 0.002
    assert distortion[-1] > distortion[0] or top == 1


@needs_skimage
@needs_skimage
def test_a_corrupted_image_does_not_depend_on_the_batch_it_is_corrupted_in():
    """Each image draws from its own generator (seed, corruption, level, index): corrupting the
    test images in two batches, split anywhere, gives exactly the images of one call over all."""
    images = load_dataset(OmegaConf.create({"name": "fashion_mnist_mini", "split": "standard", "train_size": None, "test_size": 24}))
    pixels = (images.test.x * images.std + images.mean).clamp(0, 1)
    for name in CORRUPTIONS:
        whole = corrupt(pixels, name, 1, seed=3)
        parts = torch.cat([corrupt(pixels[:10], name, 1, seed=3), corrupt(pixels[10:], name, 1, seed=3, first_index=10)])
        assert torch.equal(whole, parts), name
        if name in ("shot_noise", "impulse_noise", "spatter"):  # random per image: another split point differs from a reused draw
            assert not torch.equal(corrupt(pixels[10:], name, 1, seed=3), whole[10:]), name


def _imagemagick():
    try:
        from wand.api import library
        from wand.image import Image as WandImage
    except ImportError:  # Wand, or ImageMagick's MagickWand library, is not installed
        return None
    return library, WandImage


def test_motion_blur_equals_imagemagick(pixels):
    """The NumPy port of MotionBlurImage against ImageMagick through Wand, as MNIST-C calls it:
    an 8-bit PNG in, every level's (radius, sigma), random angles; the same grey levels out."""
    import ctypes
    import io

    import numpy as np
    from PIL import Image

    found = _imagemagick()  # asked here, not at collection: importing Wand takes a second
    if found is None:
        pytest.skip("needs Wand and ImageMagick (apt-get install libmagickwand-6.q16-6)")
    library, wand_image = found
    library.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)
    rng = np.random.default_rng(0)
    grey = (pixels[:40, 0].numpy() * 255).round().astype(np.uint8)
    for img in grey:
        for radius, sigma in CORRUPTIONS["motion_blur"].levels:
            angle = float(rng.uniform(-45, 45))
            png = io.BytesIO()
            Image.fromarray(img).save(png, format="PNG")
            with wand_image(blob=png.getvalue()) as wand:
                library.MagickMotionBlurImage(wand.wand, radius, sigma, angle)
                reference = np.array(Image.open(io.BytesIO(wand.make_blob("png"))))
            assert np.array_equal(imagemagick_motion_blur(img, radius, sigma, angle), reference)


@needs_skimage
@pytest.mark.parametrize("c", [0.2, -0.6, 1.0])
def test_shear_is_the_2019_datasets_matrix_whatever_the_scikit_image(c):
    """MNIST-C's shear, checked against a hand-built warp: output pixel (row, col) reads the input
    at (x, y) = (col - sin(c) (row - 13.5), 13.5 + cos(c) (row - 13.5)), bilinear, zero outside the
    image and blended with it at the edge (scipy's grid-constant mode, as scikit-image's warp);
    scikit-image < 0.21's AffineTransform(shear=c), which made the published data."""
    from scipy.ndimage import map_coordinates

    from nin_cli.data.corruptions import shear

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(28, 28)) / 255.0
    sign = int(np.random.default_rng(5).choice([-1, 1], 1)[0])  # the corruption's own draw of the direction
    got = shear(image, c, np.random.default_rng(5))
    rows, cols = np.mgrid[0:28, 0:28].astype(float)
    angle = c * sign
    x = cols - math.sin(angle) * rows + 13.5 * math.sin(angle)
    y = math.cos(angle) * rows + 13.5 * (1 - math.cos(angle))
    expected = np.clip(map_coordinates(image, [y, x], order=1, mode="grid-constant", cval=0.0), 0, 1)
    assert np.abs(got - expected).max() < 1e-9


@needs_skimage
def test_corruptions_see_pixels_on_the_8_bit_grid():
    """Standardizing and back leaves pixels a hair off k/255; the corruptions get k/255 exactly."""
    image = torch.arange(784, dtype=torch.float64).reshape(1, 1, 28, 28) % 256 / 255
    nudged = (image + 4e-8 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).float()
    for name in ("glass_blur", "brightness", "stripe"):
        assert torch.equal(corrupt(nudged, name, 1, seed=0), corrupt(image.float(), name, 1, seed=0)), name
