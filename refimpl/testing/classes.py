"""Test classes to subclass in pytest: the property tests written once, for any model."""

from hypothesis import given
from hypothesis import strategies as st

from .checks import (JACOBIAN_ATOL, JACOBIAN_EPS, JACOBIAN_RTOL, EQUIVARIANCE_ATOL,
                     EQUIVARIANCE_RTOL, assert_divergence_matches_jacobian, assert_equivariant,
                     assert_invariant, assert_mean_free_preserved)
from .strategies import configurations, group_elements

# ---------------------------------------------------------------------------
# Test classes to subclass: the same property tests for any model


class _PropertyTests:
    """What every test class shares: the model's sizes, tolerances, the drawn
    case, and one hypothesis test per ``_property_*`` method of each subclass.

    Hypothesis refuses one ``@given`` function shared by several test classes
    (its example database and health checks are per function), so the tests
    are created here, once per subclass, as ``test_*`` methods.
    """

    n_particles = (2, 6)
    dim = (2, 3)
    scale = 3.0
    min_separation = None
    rtol = EQUIVARIANCE_RTOL
    atol = EQUIVARIANCE_ATOL

    def field(self, x):
        raise NotImplementedError("define field(self, x) in the subclass")

    def _case(self, data, translation_scale=3.0, mean_free=False):
        """A batch of two configurations and a group element, drawn by hypothesis."""
        x = data.draw(configurations(self.n_particles, self.dim, self.scale, mean_free=mean_free,
                                     min_separation=self.min_separation, batch_shape=(2,)))
        k, d = x.shape[-2:]
        g = data.draw(group_elements(k, d, translation_scale=translation_scale))
        return x, g

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            if name.startswith("_property_"):
                test_name = "test_" + name[len("_property_"):]
                cls._add_test(test_name, getattr(cls, name))

    @classmethod
    def _add_test(cls, test_name, check):
        def test(self, data):
            check(self, data)

        test.__name__ = test_name
        test.__qualname__ = f"{cls.__qualname__}.{test_name}"
        test.__doc__ = check.__doc__
        setattr(cls, test_name, given(data=st.data())(test))


class FieldSymmetryTests(_PropertyTests):
    """Property tests of an equivariant vector field; subclass and fill in.

    Set ``n_particles`` and ``dim`` (ints or ``(lo, hi)`` ranges) and define
    ``field(self, x)`` mapping ``(..., K, D) -> (..., K, D)``; pytest then
    collects two hypothesis tests (equivariance under a random group
    element, translation invariance included; centre of mass preserved).
    Define ``divergence(self, x) -> (...)`` too and subclass
    ``DivergenceTests`` to check it. Tolerances are class attributes::

        class TestMyField(FieldSymmetryTests, DivergenceTests):
            n_particles, dim, rtol, atol = 5, 3, 1e-5, 1e-6
            def field(self, x): return my_model.velocity(x)
            def divergence(self, x): return my_model.divergence(x)
    """

    def _property_field_is_equivariant(self, data):
        x, g = self._case(data)
        assert_equivariant(self.field, x, **g._asdict(), kind="vector", rtol=self.rtol,
                           atol=self.atol)

    def _property_field_keeps_the_centre_of_mass(self, data):
        x, _ = self._case(data)
        assert_mean_free_preserved(lambda y: y + self.field(y), x, rtol=self.rtol,
                                   atol=self.atol)


class DivergenceTests(_PropertyTests):
    """Property tests of a divergence: invariant, equal to the Jacobian trace.

    Needs ``field(self, x)`` and ``divergence(self, x)``; works alone or with
    ``FieldSymmetryTests``/``FlowSymmetryTests``. ``jacobian_eps``,
    ``jacobian_rtol`` and ``jacobian_atol`` set the central-difference check
    (keep ``min_separation`` well above ``jacobian_eps``).
    """

    jacobian_eps = JACOBIAN_EPS
    jacobian_rtol = JACOBIAN_RTOL
    jacobian_atol = JACOBIAN_ATOL
    min_separation = 0.25

    def divergence(self, x):
        raise NotImplementedError("define divergence(self, x) in the subclass")

    def _property_divergence_is_invariant(self, data):
        x, g = self._case(data)
        assert_invariant(self.divergence, x, **g._asdict(), rtol=self.rtol, atol=self.atol)

    def _property_divergence_is_the_jacobian_trace(self, data):
        x, _ = self._case(data, translation_scale=None)
        assert_divergence_matches_jacobian(self.field, self.divergence, x, eps=self.jacobian_eps,
                                           rtol=self.jacobian_rtol, atol=self.jacobian_atol)


class FlowSymmetryTests(FieldSymmetryTests):
    """Property tests of a flow map ``x -> F(x)`` with its log-determinant.

    Define ``flow(self, x) -> (y, logdet)``; ``rtol``/``atol`` should follow
    from the solver's tolerances (the transformed input takes other steps).
    """

    def flow(self, x):
        raise NotImplementedError("define flow(self, x) -> (y, logdet) in the subclass")

    def field(self, x):  # the displacement F(x) - x is translation invariant and equivariant
        return self.flow(x)[0] - x

    def _property_flow_is_an_equivariant_map(self, data):
        x, g = self._case(data)
        assert_equivariant(lambda y: self.flow(y)[0], x, **g._asdict(), kind="map",
                           rtol=self.rtol, atol=self.atol)

    def _property_logdet_is_invariant(self, data):
        x, g = self._case(data)
        assert_invariant(lambda y: self.flow(y)[1], x, **g._asdict(), rtol=self.rtol,
                         atol=self.atol)
