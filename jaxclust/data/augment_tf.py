"""Host-side tf.data versions of :mod:`jaxclust.data.augment`, with the same semantics.

For input pipelines that augment on the CPU while the accelerator trains. Images are float32 in
[0, 1], ``[H, W, C]``; every function takes a stateless ``seed`` (an int32/int64 pair), so a view
is a pure function of (image, seed), as on device. Use them in ``dataset.map``; derive per-element
seeds with ``tf.random.experimental.stateless_split`` or from the element index. TensorFlow is
imported through :func:`jaxclust.data.pipeline.tensorflow` (lazily, GPUs hidden).
"""

from __future__ import annotations

import math

from jaxclust.data.pipeline import tensorflow


def _seeds(seed, n):
  tf = tensorflow()
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def random_resized_crop(image, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Area fraction and log aspect ratio uniform, box clipped to the image, bilinear resize."""
  tf = tensorflow()
  s = _seeds(seed, 4)
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  area = h * w * tf.random.stateless_uniform([], s[0], scale[0], scale[1])
  aspect = tf.exp(tf.random.stateless_uniform([], s[1], math.log(ratio[0]), math.log(ratio[1])))
  crop_w = tf.clip_by_value(tf.sqrt(area * aspect), 1.0, w)
  crop_h = tf.clip_by_value(tf.sqrt(area / aspect), 1.0, h)
  y0 = tf.random.stateless_uniform([], s[2]) * (h - crop_h)
  x0 = tf.random.stateless_uniform([], s[3]) * (w - crop_w)
  # crop_and_resize samples at box corners on a (H-1, W-1) grid; the output's pixel centres sit half
  # an output pixel inside the box, which for an enlarged crop at the border is up to half an input
  # pixel outside the image. One replicated border pixel (as the device resize clamps) keeps those
  # samples off crop_and_resize's zero extrapolation; coordinates shift by one on an (H+1, W+1) grid.
  padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
  box = tf.stack([(y0 + 0.5 * crop_h / size[0] + 0.5) / (h + 1), (x0 + 0.5 * crop_w / size[1] + 0.5) / (w + 1),
                  (y0 + crop_h - 0.5 * crop_h / size[0] + 0.5) / (h + 1),
                  (x0 + crop_w - 0.5 * crop_w / size[1] + 0.5) / (w + 1)])
  return tf.image.crop_and_resize(padded[None], box[None], [0], size, method="bilinear")[0]


def _maybe(seed, p, fn, image):
  tf = tensorflow()
  return tf.cond(tf.random.stateless_uniform([], seed) < p, lambda: fn(image), lambda: image)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
  tf = tensorflow()
  s = _seeds(seed, 4)
  image = image + tf.random.stateless_uniform([], s[0], -brightness, brightness)
  mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)  # per channel, as dm-pix
  image = mean + (image - mean) * tf.random.stateless_uniform([], s[1], 1 - contrast, 1 + contrast)
  if image.shape[-1] == 3:
    image = tf.image.adjust_saturation(image, tf.random.stateless_uniform([], s[2], 1 - saturation, 1 + saturation))
    image = tf.image.adjust_hue(image, tf.random.stateless_uniform([], s[3], -hue, hue))
  return tf.clip_by_value(image, 0.0, 1.0)


def gaussian_blur(image, seed, sigma=(0.1, 2.0)):
  """Separable Gaussian blur, sigma uniform, kernel about a tenth of the image, zero padding (as dm-pix)."""
  tf = tensorflow()
  radius = max(3, (image.shape[0] // 10) | 1) // 2
  s = tf.random.stateless_uniform([], seed, sigma[0], sigma[1])
  taps = tf.exp(-tf.range(-radius, radius + 1, dtype=tf.float32) ** 2 / (2.0 * s ** 2))
  taps = taps / tf.reduce_sum(taps)
  channels = image.shape[-1]
  vertical = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])
  horizontal = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), [1, 1, channels, 1])
  out = tf.nn.depthwise_conv2d(image[None], horizontal, [1, 1, 1, 1], "SAME")
  return tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "SAME")[0]


def simclr_view(image, seed, *, size, scale=(0.08, 1.0), jitter_p=0.8, strength=1.0, grayscale_p=0.2,
                blur_p=0.0, solarize_p=0.0, flip_p=0.5):
  """One SimCLR view (see :func:`jaxclust.data.augment.simclr_view`)."""
  tf = tensorflow()
  s = _seeds(seed, 8)
  image = random_resized_crop(image, s[0], size, scale)
  image = _maybe(s[1], flip_p, tf.image.flip_left_right, image)
  image = _maybe(s[2], jitter_p, lambda im: color_jitter(im, s[3], 0.8 * strength, 0.8 * strength, 0.8 * strength,
                                                         0.2 * strength), image)
  if image.shape[-1] == 3:
    image = _maybe(s[4], grayscale_p, lambda im: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(im)), image)
  if blur_p > 0:
    image = _maybe(s[5], blur_p, lambda im: gaussian_blur(im, s[6]), image)
  if solarize_p > 0:
    image = _maybe(s[7], solarize_p, lambda im: tf.where(im < 0.5, im, 1.0 - im), image)
  return tf.clip_by_value(image, 0.0, 1.0)


def cutout(image, seed, size: int):
  """Zeroes a ``size x size`` square centred at a uniform position (clipped at the borders), as
  :func:`jaxclust.data.augment.cutout`."""
  tf = tensorflow()
  h, w = image.shape[0], image.shape[1]
  s = _seeds(seed, 2)
  top = tf.random.stateless_uniform([], s[0], 0, h, dtype=tf.int32) - size // 2
  left = tf.random.stateless_uniform([], s[1], 0, w, dtype=tf.int32) - size // 2
  ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
  hole = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
  return tf.where(hole[..., None], 0.0, image)


def _affine(image, matrix):
  """A 2x2 linear map of (row, column) about the image centre, bilinear, zero fill (as the device version).

  An output pixel ``o`` reads the input at ``matrix @ (o - centre) + centre``; TensorFlow's projective
  transform takes the same map in (column, row) order.
  """
  tf = tensorflow()
  h, w = image.shape[0], image.shape[1]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  (m00, m01), (m10, m11) = matrix
  transform = tf.cast(tf.stack([m11, m10, cx - m11 * cx - m10 * cy, m01, m00, cy - m01 * cx - m00 * cy, 0.0, 0.0]),
                      tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=transform[None], output_shape=[h, w],
                                              fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
  # Like the device version (jax's map_coordinates, mode "constant"), a pixel whose source lies
  # outside the image is the fill value, not a blend with it.
  y, x = tf.meshgrid(tf.range(h, dtype=tf.float32) - cy, tf.range(w, dtype=tf.float32) - cx, indexing="ij")
  source_y = transform[4] * y + transform[3] * x + cy
  source_x = transform[0] * x + transform[1] * y + cx
  inside = (source_y >= 0) & (source_y <= h - 1) & (source_x >= 0) & (source_x <= w - 1)
  return tf.where(inside[..., None], out, 0.0)


def _rand_ops(image, m):
  """The RandAugment-style operations of :func:`jaxclust.data.augment._rand_ops`, in the same order."""
  tf = tensorflow()
  h, w = image.shape[0], image.shape[1]
  angle = m * math.pi / 6
  rotation = ((tf.cos(angle), -tf.sin(angle)), (tf.sin(angle), tf.cos(angle)))
  mean = tf.reduce_mean(image)
  levels = 2.0 ** tf.round(8.0 - 4.0 * m)
  low, high = tf.reduce_min(image), tf.reduce_max(image)
  return [
      lambda: image,  # identity
      lambda: (image - low) / tf.maximum(high - low, 1e-6),  # autocontrast
      lambda: _affine(image, rotation),  # rotate
      lambda: tf.where(image < 1.0 - m, image, 1.0 - image),  # solarize
      lambda: tf.floor(image * levels) / levels,  # posterize
      lambda: tf.clip_by_value(mean + (image - mean) * (1.0 + m), 0.0, 1.0),  # contrast
      lambda: tf.clip_by_value(image * (1.0 + m), 0.0, 1.0),  # brightness
      lambda: _affine(image, ((1.0, 0.3 * m), (0.0, 1.0))),  # shear x
      lambda: _affine(image, ((1.0, 0.0), (0.3 * m, 1.0))),  # shear y
      lambda: tf.roll(image, tf.cast(tf.round(0.3 * m * w), tf.int32), axis=1),  # translate x
      lambda: tf.roll(image, tf.cast(tf.round(0.3 * m * h), tf.int32), axis=0),  # translate y
  ]


def strong_view(image, seed, *, size, n_ops=4, cutout_size=None, scale=None, flip_p=0.5):
  """SCAN's strong augmentation (see :func:`jaxclust.data.augment.strong_view`): flip (after a random
  resized crop when ``scale`` is given), ``n_ops`` random ops of random magnitude (only the drawn op
  runs, unlike under ``vmap``), Cutout (none when ``cutout_size`` is 0)."""
  tf = tensorflow()
  s = _seeds(seed, 2 * n_ops + 3)
  if scale is not None:
    image = random_resized_crop(image, s[0], size, scale)
  elif tuple(image.shape[:2]) != tuple(size):
    raise ValueError(f"strong_view without scale keeps the image size {tuple(image.shape[:2])}, which is not "
                     f"size={size}")
  image = _maybe(s[1], flip_p, tf.image.flip_left_right, image)
  for i in range(n_ops):
    ops = _rand_ops(image, tf.random.stateless_uniform([], s[3 + 2 * i]))
    op = tf.random.stateless_uniform([], s[2 + 2 * i], 0, len(ops), dtype=tf.int32)
    image = tf.ensure_shape(tf.switch_case(op, ops), image.shape)
  cutout_size = size[0] // 2 if cutout_size is None else cutout_size
  image = tf.clip_by_value(image, 0.0, 1.0)
  return cutout(image, s[-1], cutout_size) if cutout_size else image


def multi_crop(image, seed, *, crops=((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14))), **options):
  """SwAV's multi-crop of one image: a tuple of views, ``count`` of ``size x size`` per ``(count, size,
  scale)``, large crops first (see :func:`jaxclust.data.augment.multi_crop`)."""
  total = sum(int(count) for count, _, _ in crops)
  s = _seeds(seed, total)
  views, i = [], 0
  for count, size, scale in crops:
    for _ in range(int(count)):
      views.append(simclr_view(image, s[i], size=(int(size), int(size)), scale=tuple(scale), **options))
      i += 1
  return tuple(views)
