"""One process of a 2-process `jax.distributed` training run on localhost (tests/test_scale_out.py).

`python -m tests.multihost_worker <coordinator> <num_processes> <process_id> <workdir> <steps> <out.json>`
trains the tiny CycleGAN config through `unpaired.train.train_and_evaluate` (each process
reads its own half of every global batch) and writes the CRC-32 of every leaf of its own
copy of the final state, so the test can check that the processes agree bit for bit.
"""

from __future__ import annotations

import json
import logging
import sys

from unpaired import distributed


def main(argv: list[str]) -> None:
    coordinator, num_processes, process_id, workdir, steps, out = argv[1:]
    distributed.initialize(coordinator, int(num_processes), int(process_id), heartbeat_timeout_s=10)
    import jax  # pylint: disable=import-outside-toplevel

    from tests.scale_configs import cyclegan  # pylint: disable=import-outside-toplevel
    from unpaired import checkpoint, train  # pylint: disable=import-outside-toplevel

    logging.basicConfig(level=logging.INFO)
    assert jax.process_count() == int(num_processes), jax.process_count()
    config = cyclegan(batch_size=4, max_steps=int(steps), log_every=1, sample_every=2,
                      checkpoint_every=2, data__num_workers=1)
    state = train.train_and_evaluate(config, workdir)
    local = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, state)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"process": jax.process_index(), "step": int(state.step),
                   "crc": checkpoint.leaf_checksums(jax.device_get(local))}, f)


if __name__ == "__main__":
    main(sys.argv)
