"""Augmentations: shapes, ranges, determinism; the JAX and tf.data versions agree in distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclust.data import augment


def gradient_image():
  rng = np.random.default_rng(0)
  image = np.linspace(0, 1, 32)[None, :, None] * np.ones((32, 32, 3)) + 0.1 * rng.normal(size=(32, 32, 3))
  image[:, :, 0] *= np.linspace(0, 1, 32)[:, None]
  return np.clip(image, 0, 1).astype(np.float32)


@pytest.mark.parametrize("view, options", [
    (augment.simclr_view, {"size": (24, 24), "scale": (0.2, 1.0), "blur_p": 0.5, "solarize_p": 0.2}),
    (augment.strong_view, {"size": (32, 32)}),
])
def test_device_views_are_deterministic_and_in_range(view, options):
  images = jax.random.uniform(jax.random.key(0), (6, 32, 32, 3))
  fn = jax.jit(augment.batch(view, **options))
  a, b, c = fn(jax.random.key(1), images), fn(jax.random.key(1), images), fn(jax.random.key(2), images)
  assert a.shape == (6, *options["size"], 3) and a.dtype == jnp.float32
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a[0], a[1])  # one key per image
  gray = fn(jax.random.key(1), (images[..., :1] * 255).astype(jnp.uint8))  # uint8, one channel
  assert gray.shape == (6, *options["size"], 1) and float(gray.max()) <= 1.0


def test_full_crop_is_the_identity_in_both_implementations():
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  image = gradient_image()
  same = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_allclose(augment.random_resized_crop(jax.random.key(0), image, (32, 32), **same), image, atol=1e-6)
  crop = augment_tf.random_resized_crop(tensorflow().constant(image), tensorflow().constant([1, 2]), (32, 32), **same)
  np.testing.assert_allclose(crop.numpy(), image, atol=1e-5)  # box corners rounded in float32


def test_flip_probability_is_honoured_in_both_implementations():
  """Same key, flip_p 0 vs 1: the same view, mirrored (the other ops commute with a mirror)."""
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  image = gradient_image()
  options = dict(size=(24, 24), scale=(0.3, 1.0), jitter_p=0.0)
  views = {p: augment.simclr_view(jax.random.key(4), image, flip_p=p, **options) for p in (0.0, 1.0)}
  np.testing.assert_allclose(views[1.0], views[0.0][:, ::-1], atol=1e-5)
  assert not np.allclose(views[0.0], views[1.0], atol=1e-2)
  seed = tensorflow().constant([5, 6])
  host = {p: augment_tf.simclr_view(tensorflow().constant(image), seed, flip_p=p, **options).numpy() for p in (0.0, 1.0)}
  np.testing.assert_allclose(host[1.0], host[0.0][:, ::-1], atol=1e-5)
  assert not np.allclose(host[0.0], host[1.0], atol=1e-2)


def cutout_reference(h, w, cy, cx, size):
  """The Cutout paper's mask: rows and columns [c - size // 2, c - size // 2 + size), clipped."""
  mask = np.ones((h, w), bool)
  mask[max(cy - size // 2, 0):max(cy - size // 2 + size, 0), max(cx - size // 2, 0):max(cx - size // 2 + size, 0)] = False
  return mask


def hole_centre(rng, h, w):
  """The centre the device cutout draws from ``rng`` (same split and draws)."""
  ky, kx = jax.random.split(rng)
  return int(jax.random.randint(ky, (), 0, h)), int(jax.random.randint(kx, (), 0, w))


@pytest.mark.parametrize("size", [7, 8, 16])
def test_cutout_zeroes_a_size_by_size_square_as_the_paper(size):
  interior = 0
  for seed in range(40):
    rng = jax.random.key(seed)
    out = np.asarray(augment.cutout(rng, jnp.ones((28, 28, 1)), size))[..., 0]
    cy, cx = hole_centre(rng, 28, 28)
    np.testing.assert_array_equal(out == 1.0, cutout_reference(28, 28, cy, cx, size))
    interior += int((out == 0).sum() == size * size)
  assert interior > 0  # some holes lie inside the image and are exactly size x size


def test_strong_view_without_ops_and_cutout_is_the_clipped_image():
  image = np.random.default_rng(0).uniform(-0.2, 1.2, (28, 28, 1)).astype(np.float32)
  out = augment.strong_view(jax.random.key(0), image, size=(28, 28), n_ops=0, cutout_size=0, flip_p=0.0)
  np.testing.assert_array_equal(np.asarray(out), np.clip(image, 0.0, 1.0))
  holed = np.asarray(augment.strong_view(jax.random.key(0), image, size=(28, 28), n_ops=0, cutout_size=6, flip_p=0.0))
  assert 0 < np.sum(holed != np.clip(image, 0.0, 1.0)) <= 36


def test_device_and_tfdata_simclr_views_agree_in_distribution():
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  image, n = gradient_image(), 1000
  device = np.asarray(jax.jit(augment.batch(augment.simclr_view, size=(32, 32), scale=(0.2, 1.0)))(
      jax.random.key(0), np.repeat(image[None], n, 0)))
  host_views = tf.data.Dataset.range(n).map(lambda i: augment_tf.simclr_view(
      tf.constant(image), tf.stack([i, 7]), size=(32, 32), scale=(0.2, 1.0)))
  host = np.stack(list(host_views.as_numpy_iterator()))
  again = np.stack(list(host_views.take(3).as_numpy_iterator()))
  np.testing.assert_array_equal(again, host[:3])  # tf.data views are a function of (image, seed)
  stats = lambda v: np.array([v.mean(), v.std(), v.mean(axis=(1, 2, 3)).std(), v.std(axis=(1, 2, 3)).mean(),
                              v[:, :, :16].mean(), v[..., 0].mean()])
  # Measured when written: the largest gap was 0.009 (mean intensity 0.429 vs 0.436).
  np.testing.assert_allclose(stats(device), stats(host), atol=0.02)


def _host_views(fn, image, n, **options):
  """``n`` tf.data views of one image, element i seeded with (i, 7)."""
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  views = tf.data.Dataset.range(n).map(lambda i: fn(tf.constant(image), tf.stack([i, 7]), **options),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return views


def test_host_blur_and_affine_ops_equal_the_device_ops():
  """Fixed parameters: the tf.data blur, rotation and shears give the device versions' pixels."""
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  import dm_pix as pix
  tf = tensorflow()
  image = gradient_image()
  host = augment_tf.gaussian_blur(tf.constant(image), tf.constant([1, 2]), sigma=(1.3, 1.3)).numpy()
  np.testing.assert_allclose(host, pix.gaussian_blur(image, 1.3, 3), atol=1e-5)
  assert not np.allclose(host, image, atol=1e-2)
  angle = 0.4
  for matrix in (((np.cos(angle), -np.sin(angle)), (np.sin(angle), np.cos(angle))), ((1.0, 0.25), (0.0, 1.0)),
                 ((1.0, 0.0), (0.25, 1.0))):
    device = np.asarray(augment._affine(jnp.asarray(image), jnp.asarray(matrix, jnp.float32)))
    host = augment_tf._affine(tf.constant(image), tf.constant(matrix, tf.float32)).numpy()
    np.testing.assert_allclose(host, device, atol=1e-4)
    assert not np.allclose(host, image, atol=1e-2)


def test_host_rand_ops_equal_the_device_ops():
  """Each of the 11 RandAugment-style ops at magnitude 0.7 gives the same image in both implementations."""
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  image = gradient_image()
  device = augment._rand_ops(jnp.asarray(image), 0.7)
  host = augment_tf._rand_ops(tf.constant(image), tf.constant(0.7))
  assert len(device) == len(host) == augment.N_RAND_OPS
  for i, (d, h) in enumerate(zip(device, host)):
    np.testing.assert_allclose(h().numpy(), d(jnp.asarray(image)), atol=1e-4, err_msg=f"op {i}")


def test_blur_probability_is_honoured_in_both_implementations():
  """Same key, blur_p 0 vs 1: the same view, then blurred with the sigma of the view's blur key."""
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  image = gradient_image()
  options = dict(size=(24, 24), scale=(0.3, 1.0), jitter_p=0.0)  # jitter can turn a view black
  key = jax.random.key(4)
  plain, blurred = (augment.simclr_view(key, image, blur_p=p, **options) for p in (0.0, 1.0))
  np.testing.assert_allclose(blurred, augment.gaussian_blur(jax.random.split(key, 8)[6], plain), atol=1e-5)
  assert not np.allclose(blurred, plain, atol=1e-2)
  seed = tf.constant([5, 6])
  plain, blurred = (augment_tf.simclr_view(tf.constant(image), seed, blur_p=p, **options).numpy() for p in (0.0, 1.0))
  np.testing.assert_allclose(blurred, augment_tf.gaussian_blur(plain, augment_tf._seeds(seed, 8)[6]), atol=1e-5)
  assert not np.allclose(blurred, plain, atol=1e-2)


def test_host_cutout_zeroes_one_square():
  from jaxclust.data import augment_tf
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  interior = 0
  for seed in range(20):
    out = augment_tf.cutout(tf.ones((28, 28, 1)), tf.constant([seed, 4]), 8).numpy()[..., 0]
    rows, cols = np.nonzero(out == 0)
    top, left = rows.min(), cols.min()
    cy = top + 4 if top > 0 else rows.max() + 1 - 4  # the centre, from the side the border does not clip
    cx = left + 4 if left > 0 else cols.max() + 1 - 4
    np.testing.assert_array_equal(out == 1.0, cutout_reference(28, 28, cy, cx, 8))
    interior += int(len(rows) == 64)
  assert interior > 0


@pytest.mark.parametrize("view, options", [
    ("simclr_view", {"size": (24, 24), "scale": (0.2, 1.0), "blur_p": 0.5, "solarize_p": 0.2}),
    ("strong_view", {"size": (32, 32)}),
])
def test_device_and_tfdata_views_agree_in_distribution(view, options):
  """Blur, solarize and the strong view: the same summary statistics over 1000 views of one image."""
  from jaxclust.data import augment_tf
  image, n = gradient_image(), 1000
  device = np.asarray(jax.jit(augment.batch(getattr(augment, view), **options))(
      jax.random.key(0), np.repeat(image[None], n, 0)))
  views = _host_views(getattr(augment_tf, view), image, n, **options)
  host = np.stack(list(views.as_numpy_iterator()))
  np.testing.assert_array_equal(np.stack(list(views.take(3).as_numpy_iterator())), host[:3])  # deterministic
  assert host.shape == device.shape and host.dtype == np.float32
  assert host.min() >= 0.0 and host.max() <= 1.0
  stats = lambda v: np.array([v.mean(), v.std(), v.mean(axis=(1, 2, 3)).std(), v.std(axis=(1, 2, 3)).mean(),
                              v[:, :, :12].mean(), v[..., 0].mean(), np.mean(v == 0)])
  # The colour jitter's brightness shift (up to 0.8) makes a view's mean and its share of clipped
  # zeros vary widely, so 1000 views pin them to about 0.01 (one standard error). Measured when
  # written: largest gap 0.025 (zero share, simclr_view), 0.009 (strong_view); a host view without
  # the solarization, the Cutout or the RandAugment ops is off by 0.038 or more. The blur is too
  # subtle for these statistics: test_blur_probability_is_honoured_in_both_implementations.
  np.testing.assert_allclose(stats(device), stats(host), atol=0.03)


def test_host_multi_crop_shapes_and_determinism():
  from jaxclust.data import augment_tf
  crops = ((2, 24, (0.3, 1.0)), (3, 12, (0.1, 0.3)))
  views = _host_views(augment_tf.multi_crop, gradient_image(), 4, crops=crops, flip_p=0.0)
  first, again = next(views.as_numpy_iterator()), next(views.as_numpy_iterator())
  assert [v.shape for v in first] == [(24, 24, 3)] * 2 + [(12, 12, 3)] * 3
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[2], first[3])
  device = augment.multi_crop(jax.random.key(0), gradient_image()[None], crops=crops, flip_p=0.0)
  assert [v.shape[1:] for v in device] == [v.shape for v in first]
