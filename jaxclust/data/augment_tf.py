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
  # crop_and_resize samples at box corners on a (H-1, W-1) grid; pixel centres of the box:
  box = tf.stack([(y0 + 0.5 * crop_h / size[0] - 0.5) / (h - 1), (x0 + 0.5 * crop_w / size[1] - 0.5) / (w - 1),
                  (y0 + crop_h - 0.5 * crop_h / size[0] - 0.5) / (h - 1),
                  (x0 + crop_w - 0.5 * crop_w / size[1] - 0.5) / (w - 1)])
  return tf.image.crop_and_resize(image[None], box[None], [0], size, method="bilinear")[0]


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


def simclr_view(image, seed, *, size, scale=(0.08, 1.0), jitter_p=0.8, strength=1.0, grayscale_p=0.2,
                solarize_p=0.0, flip_p=0.5):
  """One SimCLR view (see :func:`jaxclust.data.augment.simclr_view`; blur is device-side only)."""
  tf = tensorflow()
  s = _seeds(seed, 6)
  image = random_resized_crop(image, s[0], size, scale)
  image = _maybe(s[1], flip_p, tf.image.flip_left_right, image)
  image = _maybe(s[2], jitter_p, lambda im: color_jitter(im, s[3], 0.8 * strength, 0.8 * strength, 0.8 * strength,
                                                         0.2 * strength), image)
  if image.shape[-1] == 3:
    image = _maybe(s[4], grayscale_p, lambda im: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(im)), image)
  if solarize_p > 0:
    image = _maybe(s[5], solarize_p, lambda im: tf.where(im < 0.5, im, 1.0 - im), image)
  return tf.clip_by_value(image, 0.0, 1.0)
