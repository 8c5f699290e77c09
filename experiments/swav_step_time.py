"""Median time of the MNIST-recipe SwAV train step (batch 256, multi-crop on device, the recipe's Sinkhorn epsilon) on
this machine; run with PYTHONPATH at two checkouts to compare them (RESULTS.md, batch_spread check)."""
import time, functools, jax, jax.numpy as jnp, numpy as np
from jaxclust.methods import swav
from jaxclust.data import augment
from jaxclust import configs
from jaxclust.methods import online
c = configs.get_config("swav", "mnist")
model = swav.network(c)  # the recipe's 30 prototypes
images = jnp.asarray(np.random.default_rng(0).random((256, 28, 28, 1)), jnp.float32)
crops = tuple((int(n), int(s), tuple(sc)) for n, s, sc in c.crops)
tx = online.optimizer(c, 70000)
state = swav.init(model, jax.random.key(1), images[:2], tx, queue_length=0)
step = jax.jit(functools.partial(swav.train_step, model=model, tx=tx, augment=functools.partial(augment.multi_crop, crops=crops, flip_p=0.0), epsilon=c.sinkhorn_epsilon), donate_argnums=0)
state, m = step(state, {"image": images}, jax.random.key(5)); jax.block_until_ready(m)
times = []
for i in range(12):
  t = time.perf_counter(); state, m = step(state, {"image": images}, jax.random.key(i)); jax.block_until_ready(m); times.append(time.perf_counter() - t)
print("median step s", np.median(times), "min", min(times))
print("final loss", repr(float(m["loss"])))  # the same under every allocator (cpu_allocator.sh)
