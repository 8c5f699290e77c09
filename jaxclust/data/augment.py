"""On-device image augmentations in pure JAX (jitted, vmapped over the batch; dm-pix for the pixel ops).

The same semantics as the host-side tf.data versions in :mod:`jaxclust.data.augment_tf`, for
accelerators whose host cannot keep up, or where TensorFlow is absent. Images are float32 in
[0, 1], ``[B, H, W, C]`` with C = 1 or 3; every function takes an explicit ``rng`` and returns
images of a static shape. Colour operations apply to 3-channel images and are skipped for 1.

- :func:`simclr_view`: SimCLR's augmentation (Chen et al. 2020, appendix A): random resized crop
  (scale 0.08-1, or SCAN's 0.2-1 for CIFAR), horizontal flip, colour jitter with probability 0.8
  (brightness, contrast, saturation 0.4 each, hue 0.1), grayscale with probability 0.2, optional
  Gaussian blur (ImageNet: probability 0.5, sigma 0.1-2.0) and solarization.
- :func:`strong_view`: SCAN's self-labeling augmentation, RandAugment-style (n random ops of
  random magnitude) followed by Cutout.
"""

from __future__ import annotations

import functools
import math

import dm_pix as pix
import jax
import jax.numpy as jnp


def random_resized_crop(rng, image, size: tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """A crop of random area (``scale`` of the image) and aspect ratio, resized bilinearly to ``size``.

  Area and log-ratio are drawn uniformly as in torchvision's RandomResizedCrop; a box that does
  not fit is clipped to the image.
  """
  h, w = image.shape[:2]
  k_area, k_ratio, k_y, k_x = jax.random.split(rng, 4)
  area = h * w * jax.random.uniform(k_area, minval=scale[0], maxval=scale[1])
  log_ratio = jax.random.uniform(k_ratio, minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  aspect = jnp.exp(log_ratio)
  crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, w)
  crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, h)
  y0 = jax.random.uniform(k_y) * (h - crop_h)
  x0 = jax.random.uniform(k_x) * (w - crop_w)
  out_h, out_w = size
  scale_yx = jnp.array([out_h / crop_h, out_w / crop_w])
  translation = -jnp.array([y0, x0]) * scale_yx
  # The resize is an einsum with two interpolation matrices. scale_and_translate asks for HIGHEST precision
  # (full fp32 on GPUs, several passes on TPUs); DEFAULT lets an accelerator use its fast matmul mode, which
  # is ample for augmentation. On the CPU both are fp32.
  return jax.image.scale_and_translate(image, (out_h, out_w, image.shape[2]), (0, 1), scale_yx, translation,
                                       method="linear", antialias=True, precision=jax.lax.Precision.DEFAULT)


def color_jitter(rng, image, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
  """SimCLR's colour distortion (fixed order: brightness, contrast, saturation, hue)."""
  kb, kc, ks, kh = jax.random.split(rng, 4)
  image = pix.adjust_brightness(image, jax.random.uniform(kb, minval=-brightness, maxval=brightness))
  image = pix.adjust_contrast(image, jax.random.uniform(kc, minval=1 - contrast, maxval=1 + contrast))
  if image.shape[-1] == 3:
    image = pix.adjust_saturation(image, jax.random.uniform(ks, minval=1 - saturation, maxval=1 + saturation))
    image = pix.adjust_hue(image, jax.random.uniform(kh, minval=-hue, maxval=hue))
  return jnp.clip(image, 0.0, 1.0)


def _maybe(rng, p, fn, image):
  return jnp.where(jax.random.uniform(rng) < p, fn(image), image)


def gaussian_blur(rng, image, sigma=(0.1, 2.0)):
  """Blur with sigma drawn uniformly; kernel size about a tenth of the image, as in SimCLR."""
  kernel = max(3, (image.shape[0] // 10) | 1)
  return pix.gaussian_blur(image, jax.random.uniform(rng, minval=sigma[0], maxval=sigma[1]), kernel)


def simclr_view(rng, image, *, size: tuple[int, int], scale=(0.08, 1.0), jitter_p: float = 0.8,
                strength: float = 1.0, grayscale_p: float = 0.2, blur_p: float = 0.0, solarize_p: float = 0.0,
                flip_p: float = 0.5):
  """One SimCLR view of one ``[H, W, C]`` image (vmap it, or use :func:`batch`).

  ``flip_p`` is the probability of a horizontal flip (0 for digits and text, whose mirror images
  are other symbols or none).
  """
  keys = jax.random.split(rng, 8)
  image = random_resized_crop(keys[0], image, size, scale)
  image = _maybe(keys[1], flip_p, pix.flip_left_right, image)
  jitter = functools.partial(color_jitter, keys[2], brightness=0.8 * strength, contrast=0.8 * strength,
                             saturation=0.8 * strength, hue=0.2 * strength)
  image = _maybe(keys[3], jitter_p, jitter, image)
  if image.shape[-1] == 3:
    image = _maybe(keys[4], grayscale_p, lambda im: jnp.broadcast_to(pix.rgb_to_grayscale(im), im.shape), image)
  if blur_p > 0:
    image = _maybe(keys[5], blur_p, functools.partial(gaussian_blur, keys[6]), image)
  if solarize_p > 0:
    image = _maybe(keys[7], solarize_p, lambda im: pix.solarize(im, 0.5), image)
  return jnp.clip(image, 0.0, 1.0)


def cutout(rng, image, size: int):
  """Zeroes a ``size x size`` square centred at a uniform position (clipped at the borders), as the
  Cutout paper's and SCAN's: rows ``cy - size // 2`` up to, not including, ``cy - size // 2 + size``."""
  h, w = image.shape[:2]
  ky, kx = jax.random.split(rng)
  top = jax.random.randint(ky, (), 0, h) - size // 2
  left = jax.random.randint(kx, (), 0, w) - size // 2
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  hole = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
  return jnp.where(hole[..., None], 0.0, image)


def _affine(image, matrix):
  """Applies a 2x2 linear map about the image centre (bilinear, zero fill)."""
  h, w = image.shape[:2]
  centre = jnp.array([(h - 1) / 2, (w - 1) / 2])
  # Homogeneous coordinates over (y, x, channel): the channel axis maps to itself.
  full = jnp.eye(4).at[:2, :2].set(matrix).at[:2, 3].set(centre - matrix @ centre)
  return pix.affine_transform(image, full, order=1, mode="constant")


def _rand_ops(image, m):
  """RandAugment-style operations; ``m`` in [0, 1] is the magnitude."""
  h, w = image.shape[:2]
  angle = m * math.pi / 6  # up to 30 degrees
  rot = jnp.array([[jnp.cos(angle), -jnp.sin(angle)], [jnp.sin(angle), jnp.cos(angle)]])
  mean = jnp.mean(image)
  return [
      lambda im: im,  # identity
      lambda im: (im - im.min()) / jnp.maximum(im.max() - im.min(), 1e-6),  # autocontrast
      lambda im: _affine(im, rot),  # rotate
      lambda im: pix.solarize(im, 1.0 - m),  # solarize
      lambda im: jnp.floor(im * 2 ** jnp.round(8 - 4 * m)) / 2 ** jnp.round(8 - 4 * m),  # posterize
      lambda im: jnp.clip(mean + (im - mean) * (1 + m), 0, 1),  # contrast
      lambda im: jnp.clip(im * (1 + m), 0, 1),  # brightness
      lambda im: _affine(im, jnp.array([[1.0, 0.3 * m], [0.0, 1.0]])),  # shear x
      lambda im: _affine(im, jnp.array([[1.0, 0.0], [0.3 * m, 1.0]])),  # shear y
      lambda im: jnp.roll(im, jnp.round(0.3 * m * w).astype(jnp.int32), axis=1),  # translate x
      lambda im: jnp.roll(im, jnp.round(0.3 * m * h).astype(jnp.int32), axis=0),  # translate y
  ]


N_RAND_OPS = 11


def strong_view(rng, image, *, size: tuple[int, int], n_ops: int = 4, cutout_size: int | None = None,
                scale=None, flip_p: float = 0.5):
  """SCAN's strong augmentation ("ours" in the official code): flip, ``n_ops`` random ops of random
  magnitude, Cutout.

  The official view crops nothing (a random crop of the image's own size); ``scale`` adds a random
  resized crop of that area range, and without it the image must already be ``size``.
  ``cutout_size`` defaults to half the image side (SCAN: 16 of 32 pixels on CIFAR); 0 turns Cutout off.
  """
  keys = jax.random.split(rng, 2 * n_ops + 3)
  if scale is not None:
    image = random_resized_crop(keys[0], image, size, scale)
  elif tuple(image.shape[:2]) != tuple(size):
    raise ValueError(f"strong_view without scale keeps the image size {image.shape[:2]}, which is not size={size}")
  image = _maybe(keys[1], flip_p, pix.flip_left_right, image)
  for i in range(n_ops):
    op = jax.random.randint(keys[2 + 2 * i], (), 0, N_RAND_OPS)
    magnitude = jax.random.uniform(keys[3 + 2 * i])
    image = jax.lax.switch(op, _rand_ops(image, magnitude), image)
  cutout_size = size[0] // 2 if cutout_size is None else cutout_size
  image = jnp.clip(image, 0.0, 1.0)
  return cutout(keys[-1], image, cutout_size) if cutout_size else image


def batch(view, **options):
  """``view(rng, image, **options)`` lifted to ``(rng, images [B, H, W, C]) -> [B, ...]``, one key per image."""

  def apply(rng, images):
    if jnp.issubdtype(images.dtype, jnp.integer):  # uint8 pixels
      images = images.astype(jnp.float32) / 255.0
    images = images.astype(jnp.float32)
    return jax.vmap(functools.partial(view, **options))(jax.random.split(rng, images.shape[0]), images)

  return apply


def multi_crop(rng, images, *, crops: tuple = ((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14))), **options):
  """SwAV's multi-crop: for each ``(count, size, scale)``, ``count`` SimCLR views of ``size x size``.

  Returns a list of ``[B, size, size, C]`` arrays, large crops first (static shapes and counts).
  ``options`` go to :func:`simclr_view` (e.g. ``blur_p``, ``solarize_p``).
  """
  views = []
  for g, (count, size, scale) in enumerate(crops):
    view = batch(simclr_view, size=(size, size), scale=tuple(scale), **options)
    # One call per crop. Batching a size's crops in one vmap (commit 2e899ae) gave the same values; on the
    # 2-core CPU it ran the ImageNet crops 1.08x slower (compiling 0.7x as long) and the digit crops 0.81x
    # (compiling 1.6x as long): no clear gain (experiments/RESULTS.md, 2026-12-03). On GPUs it is timed
    # by experiments/bench_multi_crop.py (gpu_bench.sh crops) and not measured yet.
    views += [view(jax.random.fold_in(rng, 100 * g + c), images) for c in range(count)]
  return views
