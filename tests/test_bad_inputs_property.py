"""Finite in, finite out: every public numerical function, over 600 orders of magnitude.

The psi families' parameters (weights, widths) are drawn over as many orders
of magnitude too: a psi that is used must give finite fields or be refused
naming the parameter that is out of range (``refimpl.psi.MAX_PARAMETER``).

Hypothesis draws a mean-free configuration, scales it by ``10^e`` with ``e``
anywhere in [-300, 300] (and times ``t`` alike), and calls each function.
The result must be finite, or the call must raise one of the documented
exceptions: a ``ValueError`` that says the input is out of range, that the
result overflows, or that two particles coincide, or a ``SolverError``.
Silent NaN or inf fails the test. Lennard-Jones energies may be ``+inf``
exactly where two particles coincide (to float64 precision), as documented.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.bgflow_kernel import _offsets
from refimpl import (BgflowKernel, DoubleWell, EquivariantFlow, LennardJones, MeanFreeNormal,
                     RBFKernel, RealNVP, SolverError, TanhMLP, divergence,
                     effective_sample_size, log_weights, normalized_weights, remove_mean,
                     reweighted_mean, vector_field)

# What a documented refusal says (see _validate.check_range and potentials._checked).
DOCUMENTED = ("out of range", "overflows", "coincide")

_rng = np.random.default_rng(1)
FAMILIES = {
    "RBFKernel": RBFKernel(0.1 * _rng.standard_normal((50, 10))),
    "TanhMLP": TanhMLP(8, rng=2, v=_rng.standard_normal(8)),
    "BgflowKernel": BgflowKernel(np.linspace(0.0, 6.0, 7), 0.7, np.linspace(0.0, 1.0, 3), 0.5,
                                 weights=_rng.standard_normal((7, 3))),
}
FLOWS = {name: EquivariantFlow(psi, n_particles=4, dim=2, max_steps=2_000)
         for name, psi in FAMILIES.items()}
NVP = RealNVP(4, 2, n_layers=2, hidden=(8,), init_scale=0.5)
NVP.params = 0.3 * _rng.standard_normal(NVP.n_params)
DW, LJ = DoubleWell(4, 2), LennardJones(4, 2, tether=0.5)
MFN = MeanFreeNormal(4, 2)


def _lj_energy(x):
    u = LJ.energy(x)
    r2 = np.sum((x[:, :, None] - x[:, None]) ** 2, axis=-1) + np.eye(4)
    coincident = np.any(r2 == 0.0, axis=(-2, -1))
    assert np.all(np.isfinite(u) | (coincident & (u == np.inf)))
    return np.where(coincident, 0.0, u)


FUNCTIONS = {
    "remove_mean": lambda x, t: remove_mean(x),
    "MeanFreeNormal.log_prob": lambda x, t: MFN.log_prob(x),
    "DoubleWell.energy": lambda x, t: DW.energy(x),
    "DoubleWell.force": lambda x, t: DW.force(x),
    "LennardJones.energy": lambda x, t: _lj_energy(x),
    "LennardJones.force": lambda x, t: LJ.force(x),
    "RealNVP.log_prob": lambda x, t: NVP.log_prob(NVP.params, x),
    "RealNVP.forward": lambda x, t: NVP.forward(NVP.params, NVP.to_coordinates(x))[0],
    "RealNVP.inverse": lambda x, t: NVP.inverse(NVP.params, NVP.to_coordinates(x))[1],
    "reweighting": lambda x, t: (reweighted_mean(x[:, 0, 0], log_weights(x[:, 1, 0],
                                                                          x[:, 2, 0]))
                                 + (effective_sample_size(x[:, 3, 1]),)
                                 + tuple(normalized_weights(x[:, 0, 1]))),
    "BgflowKernel.bgflow_divergence":
        lambda x, t: FAMILIES["BgflowKernel"].bgflow_divergence(x, t),
}
for _name, _psi in FAMILIES.items():
    FUNCTIONS[f"vector_field[{_name}]"] = lambda x, t, p=_psi: vector_field(x, t, p)
    FUNCTIONS[f"divergence[{_name}]"] = lambda x, t, p=_psi: divergence(x, t, p)
    FUNCTIONS[f"psi.values[{_name}]"] = lambda x, t, p=_psi: p.values(
        np.hypot(*np.moveaxis(x[:, 0] - x[:, 1], -1, 0)), t)
    FUNCTIONS[f"flow.forward[{_name}]"] = lambda x, t, f=FLOWS[_name]: f.forward(x[:1])
    FUNCTIONS[f"flow.log_prob[{_name}]"] = lambda x, t, f=FLOWS[_name]: f.log_prob(x[:1])


@st.composite
def scaled_inputs(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    exponent = draw(st.integers(-300, 300))
    x = remove_mean(np.random.default_rng(seed).standard_normal((3, 4, 2))) * 10.0 ** exponent
    t_exponent = draw(st.integers(-300, 300))
    t = draw(st.sampled_from([0.0, 0.5, 1.0, -(10.0 ** t_exponent), 10.0 ** t_exponent]))
    return x, t


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@given(inputs=scaled_inputs())
def test_finite_input_gives_finite_output_or_a_documented_error(name, inputs):
    x, t = inputs
    _assert_finite_or_documented(lambda: FUNCTIONS[name](x, t), DOCUMENTED,
                                 f"{name} for |x| ~ {np.max(np.abs(x)):.3g}")


def _assert_finite_or_documented(call, documented, what):
    """``call()`` returns only finite numbers, or raises a ``ValueError`` whose
    message holds one of ``documented``, or a ``SolverError``; overflow and
    invalid operations inside it count as failures, not as silent inf/NaN."""
    try:
        with np.errstate(over="raise", invalid="raise"):  # else a silent inf or NaN
            result = call()
    except ValueError as exc:
        assert any(word in str(exc) for word in documented), f"{what}: {exc}"
        return
    except SolverError:
        return
    flat = np.concatenate([np.ravel(np.asarray(r, dtype=float)) for r in
                           (result if isinstance(result, tuple) else (result,))])
    assert np.all(np.isfinite(flat)), f"{what} gave {flat}"


def _magnitudes(draw, rng, size):
    """``size`` standard normals times ``10^e``, ``e`` drawn in [-300, 300]."""
    return rng.standard_normal(size) * 10.0 ** draw(st.integers(-300, 300))


@st.composite
def scaled_families(draw):
    """A psi of each family with parameters scaled over 600 orders of magnitude."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mag = lambda size: _magnitudes(draw, rng, size)  # noqa: E731
    rbf = RBFKernel(mag((50, 10)), gamma=abs(mag(1)[0]) + 1e-300,
                    gamma_t=abs(mag(1)[0]) + 1e-300)
    mlp = TanhMLP(8, a=mag(8), c=mag(8), b=mag(8), v=mag(8), v0=mag(1)[0])
    theta = FAMILIES["BgflowKernel"].theta.copy()
    _, lg, mt, lt, im, w0, b0 = _offsets(7, 3)
    theta[lg:mt] = draw(st.floats(-700.0, 700.0))  # neg_log_gammas: widths e^-700..e^700
    theta[lt:im] = draw(st.floats(-700.0, 700.0))
    theta[im:w0], theta[w0:b0], theta[b0:] = mag(7), mag(21), mag(3)
    return {"RBFKernel": rbf, "TanhMLP": mlp, "BgflowKernel": BgflowKernel.from_theta(theta)}


PSI_FUNCTIONS = {
    "vector_field": lambda psi, x, t: vector_field(x, t, psi),
    "divergence": lambda psi, x, t: divergence(x, t, psi),
    "psi.values": lambda psi, x, t: psi.values(np.hypot(*np.moveaxis(x[:, 0] - x[:, 1], -1, 0)),
                                               t),
    "flow.log_prob": lambda psi, x, t: EquivariantFlow(psi, n_particles=4, dim=2,
                                                       max_steps=200).log_prob(x[:1]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", sorted(PSI_FUNCTIONS))
@given(psis=scaled_families(), inputs=scaled_inputs())
def test_finite_parameters_give_finite_output_or_name_the_parameter(family, name, psis, inputs):
    x, t = inputs
    psi = psis[family]
    _assert_finite_or_documented(lambda: PSI_FUNCTIONS[name](psi, x, t),
                                 ("out of range", "overflow", "coincide"),
                                 f"{name}[{family}] with theta {psi.theta}")
