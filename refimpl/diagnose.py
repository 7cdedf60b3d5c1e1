"""Name the known convention error behind a failing quantity of ``refimpl verify``.

Each known mistake is a *model*: what a correct implementation with exactly
that mistake would output for a case, computed from the case and its
reference values (or, for some, by refimpl re-solving with the mistake).
A mistake fits a failing quantity when the outputs agree with its model
within the quantity's threshold in every case; the report then names it and
the fix. The mistakes (README "Verify your implementation"):

* divergence with the paper's eq. 4 j = i terms: ``+ D K psi(0, t)``;
* an unnormalized prior (bgflow's): log-densities off by ``((K-1) D / 2) log 2 pi``
  (or normalized in ``K D`` dimensions instead of ``(K-1) D``);
* unordered instead of ordered pairs (or the reverse): energies off by a factor 2;
* log-determinants with the wrong sign or direction, in log-densities and losses;
* gradients with the wrong sign;
* the flow over ``[0, 1]`` instead of the case's ``[t0, t1]``;
* a regularized distance ``sqrt(r^2 + eps)`` (visible at the near-coincident pair);
* float32 arithmetic (direct quantities deviating from the reference no more than
  refimpl's own float32 evaluation of the formula does, within a factor
  ``FLOAT32_FACTOR``; a formula error of that size is indistinguishable and
  the message says so);
* bgflow's own approximate divergence (expected from bgflow, not a mistake).
"""

import math

import numpy as np

from . import vectors
from .families import FAMILIES
from .flow import EquivariantFlow
from .verify import allowed_deviation, case_spec, deviation

FLOAT32_EPS = float(np.finfo(np.float32).eps)
# A float32 implementation's rounding differs from refimpl's float32 evaluation
# by its own order of operations: allow this factor on the deviation of the
# latter (README: 1x for the NumPy example in float32; a relative error of 1e-5
# in a parameter gives 8x to 18x on the small set).
FLOAT32_FACTOR = 4.0
# Regularizations tried for the "regularized distance" mistake.
DISTANCE_EPSILONS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4)


def _psi0(case):
    family = FAMILIES[case["psi"]["family"]]
    return float(family.numpy(case["psi"]["params"], np.zeros(1), case["inputs"]["t"])[0][0])


def _prior_constant(case):
    k, d = case["shape"]
    return 0.5 * (k - 1) * d * math.log(2 * math.pi)


class _Context:
    """Per-case numbers the mistake models share, computed once and only if needed."""

    def __init__(self, golden):
        self.golden = golden
        self._cache = {}

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def batch_terms(self, cid):
        """Mean inverse log-det over x_batch, mean forward log-det and energy over z_batch."""
        def make():
            case = self.golden["cases"][cid]
            inp = case["inputs"]
            psi = FAMILIES[case["psi"]["family"]].build(case["psi"]["params"])
            tol = vectors.REFERENCE_TOL
            flow = EquivariantFlow(psi, inp["t0"], inp["t1"], tol, tol, vectors.MAX_STEPS)
            _, ild = flow.inverse(inp["x_batch"])
            x, fld = flow.forward(inp["z_batch"])
            energy = vectors.potential(self.golden[case["kl_potential"]], *case["shape"])
            return {"ild": float(np.mean(ild)), "fld": float(np.mean(fld)),
                    "u": float(np.mean(energy.energy(x)))}
        return self._get(("batch", cid), make)

    def recomputed(self, cid, q, variant):
        """refimpl's value of ``q`` with ``variant`` applied to the case."""
        def make():
            spec = case_spec(self.golden, cid)
            spec["inputs"] = dict(spec["inputs"])
            potentials = {"energy": dict(self.golden["energy"]),
                          "lennard_jones": dict(self.golden["lennard_jones"])}
            if variant == "unit_time":
                spec["inputs"].update(t0=0.0, t1=1.0)
            else:  # ("energy_factor", f): the KL energy multiplied by f
                key = self.golden["cases"][cid]["kl_potential"]
                potentials[key]["temperature"] = potentials[key]["temperature"] / variant[1]
            return vectors.compute_outputs(spec, energy=potentials["energy"],
                                           lennard_jones=potentials["lennard_jones"],
                                           quantities=[q])[q]
        return self._get(("recomputed", cid, q, variant), make)

    def regularized(self, cid, eps, dtype=np.float64):
        def make():
            with np.errstate(over="ignore", invalid="ignore"):  # float32 LJ at a close pair
                out = vectors.direct_quantities(case_spec(self.golden, cid), dtype, eps,
                                                self.golden["energy"],
                                                self.golden["lennard_jones"])
            return {q: np.asarray(v, dtype=np.float64) for q, v in out.items()}
        return self._get(("regularized", cid, eps, np.dtype(dtype).name), make)

    def float32(self, cid):
        """The direct quantities evaluated in float32 (refimpl's formulas, inputs rounded)."""
        return self.regularized(cid, 0.0, np.float32)


def _kl_potential(ctx, cid):
    return ctx.golden[ctx.golden["cases"][cid]["kl_potential"]]["potential"]


def _scaled(ref, factor):
    if isinstance(ref, dict):
        return {n: factor * v for n, v in ref.items()}
    return factor * ref


def _unit_time(ctx, cid, q, ref):
    inp = ctx.golden["cases"][cid]["inputs"]
    if (inp["t0"], inp["t1"]) == (0.0, 1.0):
        return ref  # the mistake changes nothing here
    return ctx.recomputed(cid, q, "unit_time")


def _bgflow_divergence(ctx, cid, q, ref):
    case = ctx.golden["cases"][cid]
    if case["psi"]["family"] != "BgflowKernel":
        return ref
    psi = FAMILIES["BgflowKernel"].build(case["psi"]["params"])
    return float(psi.bgflow_divergence(case["inputs"]["x"], case["inputs"]["t"]))


# (name, quantities, model(ctx, case_id, quantity, reference) -> mistaken value, message)
MISTAKES = [
    ("bgflow's divergence", ("divergence",), _bgflow_divergence,
     "equals bgflow's own divergence in the BgflowKernel cases: an approximation "
     "(refimpl/bgflow_kernel.py), expected from bgflow; the golden value is the exact "
     "divergence of bgflow's field"),
    ("j = i terms", ("divergence",),
     lambda ctx, cid, q, ref: ref + np.prod(ctx.golden["cases"][cid]["shape"])
     * _psi0(ctx.golden["cases"][cid]),
     "off by exactly D K psi(0, t): the divergence includes the j = i terms of the paper's "
     "eq. 4. Sum over j != i only"),
    ("unnormalized prior", ("log_prob", "kl_loss", "ml_loss"),
     lambda ctx, cid, q, ref: ref + (-1 if q == "ml_loss" else 1)
     * _prior_constant(ctx.golden["cases"][cid]),
     "off by exactly ((K-1) D / 2) log(2 pi): the prior is unnormalized (as bgflow's "
     "MeanFreeNormalDistribution). Add -((K-1) D / 2) log(2 pi) to log q_Z"),
    ("prior in K D dimensions", ("log_prob", "kl_loss", "ml_loss"),
     lambda ctx, cid, q, ref: ref - (-1 if q == "ml_loss" else 1)
     * 0.5 * ctx.golden["cases"][cid]["shape"][1] * math.log(2 * math.pi),
     "off by exactly (D / 2) log(2 pi): the prior is normalized in K D dimensions; the "
     "mean-free density lives in (K-1) D, so its constant is -((K-1) D / 2) log(2 pi)"),
    ("unordered pairs", ("energy", "force"),
     lambda ctx, cid, q, ref: 0.5 * ref,
     "exactly half of the reference: the energy sums unordered pairs i < j (as bgflow's "
     "MultiDoubleWellPotential); this DoubleWell sums ordered pairs i != j. Multiply by 2"),
    ("ordered pairs", ("lj_energy", "lj_force"),
     lambda ctx, cid, q, ref: 2.0 * ref,
     "exactly twice the reference: the Lennard-Jones energy sums ordered pairs i != j; it "
     "sums unordered pairs i < j. Divide by 2"),
    ("log-det sign", ("forward_logdet", "inverse_logdet"),
     lambda ctx, cid, q, ref: -ref,
     "the negative of the reference: the log-det's sign or direction is flipped. "
     "forward_logdet = log|det dx/dz| = -l(t1) with dl/dt = -div g; inverse_logdet = "
     "log|det dz/dx|"),
    ("log-det sign in log_prob", ("log_prob",),
     lambda ctx, cid, q, ref: ref - 2 * ctx.golden["cases"][cid]["reference"]["inverse_logdet"],
     "equals log q_Z(z) - inverse_logdet: the log-det enters with the wrong sign. "
     "log q_X(x) = log q_Z(z) + log|det dz/dx|"),
    ("log-det sign in ml_loss", ("ml_loss",),
     lambda ctx, cid, q, ref: ref + 2 * ctx.batch_terms(cid)["ild"],
     "equals the ML loss with log q_X(x) = log q_Z(z) - log|det dz/dx|: the log-det enters "
     "with the wrong sign"),
    ("log-det sign in kl_loss", ("kl_loss",),
     lambda ctx, cid, q, ref: ref + 2 * ctx.batch_terms(cid)["fld"],
     "equals the KL loss with log q_X(F(z)) = log q_Z(z) + log|det dF/dz|: the log-det "
     "enters with the wrong sign (it is log q_Z(z) - log|det dF/dz|)"),
    ("KL energy halved", ("kl_loss",),
     lambda ctx, cid, q, ref: ref - 0.5 * ctx.batch_terms(cid)["u"]
     if _kl_potential(ctx, cid) == "DoubleWell" else ref,
     "equals the KL loss with half the DoubleWell energy: unordered instead of ordered pairs "
     "(or T doubled)"),
    ("KL energy doubled", ("kl_loss",),
     lambda ctx, cid, q, ref: ref + ctx.batch_terms(cid)["u"]
     if _kl_potential(ctx, cid) == "LennardJones" else ref,
     "equals the KL loss with twice the Lennard-Jones energy: ordered instead of unordered "
     "pairs (or T halved)"),
    ("KL gradient, energy halved", ("kl_grad",),
     lambda ctx, cid, q, ref: ctx.recomputed(cid, q, ("energy_factor", 0.5))
     if _kl_potential(ctx, cid) == "DoubleWell" else ref,
     "equals the KL gradient with half the DoubleWell energy: unordered instead of ordered "
     "pairs (or T doubled)"),
    ("KL gradient, energy doubled", ("kl_grad",),
     lambda ctx, cid, q, ref: ctx.recomputed(cid, q, ("energy_factor", 2.0))
     if _kl_potential(ctx, cid) == "LennardJones" else ref,
     "equals the KL gradient with twice the Lennard-Jones energy: ordered instead of "
     "unordered pairs (or T halved)"),
    ("gradient sign", ("ml_grad", "kl_grad"),
     lambda ctx, cid, q, ref: _scaled(ref, -1.0),
     "the negative of the reference gradient: d loss / d p, not its negative"),
    ("time interval", vectors.SOLVED_QUANTITIES, _unit_time,
     "equals the flow over [0, 1]: the case's time interval is [t0, t1] (inputs t0, t1), "
     "not always [0, 1]"),
]


def _fits(ctx, result, model):
    """True if the outputs match ``model`` within the threshold in every case."""
    golden, q = ctx.golden, result.quantity
    for cid, case in golden["cases"].items():
        ref = case["reference"][q]
        mistaken = model(ctx, cid, q, ref)
        theirs = ctx.outputs[cid][q]
        if deviation(theirs, mistaken) > allowed_deviation(result.rtol, result.atol, ref):
            return False
    return True


def _regularized(ctx, result):
    q = result.quantity
    if q not in vectors.DIRECT_QUANTITIES:
        return None
    for eps in DISTANCE_EPSILONS:
        if all(deviation(ctx.outputs[cid][q], ctx.regularized(cid, eps)[q])
               <= allowed_deviation(result.rtol, result.atol, case["reference"][q])
               for cid, case in ctx.golden["cases"].items()):
            return (f"matches a regularized distance d = sqrt(r^2 + {eps:g}) used for every "
                    "pair distance r: use the exact r (the near-coincident-pair cases expose it)")
    close = {cid for cid, case in ctx.golden["cases"].items() if _has_close_pair(case)}
    if close and set(result.failed) == close:
        return ("fails exactly in the cases with a near-coincident pair (r = 1e-4): a "
                "regularized or clamped distance (sqrt(r^2 + eps), max(r, eps)) or an unstable "
                "unit vector; use the exact r")
    return None


def _has_close_pair(case):
    x = np.asarray(case["inputs"]["x"])
    i, j = np.triu_indices(x.shape[0], 1)
    return bool(np.min(np.linalg.norm(x[i] - x[j], axis=-1)) < 10 * vectors.NEAR_DISTANCE)


def _float32(ctx, result):
    """float32 rounding: in every case without a close pair (there float32 loses more,
    the difference of two close coordinates), the outputs deviate from the reference by
    at least float32 rounding and at most FLOAT32_FACTOR times as much as refimpl's own
    float32 evaluation of the formula does. Solved quantities have no float32
    evaluation here, so they are never diagnosed as float32."""
    q = result.quantity
    if q not in vectors.DIRECT_QUANTITIES:
        return None  # a solve's deviation of that size more likely means a loose tolerance
    ratios, rel = [], []
    for cid, case in ctx.golden["cases"].items():
        single = ctx.float32(cid)[q]
        if _has_close_pair(case) or not np.all(np.isfinite(single)):
            continue
        ref = case["reference"][q]
        scale = max(float(np.max(np.abs(ref))), np.finfo(float).tiny)
        ours = deviation(ctx.outputs[cid][q], ref)
        rounding = max(deviation(single, ref), FLOAT32_EPS * scale)  # float32's own error
        if ours < FLOAT32_EPS / 10 * scale:
            return None  # far below float32 rounding: something else
        ratios.append(ours / rounding)
        rel.append(ours / scale)
    if not ratios or max(ratios) > FLOAT32_FACTOR:
        return None
    return (f"deviations of {min(rel):.1e} to {max(rel):.1e} relative (away from close pairs), "
            f"at most {max(ratios):.1f} x those of refimpl's own float32 evaluation: float32 "
            "rounding (or a formula error no larger than it). Compute in float64 (e.g. a "
            "float64 copy of the model)")


def diagnose(golden, outputs, result):
    """Messages naming the known mistakes that explain the failing ``result``."""
    ctx = _Context(golden)
    ctx.outputs = outputs
    found = []
    for name, quantities, model, message in MISTAKES:
        if result.quantity in quantities and _fits(ctx, result, model):
            found.append(f"{name}: {message}")
    if not found:
        hint = _regularized(ctx, result)
        found += [f"regularized distance: {hint}"] if hint else []
    if not found:
        hint = _float32(ctx, result)
        found += [f"float32: {hint}"] if hint else []
    return found
