"""Model FLOPs of a flax network, counted from its layers' shapes (for utilization figures).

XLA's own cost analysis cannot serve: on GPU it leaves out convolutions, which run as cuDNN custom
calls, and on CPU it counts some of them differently. Here every ``nn.Conv`` and ``nn.Dense`` call
adds 2 x (output positions) x (kernel size), one multiply and one add per weight use; norms,
activations and pooling are not counted, as is usual for model-FLOPs utilization.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def forward_flops(model: nn.Module, variables, shape, **apply_kwargs) -> float:
  """FLOPs of ``model.apply(variables, x, **apply_kwargs)`` for ``x`` of ``shape``, without running it."""
  counted = []

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
      kernel = context.module.variables["params"]["kernel"]
      counted.append(2 * math.prod(out.shape[:-1]) * math.prod(kernel.shape))
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda v, x: model.apply(v, x, **apply_kwargs), variables, jax.ShapeDtypeStruct(shape, jnp.float32))
  return float(sum(counted))
