"""Hypothesis strategies and symmetry checkers for *any* particle model.

The functions here know nothing about refimpl's internals: a checker takes a
plain NumPy-in/NumPy-out callable, so the same property tests run against
refimpl, a PyTorch or JAX model wrapped in a few lines, or C++ bindings.
The checkers and ``act`` are plain NumPy; the strategies and the test classes
need ``hypothesis`` (refimpl's ``testing`` extra; the ``test`` extra has it too).

Conventions
-----------
A configuration ``x`` has shape ``(..., K, D)``: ``K`` particles in ``D``
dimensions. A group element ``g = (pi, Q, b)`` -- a permutation ``pi`` of the
particles (an index array), an orthogonal ``Q`` (rotation or reflection) and
a translation ``b`` -- acts on configurations by

.. math::
    (g \\cdot x)_i = Q\\, x_{\\pi(i)} + b ,

in NumPy ``x[..., pi, :] @ Q.T + b`` (see ``act``). Tangent vectors (a
velocity, a force) transform with the linear part only: ``Q v_{pi(i)}``.

Strategies: ``configurations``, ``orthogonal_matrices``, ``permutations``,
``translations``, ``group_elements``. Checkers: ``assert_equivariant``,
``assert_invariant``, ``assert_mean_free_preserved``,
``assert_divergence_matches_jacobian``. Test classes to subclass in a pytest
module (hypothesis tests written once, for any model):
``FieldSymmetryTests``, ``DivergenceTests``, ``FlowSymmetryTests``. Each checker raises
``AssertionError`` with the tolerance, the worst absolute and relative
deviation and the group element that was applied.

Example
-------
Wrap your model as NumPy in, NumPy out, and let hypothesis draw the cases::

    import numpy as np, torch
    from hypothesis import given, strategies as st
    from refimpl.testing import (assert_equivariant, configurations,
                                 group_elements)

    def velocity(x):                                  # (..., K, D) -> (..., K, D)
        with torch.no_grad():
            return model(torch.from_numpy(x), t=0.5).numpy()

    @given(st.data())
    def test_velocity_is_equivariant(data):
        x = data.draw(configurations(n_particles=5, dim=3, batch_shape=(4,)))
        g = data.draw(group_elements(5, 3, translation_scale=2.0))
        assert_equivariant(velocity, x, **g._asdict(), kind="vector",
                           rtol=1e-5, atol=1e-6)      # float32 model

``kind="vector"`` because a velocity does not move when the configuration is
translated; use ``kind="map"`` for a flow ``x -> F(x)``, whose output
translates with its input.

Choosing tolerances
-------------------
The defaults suit float64 code with outputs of order one: they leave several
orders of magnitude above rounding and catch any defect larger than about
``1e-9`` relative. A float32 model needs about ``rtol=1e-5``. A map computed
by an adaptive ODE solver is equivariant only to the solver's global error
(the transformed input takes different steps), so derive ``rtol``/``atol``
from the solver's tolerances, not from rounding.
"""

from .checks import (EQUIVARIANCE_ATOL, EQUIVARIANCE_RTOL, JACOBIAN_ATOL, JACOBIAN_EPS,
                     JACOBIAN_RTOL, MEAN_FREE_ATOL, MEAN_FREE_RTOL, act,
                     assert_divergence_matches_jacobian, assert_equivariant, assert_invariant,
                     assert_mean_free_preserved)

_NEED_HYPOTHESIS = ("GroupElement", "configurations", "orthogonal_matrices", "permutations",
                    "translations", "group_elements", "FieldSymmetryTests", "DivergenceTests",
                    "FlowSymmetryTests")

try:
    import hypothesis  # noqa: F401
except ImportError:
    def __getattr__(name):
        if name in _NEED_HYPOTHESIS:
            raise ImportError(f"refimpl.testing.{name} needs hypothesis: "
                              "pip install 'refimpl[testing]' (the checkers work without it)")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
else:
    from .classes import DivergenceTests, FieldSymmetryTests, FlowSymmetryTests
    from .strategies import (GroupElement, configurations, group_elements,
                             orthogonal_matrices, permutations, translations)

__all__ = [
    "GroupElement", "act", "configurations", "orthogonal_matrices", "permutations",
    "translations", "group_elements", "assert_equivariant", "assert_invariant",
    "assert_mean_free_preserved", "assert_divergence_matches_jacobian",
    "FieldSymmetryTests", "DivergenceTests", "FlowSymmetryTests",
]
