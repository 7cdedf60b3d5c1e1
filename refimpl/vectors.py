"""Golden test vectors for checking another implementation against refimpl.

``refimpl vectors --out FILE.json [--small]`` writes a language-neutral JSON
file of *cases*. Each case names a psi family and its parameters **as they
appear in the family's formula** (not refimpl's internal ``theta`` layout),
the inputs, and refimpl's reference outputs with an estimate of their error.
The file documents itself (``conventions``, ``quantities``, ``psi_families``,
``thresholds``, ``reference_accuracy``); ``refimpl verify`` and
``refimpl.verify.check_implementation`` compare another implementation's
outputs with it, and ``refimpl.diagnose`` names the known convention error
behind a failure.

Quantities: the field and its divergence, the flow (end points, log-dets,
log-density), the DoubleWell and Lennard-Jones energies and forces, and for
training the ML and KL losses on fixed batches (``refimpl.train``'s losses)
with their gradients per named parameter of the formula (``named_gradient``).
A digest of every part of the file (``digest_parts``, unkeyed SHA-256) lets
``verify`` refuse a golden file edited by accident or carelessly; it does not
stop a deliberate edit (the digest can be recomputed), which the threshold cap
in ``refimpl.verify`` bounds.

Every psi family registered in ``refimpl.families.FAMILIES`` gets the same
set of cases (``SMALL`` or ``FULL`` geometries); a new family needs only its
entry there.
"""

import errno
import hashlib
import json
import os
from dataclasses import dataclass

import autograd
import numpy as np

from ._engine import theta_with
from ._version import __version__
from .families import FAMILIES
from .files import write_text
from .flow import EquivariantFlow, divergence, vector_field
from .grad import FlowModel
from .potentials import DoubleWell, LennardJones
from .prior import MeanFreeNormal, remove_mean
from .train import kl_loss, ml_loss

SCHEMA_VERSION = 2
SEED = 20191106  # fixed: the same command writes byte-identical files
# Reference flow solves: 100x tighter than the 1e-10 asked of a reference, yet
# well above rounding (~1e-15 per step): measured error ~1e-13..1e-11.
REFERENCE_TOL = 1e-12
# The accuracy check re-solves at this tolerance; DOPRI5's error falls ~10x per
# decade of tolerance, so |reference - check| measures the reference's error.
CHECK_TOL = 1e-13
# Also written: how far refimpl's own solver lands at these (typical) tolerances.
SOLVER_SENSITIVITY_TOLS = (1e-8, 1e-10)
# Recommended to other implementations: refimpl's own solve at 1e-10 lands ~1e-9
# from the reference, 1e3 inside the 1e-6 thresholds of the solved quantities.
RECOMMENDED_TOL = 1e-10
MAX_STEPS = 1_000_000  # never reached: a 1e-13 solve of these flows takes < 1000 steps
# Distance of the near-coincident pair: exposes regularized distances
# sqrt(r^2 + eps) and unit vectors (x_i - x_j) / r that are fine at r ~ 1.
NEAR_DISTANCE = 1e-4
# Every example psi is rescaled to max |psi| = PSI_STRENGTH / K on the grid below:
# relative particle speeds stay O(1), log-determinants O(1), nothing blows up.
PSI_STRENGTH = 0.5
STRENGTH_GRID_R = np.linspace(0.0, 8.0, 161)
STRENGTH_GRID_T = 9  # time points on [t0, t1]
# The accuracy of direct quantities is measured against np.longdouble where that is
# wider than float64 (x86 80-bit extended: eps 1.1e-19).
EXTENDED_PRECISION = np.finfo(np.longdouble).eps < 1e-18
X_SPREAD = 1.5  # std of the x inputs: pair distances ~2-6, where the double well lives
ERROR_DIGITS = 2  # error estimates are estimates: two significant digits
ENERGY = {"potential": "DoubleWell", "a": 0.0, "b": -4.0, "c": 0.9, "d0": 4.0,
          "pairs": "ordered", "temperature": 1.0}
LENNARD_JONES = {"potential": "LennardJones", "epsilon": 1.0, "r_m": 1.0, "tether": 0.0,
                 "pairs": "unordered", "temperature": 1.0}
# Losses: small fixed batches keep the references cheap and still average over samples.
BATCH = 3
# The KL batch is drawn from the prior; draws with a pair closer than this are drawn
# again, so the Lennard-Jones energies of F(z) stay moderate (r_m = 1).
KL_MIN_DISTANCE = 0.8

QUANTITIES = {  # name -> (shape, inputs, meaning)
    "field": ("(K, D)", ["x", "t"], "g(x, t)"),
    "divergence": ("()", ["x", "t"], "div g(x, t), diagonal excluded"),
    "forward_x": ("(K, D)", ["z", "t0", "t1"], "x(t1) of the flow started at x(t0) = z"),
    "forward_logdet": ("()", ["z", "t0", "t1"], "log|det dx(t1)/dz| = -l(t1)"),
    "inverse_z": ("(K, D)", ["x", "t0", "t1"], "z = x(t0) of the flow ending at x(t1) = x"),
    "inverse_logdet": ("()", ["x", "t0", "t1"], "log|det dz/dx| = -l(t0)"),
    "log_prob": ("()", ["x", "t0", "t1"], "log q_X(x) = log q_Z(inverse_z) + inverse_logdet"),
    "energy": ("()", ["x"], "DoubleWell reduced energy u(x) / T, ordered pairs"),
    "force": ("(K, D)", ["x"], "-d energy / dx"),
    "lj_energy": ("()", ["x"], "LennardJones reduced energy u(x) / T, unordered pairs"),
    "lj_force": ("(K, D)", ["x"], "-d lj_energy / dx"),
    "ml_loss": ("()", ["x_batch", "t0", "t1"], "-mean_b log q_X(x_batch[b])"),
    "ml_grad": ("params", ["x_batch", "t0", "t1"],
                "d ml_loss / d p for each parameter p named in psi.trainable"),
    "kl_loss": ("()", ["z_batch", "t0", "t1", "kl_potential"],
                "mean_b [u(F(z_b)) / T + log q_X(F(z_b))], u the case's kl_potential"),
    "kl_grad": ("params", ["z_batch", "t0", "t1", "kl_potential"],
                "d kl_loss / d p for each parameter p named in psi.trainable"),
}
FLOW_QUANTITIES = ("forward_x", "forward_logdet", "inverse_z", "inverse_logdet", "log_prob")
LOSS_QUANTITIES = ("ml_loss", "kl_loss")
GRADIENT_QUANTITIES = ("ml_grad", "kl_grad")
SOLVED_QUANTITIES = FLOW_QUANTITIES + LOSS_QUANTITIES + GRADIENT_QUANTITIES
DIRECT_QUANTITIES = tuple(q for q in QUANTITIES if q not in SOLVED_QUANTITIES)

# Pass/fail tolerances of ``refimpl verify``, by how a quantity is computed.
THRESHOLD_REASONS = {
    "direct": "A direct float64 evaluation. The reference is within ~1e-14 relative of the "
              "exact value (reference_accuracy); another float64 implementation differs by "
              "summation order and libm ulps, ~K eps max|term| ~ 1e-14, so 1e-10 leaves a "
              "margin of 1e4. Formula errors are far larger: a j = i term, a missing factor D, "
              "a sign, unordered pairs, a regularized distance sqrt(r^2 + eps) at the "
              "near-coincident pair.",
    "solved": "The result of an adaptive ODE solve. Another solver takes other steps, so "
              "agreement is limited by its tolerance, not by rounding. The reference is within "
              "~1e-11 of the exact flow; refimpl's own DOPRI5 lands within ~2e-7 of it at "
              "rtol = atol = 1e-8 and ~1e-9 at 1e-10 (solver_sensitivity): run yours at 1e-10. "
              "Errors of convention are >= 1e-2: the log-det sign, the prior constant "
              "((K-1) D / 2) log(2 pi) >= 1.8, the time interval.",
    "gradient": "The gradient of a loss through adaptive ODE solves. The reference is refimpl's "
                "discrete adjoint (the exact derivative of its own 1e-12 solve), within "
                "reference_accuracy of the exact gradient. Autograd through an adaptive solver "
                "(torchdiffeq's odeint) differentiates its own steps like refimpl; a continuous "
                "adjoint (odeint_adjoint) solves a second ODE backwards and differs from the "
                "exact gradient by O(its tolerance) amplified by the backward solve. Run yours "
                "at rtol = atol = 1e-10, the adjoint's tolerances too: refimpl's own gradients "
                "land within ~1e-9 relative of the reference there and ~1e-7 at 1e-8 "
                "(solver_sensitivity, absolute); bgflow's continuous adjoint was reported to "
                "agree with refimpl's gradient to ~1e-7 relative at 1e-10. 1e-5 leaves a margin "
                "of 100 over that. Wrong parameterizations, signs, energies or time intervals "
                "move a gradient far more (a constant in the prior does not move it: ml_loss "
                "and kl_loss catch that).",
}
DIRECT_TOL = 1e-10  # rtol = atol for "direct" quantities
SOLVED_TOL = 1e-6  # rtol = atol for "solved" quantities (flow and losses)
GRADIENT_TOL = 1e-5  # rtol = atol for "gradient" quantities


def _basis(q):
    return "gradient" if q in GRADIENT_QUANTITIES else "solved" if q in SOLVED_QUANTITIES \
        else "direct"


_TOLERANCES = {"direct": DIRECT_TOL, "solved": SOLVED_TOL, "gradient": GRADIENT_TOL}
THRESHOLDS = {q: {"rtol": _TOLERANCES[_basis(q)], "atol": _TOLERANCES[_basis(q)],
                  "basis": _basis(q)} for q in QUANTITIES}
COMPARISON = ("For each case and quantity: err = max over entries |theirs - reference|, "
              "scale = max over entries |reference| (a gradient's entries are those of all its "
              "named arrays); the quantity passes in the case iff err <= atol + rtol * scale, "
              "and passes iff it passes in every case. 'rel' in reports is err / scale.")

CONVENTIONS = {
    "numbers": "IEEE float64 written with round-trip precision (shortest repr, <= 17 "
               "significant digits); read them with a correctly rounding parser.",
    "configurations": "x and z are K x D nested lists: row i holds the D coordinates of "
                      "particle i; x_batch and z_batch are B x K x D. All configurations are "
                      "mean-free to rounding. z_batch holds prior draws, redrawn while a pair "
                      f"was closer than {KL_MIN_DISTANCE} (keeps Lennard-Jones energies "
                      "moderate); x_batch "
                      "draws like x (a near-coincident pair in the close-pair cases).",
    "mean_free": "The centre of mass is the mean mu(x) = (1/K) sum_i x_i (the paper prints a "
                 "sum). Densities live on the (K-1) D dimensional subspace mu(x) = 0, in "
                 "orthonormal coordinates on it.",
    "field": "g_i(x, t) = sum_{j != i} psi(r_ij, t) (x_i - x_j), r_ij = |x_i - x_j| (Euclidean).",
    "divergence": "div g(x, t) = sum_i sum_{j != i} [dpsi/dr(r_ij, t) r_ij + D psi(r_ij, t)]. "
                  "The paper's eq. 4 lets j run over j = i too; that adds a spurious "
                  "D K psi(0, t). The diagonal is excluded here.",
    "prior": "log q_Z(z) = -|z|^2 / 2 - ((K-1) D / 2) log(2 pi), |z|^2 the sum of squares of "
             "all K D entries: normalized on the mean-free subspace. bgflow omits the "
             "constant; add it to bgflow's values.",
    "flow": "Augmented ODE d/dt [x, l] = [g(x, t), -div g(x, t)]. forward: x(t0) = z, "
            "l(t0) = 0, solve to t1; forward_x = x(t1), forward_logdet = log|det dx/dz| = "
            "-l(t1). inverse: x(t1) = x, l(t1) = 0, solve back to t0; inverse_z = x(t0), "
            "inverse_logdet = log|det dz/dx| = -l(t0). log_prob(x) = log q_Z(inverse_z) + "
            "inverse_logdet. The flow keeps the centre of mass fixed, so the determinant on "
            "the mean-free subspace equals the full K D one. t0, t1 differ between cases.",
    "energy": "energy(x) = u(x) / T, u(x) = sum over ORDERED pairs i != j of v(r_ij) (each "
              "pair twice, the paper's convention), v(d) = a (d-d0) + b (d-d0)^2 + "
              "c (d-d0)^4, with a, b, c, d0, T from 'energy'. bgflow's "
              "MultiDoubleWellPotential sums unordered pairs: half of this. "
              "force(x) = -d energy / dx.",
    "lennard_jones": "lj_energy(x) = u(x) / T, u(x) = sum over UNORDERED pairs i < j of "
                     "epsilon [(r_m / r_ij)^12 - 2 (r_m / r_ij)^6] (minimum -epsilon at "
                     "r = r_m; sigma = r_m / 2^(1/6)), with epsilon, r_m, T from "
                     "'lennard_jones'; the exact r_ij, no cut-off, no shift, no "
                     "regularization, no tether (tether = 0). lj_force(x) = -d lj_energy / dx.",
    "losses": "ml_loss = -(1/B) sum_b log q_X(x_batch[b]) (log q_X as log_prob). kl_loss = "
              "(1/B) sum_b [u(x_b) / T + log q_X(x_b)], x_b = forward_x of z_batch[b], "
              "log q_X(x_b) = log q_Z(z_b) - forward_logdet(z_b), u / T the reduced energy "
              "named by the case's kl_potential ('energy': DoubleWell, 2-D cases; "
              "'lennard_jones': LennardJones, 3-D cases); no energy cut. Both equal the "
              "training losses of refimpl.train (ml_loss, kl_loss) on these batches.",
    "gradients": "ml_grad and kl_grad are objects {name: array} with the derivative of the "
                 "loss with respect to each parameter of the psi formula named in the case's "
                 "psi.trainable, of the shape of psi.params[name] (a number for a scalar), "
                 "all other parameters held fixed. BgflowKernel lists its log-widths "
                 "(bgflow's optimize_d_gammas = optimize_t_gammas = True).",
}

@dataclass(frozen=True)
class Geometry:
    name: str
    k: int
    d: int
    size: str  # "small", "medium" or "paper": the size of the example psi
    close: bool = False  # particles 0 and 1 at distance NEAR_DISTANCE, in x and in z
    t0: float = 0.0
    t1: float = 1.0
    note: str = ""


SMALL = (Geometry("k4_d2", 4, 2, "small", t0=-0.25, t1=1.5,
                  note="the paper's DW4 size; time interval [-0.25, 1.5]"),
         Geometry("close_k3_d3", 3, 3, "small", close=True, note="near-coincident pair"))
FULL = (Geometry("k2_d2", 2, 2, "small", note="one pair"),
        Geometry("k4_d2", 4, 2, "paper", note="the paper's DW4 system and psi size"),
        Geometry("k3_d3", 3, 3, "small"),
        Geometry("k7_d2", 7, 2, "medium", t0=-0.25, t1=1.5, note="time interval [-0.25, 1.5]"),
        Geometry("k13_d3", 13, 3, "medium", note="LJ13 size"),
        Geometry("close_k4_d2", 4, 2, "medium", close=True, note="near-coincident pair"),
        Geometry("close_k6_d3", 6, 3, "small", close=True, note="near-coincident pair"))


def _configuration(rng, geo, spread):
    x = spread * rng.standard_normal((geo.k, geo.d))
    if geo.close:
        u = rng.standard_normal(geo.d)
        x[1] = x[0] + NEAR_DISTANCE * u / np.linalg.norm(u)
    return remove_mean(x)


def _prior_batch(rng, geo):
    """``BATCH`` prior samples, each redrawn until no pair is closer than KL_MIN_DISTANCE."""
    prior, i, j = MeanFreeNormal(geo.k, geo.d), *np.triu_indices(geo.k, 1)
    batch = []
    while len(batch) < BATCH:
        z = prior.sample(1, rng)[0]
        if np.min(np.linalg.norm(z[i] - z[j], axis=-1)) >= KL_MIN_DISTANCE:
            batch.append(z)
    return np.array(batch)


def _rescale(family, params, k, t0, t1):
    """Scale the linear parameters so that max |psi| on the grid is PSI_STRENGTH / K."""
    peak = max(np.max(np.abs(family.numpy(params, STRENGTH_GRID_R, t)[0]))
               for t in np.linspace(t0, t1, STRENGTH_GRID_T))
    factor = PSI_STRENGTH / (k * peak)
    return {n: (v * factor if n in family.linear else v) for n, v in params.items()}


def _case_inputs(rng, family, geo):
    params = family.example(rng, geo.size, geo.t0, geo.t1)
    params = _rescale(family, params, geo.k, geo.t0, geo.t1)
    params = family.params(family.build(params))  # as the family stores them (float64)
    t = geo.t0 + rng.uniform() * (geo.t1 - geo.t0)
    inputs = {"x": _configuration(rng, geo, X_SPREAD), "t": t,
              "z": _configuration(rng, geo, 1.0), "t0": geo.t0, "t1": geo.t1,
              "x_batch": np.array([_configuration(rng, geo, X_SPREAD) for _ in range(BATCH)]),
              "z_batch": _prior_batch(rng, geo)}
    return params, inputs


def kl_potential_name(dim):
    """The top-level key of the potential in a case's KL loss: DW4 in 2-D, LJ in 3-D."""
    return "lennard_jones" if dim == 3 else "energy"


def potential(spec, k, d):
    """The refimpl potential of an ``energy``/``lennard_jones`` entry of a golden file."""
    kwargs = {n: v for n, v in spec.items() if n not in ("potential", "pairs")}
    if spec["potential"] == "DoubleWell":
        return DoubleWell(k, d, pairs=spec["pairs"], **kwargs)
    if spec["potential"] == "LennardJones" and spec.get("pairs") == "unordered":
        return LennardJones(k, d, **kwargs)
    raise ValueError(f"unknown potential {spec!r}")


def named_gradient(family, psi, grad):
    """``grad`` over ``psi.trainable`` as ``{name: array}`` for ``family.trainable_params``.

    The family's own reader (``family.params``) applied to ``theta`` with the
    gradient in the trainable entries: the formula's arrays are slices of
    ``theta``, so this reads the gradient off in the formula's layout.
    """
    named = family.params(psi.copy_with(theta_with(psi, grad)))
    return {n: named[n] for n in family.trainable_params}


class _GivenPrior:
    """A ``FlowModel`` whose ``sample`` pushes given prior samples ``z`` through the flow.

    ``refimpl.train.kl_loss`` draws its samples with ``model.sample``; this
    makes it evaluate the KL loss on a golden case's ``z_batch``.
    """

    def __init__(self, model, z):
        self.model, self.z = model, z

    def sample(self, params, n, rng):
        return self.model.push(params, self.z)


def _losses(case, rtol, atol, potentials):
    """ml/kl losses and their named gradients (``train.ml_loss``, ``train.kl_loss``)."""
    family = FAMILIES[case["family"]]
    psi = (family.build_trainable or family.build)(case["params"])
    inp = case["inputs"]
    xb, zb = np.asarray(inp["x_batch"], float), np.asarray(inp["z_batch"], float)
    k, d = xb.shape[-2:]
    flow = EquivariantFlow(psi, inp["t0"], inp["t1"], rtol, atol, MAX_STEPS, n_particles=k, dim=d)
    model = FlowModel(flow)
    given = _GivenPrior(model, zb)
    energy = potential(potentials[case.get("kl_potential") or kl_potential_name(d)], k, d)
    ml, ml_grad = autograd.value_and_grad(lambda p: ml_loss(model, p, xb))(model.params)
    kl, kl_grad = autograd.value_and_grad(
        lambda p: kl_loss(given, p, energy, len(zb), None))(model.params)
    return {"ml_loss": ml, "ml_grad": named_gradient(family, psi, ml_grad),
            "kl_loss": kl, "kl_grad": named_gradient(family, psi, kl_grad)}


def compute_outputs(case, rtol=REFERENCE_TOL, atol=REFERENCE_TOL, energy=None,
                    lennard_jones=None, quantities=None):
    """refimpl's outputs for one case (``{"family", "params", "inputs"[, "kl_potential"]}``).

    Returns ``{quantity: value}`` for ``quantities`` (default: all of
    ``QUANTITIES``): float64 arrays, and ``{name: array}`` for the gradients.
    The solved quantities come from solves at ``rtol``, ``atol``; ``energy``
    and ``lennard_jones`` default to ``ENERGY`` and ``LENNARD_JONES``.
    """
    want = set(QUANTITIES if quantities is None else quantities)
    potentials = {"energy": energy or ENERGY, "lennard_jones": lennard_jones or LENNARD_JONES}
    family = FAMILIES[case["family"]]
    psi = family.build(case["params"])
    inp = case["inputs"]
    x, z = np.asarray(inp["x"], float)[None], np.asarray(inp["z"], float)[None]
    k, d = x.shape[-2:]
    out = {}
    if want & {"field", "divergence"}:
        out.update(field=vector_field(x, inp["t"], psi), divergence=divergence(x, inp["t"], psi))
    if want & set(FLOW_QUANTITIES):
        flow = EquivariantFlow(psi, inp["t0"], inp["t1"], rtol, atol, MAX_STEPS)
        fx, fld = flow.forward(z)
        iz, ild = flow.inverse(x)
        out.update(forward_x=fx, forward_logdet=fld, inverse_z=iz, inverse_logdet=ild,
                   log_prob=MeanFreeNormal(k, d).log_prob(iz) + ild)
    for prefix, key in (("", "energy"), ("lj_", "lennard_jones")):
        if want & {prefix + "energy", prefix + "force"}:
            pot = potential(potentials[key], k, d)
            out.update({prefix + "energy": pot.energy(x), prefix + "force": pot.force(x)})
    out = {q: np.asarray(v, dtype=np.float64)[0] for q, v in out.items()}
    if want & set(LOSS_QUANTITIES + GRADIENT_QUANTITIES):
        out.update(_losses(case, rtol, atol, potentials))
    return {q: v for q, v in out.items() if q in want}


def direct_quantities(case, dtype=np.longdouble, distance_eps=0.0, energy=None,
                      lennard_jones=None):
    """field, divergence, energy, force, lj_energy, lj_force by the formulas, in ``dtype``.

    Extended precision (``np.longdouble``) measures the references' rounding
    errors. ``distance_eps > 0`` evaluates the classic mistake of a
    regularized distance ``d = sqrt(r^2 + eps)`` used for every ``r`` (the
    divergence then as ``sum [psi'(d) d + D psi(d)]``), which
    ``refimpl.diagnose`` recognizes.
    """
    e = {n: dtype(v) for n, v in (energy or ENERGY).items() if not isinstance(v, str)}
    lj = {n: dtype(v) for n, v in (lennard_jones or LENNARD_JONES).items()
          if not isinstance(v, str)}
    p = {n: np.asarray(v, dtype=dtype) for n, v in case["params"].items()}
    x = np.asarray(case["inputs"]["x"], dtype=dtype)
    k, d = x.shape
    i, j = np.nonzero(~np.eye(k, dtype=bool))  # ordered pairs
    diff = x[i] - x[j]
    r = np.sqrt(np.sum(diff * diff, axis=-1) + dtype(distance_eps))
    value, slope = FAMILIES[case["family"]].numpy(p, r, dtype(case["inputs"]["t"]))
    g = np.zeros((k, d), dtype=dtype)
    np.add.at(g, i, value[:, None] * diff)
    s = r - e["d0"]
    v = e["a"] * s + e["b"] * s ** 2 + e["c"] * s ** 4
    dv = e["a"] + 2 * e["b"] * s + 4 * e["c"] * s ** 3
    f = np.zeros((k, d), dtype=dtype)  # d/dx_i of sum_{ordered} v: each pair twice -> 2 dv/dr
    np.add.at(f, i, -2 / e["temperature"] * (dv / r)[:, None] * diff)
    q = (lj["r_m"] / r) ** 6
    lj_v = lj["epsilon"] * q * (q - 2)  # over ordered pairs: halve the sum
    lj_w = 12 * lj["epsilon"] * (q * q - q) / (r * r) / lj["temperature"]  # -dv/dr / r / T
    lj_f = np.zeros((k, d), dtype=dtype)
    np.add.at(lj_f, i, lj_w[:, None] * diff)
    return {"field": g, "divergence": np.sum(slope * r + d * value),
            "energy": np.sum(v) / e["temperature"], "force": f,
            "lj_energy": np.sum(lj_v) / 2 / lj["temperature"], "lj_force": lj_f}


def flatten(value):
    """A quantity's entries as one 1-D array (a gradient's named arrays in order)."""
    if isinstance(value, dict):
        return np.concatenate([np.ravel(v) for v in value.values()]) if value else np.zeros(0)
    return np.ravel(value)


def _max_abs(a, b):
    a = flatten(a).astype(np.longdouble)
    return float(np.max(np.abs(a - flatten(b).astype(np.longdouble))))


def _round(v):
    return float(f"{v:.{ERROR_DIGITS}g}")


def _errors(case, ref):
    """Estimated error of each reference quantity (None: not measurable here)."""
    if EXTENDED_PRECISION:
        ext = direct_quantities(case)
        err = {q: _max_abs(ref[q], ext[q]) for q in ext}
    else:
        err = dict.fromkeys(DIRECT_QUANTITIES)
    check = compute_outputs(case, CHECK_TOL, CHECK_TOL, quantities=SOLVED_QUANTITIES)
    err.update({q: _max_abs(ref[q], check[q]) for q in SOLVED_QUANTITIES})
    return err


def _jsonable(v):
    if isinstance(v, dict):
        return {n: _jsonable(a) for n, a in v.items()}
    return v.tolist() if isinstance(v, np.ndarray) and v.ndim else float(v)


def _make_case(rng, name, family, geo):
    """One case as written to the file, with its unrounded errors and solver deviations."""
    params, inputs = _case_inputs(rng, family, geo)
    kl_name = kl_potential_name(geo.d)
    spec = {"family": name, "params": params, "inputs": inputs, "kl_potential": kl_name}
    ref = compute_outputs(spec)
    err = _errors(spec, ref)
    loose = {}
    for tol in SOLVER_SENSITIVITY_TOLS:
        out = compute_outputs(spec, tol, tol, quantities=SOLVED_QUANTITIES)
        loose[tol] = {q: _max_abs(out[q], ref[q]) for q in SOLVED_QUANTITIES}
    case = {"description": f"{name}, K = {geo.k}, D = {geo.d}" + (f"; {geo.note}" * bool(geo.note)),
            "n_particles": geo.k, "dim": geo.d,
            "psi": {"family": name, "params": {n: _jsonable(v) for n, v in params.items()},
                    "trainable": list(family.trainable_params)},
            "inputs": {n: _jsonable(v) for n, v in inputs.items()},
            "kl_potential": kl_name,
            "reference": {q: _jsonable(v) for q, v in ref.items()},
            "reference_error": {q: None if e is None else _round(e) for q, e in err.items()}}
    rel = {q: None if e is None else e / max(float(np.max(np.abs(flatten(ref[q])))), 1e-300)
           for q, e in err.items()}
    return case, err, rel, loose


def _summary(errors, method):
    """``reference_accuracy`` of one quantity from its per-case (abs, rel) errors."""
    if any(e is None for e, _ in errors):
        return {"max_abs_error": None, "max_rel_error": None,
                "method": "not measured: np.longdouble is not wider than float64 here"}
    return {"max_abs_error": _round(max(e for e, _ in errors)),
            "max_rel_error": _round(max(r for _, r in errors)), "method": method}


def canonical(value):
    """The canonical JSON text of a parsed JSON value (what the digest hashes).

    NaN and infinities (never in a file refimpl writes) come out as JSON's
    extensions, so an edited file that holds them still gets a digest.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest_parts(golden):
    """SHA-256 of each part of a parsed golden file: every top-level entry but
    ``digest`` and ``cases``, and each case as ``cases/<case_id>``."""
    parts = {key: canonical(value) for key, value in golden.items()
             if key not in ("digest", "cases")}
    parts.update({f"cases/{cid}": canonical(case) for cid, case in golden["cases"].items()})
    return {key: hashlib.sha256(text.encode("ascii")).hexdigest() for key, text in parts.items()}


DIGEST_METHOD = ("sha256 of each part's canonical JSON (as parsed: keys sorted, separators "
                 "',' and ':', floats as Python's repr, ASCII): every top-level entry but "
                 "'digest' and 'cases', and each case as 'cases/<case_id>'. refimpl verify "
                 "refuses a golden file whose parts no longer match (--allow-edited-golden "
                 "overrides).")


def generate(small=False):
    """The golden vectors as a JSON-ready dict (deterministic), with their digest."""
    rng = np.random.default_rng(SEED)
    cases, errors = {}, {q: [] for q in QUANTITIES}
    sensitivity = {tol: dict.fromkeys(SOLVED_QUANTITIES, 0.0) for tol in SOLVER_SENSITIVITY_TOLS}
    for name, family in FAMILIES.items():
        for geo in SMALL if small else FULL:
            case, err, rel, loose = _make_case(rng, name, family, geo)
            cases[f"{family.prefix}_{geo.name}"] = case
            for q in QUANTITIES:
                errors[q].append((err[q], rel[q]))
            for tol, dev in loose.items():
                for q, e in dev.items():
                    sensitivity[tol][q] = max(sensitivity[tol][q], e)
    methods = {q: f"|reference - refimpl's solve at rtol = atol = {CHECK_TOL:g}|"
               if q in SOLVED_QUANTITIES else
               "|reference - extended-precision (np.longdouble) evaluation of the formula|"
               for q in QUANTITIES}
    for q in GRADIENT_QUANTITIES:
        methods[q] = (f"|reference - refimpl's discrete adjoint of its solve at rtol = atol = "
                      f"{CHECK_TOL:g}|; both approach the exact gradient, and tests check the "
                      "references against central differences of scipy DOP853 solves")
    golden = {
        "schema_version": SCHEMA_VERSION,
        "title": "refimpl golden vectors: equivariant continuous normalizing flows "
                 "(Koehler, Klein, Noe)",
        "generator": f"refimpl {__version__}: refimpl vectors{' --small' * small}, seed {SEED}",
        "how_to_use": "For each case, rebuild psi from psi.family and psi.params (formula in "
                      "psi_families), evaluate the quantities on the case's inputs, and either "
                      "call refimpl.verify.check_implementation(golden_path, your_function) "
                      "(your_function(case) -> {quantity: value}) or write them as "
                      "{\"cases\": {case_id: {quantity: value}}} (JSON) or as arrays named "
                      "'<case_id>/<quantity>' ('<case_id>/<quantity>/<name>' for a gradient) "
                      "(.npz), and run: refimpl verify GOLDEN THEIRS. Quantities you leave out "
                      "are reported as not provided.",
        "conventions": CONVENTIONS,
        "quantities": {q: {"shape": s, "inputs": i, "meaning": m}
                       for q, (s, i, m) in QUANTITIES.items()},
        "psi_families": {n: f.formula for n, f in FAMILIES.items()},
        "energy": ENERGY,
        "lennard_jones": LENNARD_JONES,
        "reference_solver": {
            "method": "Dormand-Prince 5(4), adaptive (scipy RK45 controller), error norm over "
                      "the augmented state [x, l]; gradients by the discrete adjoint of the "
                      "same solve",
            "rtol": REFERENCE_TOL, "atol": REFERENCE_TOL},
        "recommended_solver_tolerance": {"rtol": RECOMMENDED_TOL, "atol": RECOMMENDED_TOL},
        "thresholds": THRESHOLDS,
        "threshold_reasons": THRESHOLD_REASONS,
        "comparison": COMPARISON,
        "reference_accuracy": {q: _summary(errors[q], methods[q]) for q in QUANTITIES},
        "solver_sensitivity": {
            "meaning": "max over cases of |refimpl's solve at rtol = atol = tol - reference|",
            **{f"{tol:g}": {q: _round(e) for q, e in s.items()} for tol, s in sensitivity.items()}},
        "cases": cases,
    }
    parsed = json.loads(dumps(golden))  # digest what a reader parses
    golden["digest"] = {"method": DIGEST_METHOD, "parts": digest_parts(parsed)}
    return golden


def dumps(obj, indent=0):
    """JSON text: objects indented, numeric rows on one line, floats as repr."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f"{pad}  {json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"
    if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
        rows = [f"{pad}  {dumps(v, indent + 2)}" for v in obj]
        return "[\n" + ",\n".join(rows) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def write_vectors(path, small=False):
    """Generate the vectors and write them to ``path`` atomically (``refimpl.files``);
    return the dict."""
    _check_writable_path(path)  # before the seconds of generation
    golden = generate(small)
    write_text(path, dumps(golden) + "\n")
    return golden


def _check_writable_path(path):
    """``OSError`` now if ``path`` is a folder or lies under a file (cannot be written)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", path)
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder", path)
