"""One process of a 2-process jaxclust fit on loopback (run by tests/test_multihost.py)."""

import sys

import jax

port, process_id, workdir, method, data_input = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           coordinator_bind_address=f"127.0.0.1:{port}")

from test_train import two_process_config  # noqa: E402  (after jax.distributed.initialize)

from jaxclust import train  # noqa: E402

assert method == "dec", method
config = two_process_config(data_input)
summary = train.fit(config, workdir, log=lambda _: None)
assert summary["processes"] == 2 and summary["devices"] == 4, summary
