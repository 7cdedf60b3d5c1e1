"""The psi-family registry: every entry is complete and consistent with its class."""

import numpy as np
import pytest

import refimpl
from refimpl.families import FAMILIES

# The NumPy formula and the Numba pair sum the same terms in another order (the
# RBF kernel also drops Gaussians below 1e-22): rounding only, relative to the
# sum of |terms|, bounded here by the largest |value| over a grid of distances.
FORMULA_RTOL = 1e-12


def _example(name, seed=0):
    family = FAMILIES[name]
    params = family.example(np.random.default_rng(seed), "small", 0.0, 1.0)
    return family, params, family.build(params)


@pytest.mark.parametrize("name", FAMILIES)
def test_entry_names_its_class_and_round_trips_the_formula_parameters(name):
    family, params, psi = _example(name)
    assert family.cls.__name__ == name and type(psi) is family.cls
    back = family.params(psi)
    assert back.keys() == params.keys()
    for key, value in params.items():
        np.testing.assert_array_equal(back[key], value)
    np.testing.assert_array_equal(family.cls.from_theta(psi.theta).theta, psi.theta)
    assert set(family.linear) <= set(params)
    assert family.prefix and family.formula


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_numpy_formula_matches_the_numba_pair(name, t):
    family, params, psi = _example(name, seed=1)
    r = np.linspace(0.0, 9.0, 901)
    value, slope = psi.values(r, t)
    want_value, want_slope = family.numpy(params, r, t)
    np.testing.assert_allclose(value, want_value, rtol=0,
                               atol=FORMULA_RTOL * np.max(np.abs(want_value)))
    np.testing.assert_allclose(slope, want_slope, rtol=0,
                               atol=FORMULA_RTOL * np.max(np.abs(want_slope)))
    assert np.max(np.abs(want_slope)) > 0  # a psi that actually varies with r


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_round_trips_through_a_model_file(name, tmp_path):
    _, _, psi = _example(name, seed=2)
    flow = refimpl.EquivariantFlow(psi, rtol=1e-7, atol=1e-7, n_particles=3, dim=2)
    refimpl.save_model(tmp_path / "m.npz", flow)
    loaded, _ = refimpl.load_model(tmp_path / "m.npz")
    assert type(loaded.psi) is type(psi)
    np.testing.assert_array_equal(loaded.psi.theta, psi.theta)
    z = refimpl.MeanFreeNormal(3, 2).sample(2, 0)
    np.testing.assert_array_equal(loaded.forward(z)[0], flow.forward(z)[0])


def test_a_psi_of_an_unregistered_class_cannot_be_saved(tmp_path):
    class RBFKernel(refimpl.RBFKernel):  # same name, another class
        pass

    flow = refimpl.EquivariantFlow(RBFKernel.from_theta(refimpl.RBFKernel().theta))
    with pytest.raises(TypeError, match="psi families can be saved"):
        refimpl.save_model(tmp_path / "m.npz", flow)
