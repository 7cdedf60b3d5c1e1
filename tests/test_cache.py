"""Kernels loaded from Numba's on-disk cache give the numbers of a fresh compile.

Within one test run every kernel is compiled in this process; a user's second
run loads the machine code from the cache instead. The window path reaches
its kernels through addresses taken at run time (the ``address`` of
``_kernels._window_field`` and ``_window_rows_field``), which must not end
up baked into cached code: a process that loads everything from the cache
must compute the same bits as the one that compiled it. Two fresh processes share one empty cache folder
and print a digest of the same computations.
"""

import os
import subprocess
import sys

_RUN = """
import hashlib
import numpy as np
import refimpl

psi = refimpl.RBFKernel(0.05 * np.random.default_rng(0).standard_normal((50, 10)))
digest = hashlib.sha256()
flow = refimpl.EquivariantFlow(psi, n_particles=4, dim=2)
for n in (1, 3, 64):  # one sample alone, a few in threads, groups solved in lockstep
    for array in flow.sample(n, n):
        digest.update(np.ascontiguousarray(array).tobytes())
x = np.random.default_rng(1).standard_normal((5, 13, 3))
for rows in (x[:1], x):  # one configuration, a batch in threads
    for array in refimpl.field_and_divergence(rows, 0.3, psi):
        digest.update(np.ascontiguousarray(array).tobytes())
print(digest.hexdigest())
"""


def _run(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    run = subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_numbers_from_the_cache_equal_those_of_a_fresh_compile(tmp_path):
    compiled = _run(tmp_path)
    assert any(tmp_path.rglob("*.nbi")), "the first run wrote no cache"
    loaded = _run(tmp_path)
    assert len(compiled) == 64 and loaded == compiled
