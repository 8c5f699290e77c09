"""One process of a 2-process streamed evaluation (run by tests/test_multihost.py): each process reads
its share of an in-memory array, then its block of a stored tensorflow-datasets split, and the
predictions come back in dataset order."""

import sys

import jax

port, process_id, out, tfds_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.config.update("jax_num_cpu_devices", 1)
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           coordinator_bind_address=f"127.0.0.1:{port}")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxclust import parallel  # noqa: E402
from jaxclust.data import sources, stream  # noqa: E402
from test_stream import indexed_images  # noqa: E402

mesh = parallel.make_mesh()  # one device per process
assert mesh.size == 2 and jax.process_count() == 2
mean = lambda images: (jnp.mean(images, axis=(1, 2, 3)),)
array = stream.open_source(sources.Dataset(indexed_images(), np.arange(50) % 3, "indexed"))
# batch 16 of 50 rows: each global batch holds 8 rows of each process, so the raw order interleaves
raw = np.concatenate([parallel.fetch(b["index"])[parallel.fetch(b["mask"])]
                      for b in stream.eval_batches(array, size=8, batch_size=16, mesh=mesh)])
(array_means,), array_labels, _ = stream.predict_in_order(mean, array, size=8, batch_size=16, mesh=mesh)
# the stored split: process 0 reads records 0-24, process 1 records 25-49 (tfds.split_for_jax_process)
split = stream.open_source("tfds:jaxclust_indexed:train", data_dir=tfds_dir)
tfds_raw = np.concatenate([parallel.fetch(b["index"])[parallel.fetch(b["mask"])]
                           for b in stream.eval_batches(split, size=8, batch_size=16, mesh=mesh)])
(tfds_means,), tfds_labels, _ = stream.predict_in_order(mean, split, size=8, batch_size=16, mesh=mesh)
if process_id == 0:
  np.savez(out, raw=raw, means=array_means, labels=array_labels, tfds_raw=tfds_raw, tfds_means=tfds_means,
           tfds_labels=tfds_labels)
