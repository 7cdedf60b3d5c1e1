"""Scalar functions ``psi(r, t)`` of a pair distance that drive the flow.

The dynamics (paper eq. 3, section 3.4) move particle ``i`` along ``sum_j psi(r_ij, t)
(x_i - x_j)``; any C^2 function of the distance (and time) gives an
equivariant field. This module defines how a psi family plugs into the Numba
kernels, and ships two families.

The psi protocol
----------------
A psi object has

``theta``
    1-D C-contiguous float64 array holding *all* its numbers (layout chosen
    by the family; it may start with integer sizes stored as floats).
``ctx_size``
    length of a scratch array the kernels allocate per sample.
``prepare``
    Numba function compiled with ``PREPARE_SIG``, ``prepare(theta, t, ctx)``:
    everything that depends on ``t`` only, computed once per evaluation of
    the field and stored in ``ctx``.
``pair``
    Numba function compiled with ``PAIR_SIG``, ``pair(theta, ctx, r) ->
    (psi, dpsi_dr)``: the value and radial derivative at one distance.

The kernels receive ``prepare`` and ``pair`` as first-class functions of
those fixed signatures, so a new family (yours included) needs no change to
the kernels and does not force them to recompile: compile your two functions
with ``@njit(PREPARE_SIG, cache=True)`` and ``@njit(PAIR_SIG, cache=True)``
and subclass ``Psi``. ``tests/test_psi.py`` has a complete example. An
exception your functions raise inside a kernel is raised by the refimpl call
that ran it, and that call's results are discarded (Numba's C wrappers
cannot pass it on: ``_intrinsics.call_kernel``).

Gradients (``refimpl.grad``) need four more members:

``pair2``
    ``PAIR2_SIG``: ``pair2(theta, ctx, r) -> (psi, dpsi_dr, d2psi_dr2)``.
``pair_vjp``
    ``PAIR_VJP_SIG``: ``pair_vjp(theta, ctx, r, g_psi, g_dpsi, ctx_bar,
    theta_bar)`` adds ``g_psi d psi + g_dpsi d (dpsi/dr)`` with respect to
    ``ctx`` into ``ctx_bar`` and with respect to ``theta`` (where ``theta``
    enters directly) into ``theta_bar``.
``prepare_vjp``
    ``PREPARE_VJP_SIG``: ``prepare_vjp(theta, t, ctx, ctx_bar, theta_bar)``
    adds ``ctx_bar`` pulled back through ``prepare`` into ``theta_bar``.
``trainable``
    int64 indices of the entries of ``theta`` that are parameters (the
    rest, such as sizes and fixed centres, get no gradient).
``differentiable`` (optional)
    the indices whose gradient the family's pullbacks compute; ``trainable``
    must lie within them (the built-in families set it to their default
    ``trainable``: a layout entry made trainable would be overwritten by
    an optimizer and get no gradient).

A family with ``from_theta`` may define ``check_ranges()``; ``check_psi``
calls it whenever the psi is used (the built-in families bound their
parameters by ``MAX_PARAMETER`` = 1e100, beyond which fields overflow).

Families: ``refimpl.rbf.RBFKernel``, ``refimpl.mlp.TanhMLP`` and
``refimpl.bgflow_kernel.BgflowKernel`` (bgflow's ``KernelDynamics``).
"""

import weakref

import numpy as np
from numba import njit, types
from numba.core.registry import CPUDispatcher

try:  # private to Numba (0.68 has it); see ``compiled`` for what happens without it
    from numba.experimental.function_type import _get_wrapper_address
except ImportError:  # pragma: no cover - depends on the installed Numba
    _get_wrapper_address = None

from ._intrinsics import call_kernel
from ._validate import as_float_array, as_positive_int, as_time

_vec = types.float64[::1]
PREPARE_SIG = types.void(_vec, types.float64, _vec)
PAIR_SIG = types.UniTuple(types.float64, 2)(_vec, _vec, types.float64)
PAIR2_SIG = types.UniTuple(types.float64, 3)(_vec, _vec, types.float64)
PAIR_VJP_SIG = types.void(_vec, _vec, types.float64, types.float64, types.float64, _vec, _vec)
PREPARE_VJP_SIG = types.void(_vec, types.float64, _vec, _vec, _vec)
PREPARE_TYPE = types.FunctionType(PREPARE_SIG)
PAIR_TYPE = types.FunctionType(PAIR_SIG)
PAIR2_TYPE = types.FunctionType(PAIR2_SIG)
PAIR_VJP_TYPE = types.FunctionType(PAIR_VJP_SIG)
PREPARE_VJP_TYPE = types.FunctionType(PREPARE_VJP_SIG)


@njit(cache=True)
def _psi_values(prepare, pair, theta, ctx_size, r, t, out_psi, out_dpsi):
    ctx = np.empty(max(ctx_size, 1))
    prepare(theta, t, ctx)
    for i in range(r.shape[0]):
        out_psi[i], out_dpsi[i] = pair(theta, ctx, r[i])


class Psi:
    """Base class of psi families; see the module docstring for the protocol."""

    prepare = None
    pair = None
    pair2 = None
    pair_vjp = None
    prepare_vjp = None
    ctx_size = 0
    trainable = np.zeros(0, dtype=np.int64)

    def __init__(self, theta):
        self.theta = as_float_array(theta, "theta")
        if self.theta.ndim != 1:
            raise ValueError(f"theta must be 1-D, got shape {self.theta.shape}")

    def values(self, r, t):
        """``(psi(r, t), d psi / d r (r, t))`` for an array of distances ``r``."""
        r = as_float_array(r, "r")
        t = as_time(t)
        flat = np.ascontiguousarray(r.ravel())
        out_psi = np.empty_like(flat)
        out_dpsi = np.empty_like(flat)
        check_psi(self)
        call_kernel("_psi_values", _psi_values,
                    (compiled(self, "prepare"), compiled(self, "pair"), self.theta,
                     int(self.ctx_size), flat, t, out_psi, out_dpsi))
        return out_psi.reshape(r.shape), out_dpsi.reshape(r.shape)

    def __call__(self, r, t):
        """``psi(r, t)`` for an array of distances ``r`` at time ``t``."""
        return self.values(r, t)[0]

    def copy_with(self, theta):
        """The same family with new parameters ``theta`` (same layout).

        Families with ``from_theta`` are rebuilt through it, which checks the
        layout and recomputes derived entries.
        """
        theta = as_float_array(theta, "theta", shape=self.theta.shape)
        if hasattr(type(self), "from_theta"):
            return type(self).from_theta(theta)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.theta = theta.copy()
        return new


# Largest size of a psi parameter (a weight, output bias, RBF width gamma, ...)
# that check_psi accepts. Coordinates are within MAX_COORDINATE = 1e150, so
# pair separations and distances are below ~1e151; a family whose psi and
# r dpsi/dr are at most (number of terms) x 1e100 x O(1) then gives field
# terms psi (x_i - x_j) below ~1e251 x (terms), leaving a factor ~1e57 for
# the sums over terms and particles before float64 overflows (1.8e308). The
# same 1e100 bounds 1/width^2 of BgflowKernel (MIN_WIDTH = 1e-50). Beyond it
# (1e308, say) fields and divergences of finite input came out NaN or inf.
MAX_PARAMETER = 1e100


def check_parameter(values, name, limit=MAX_PARAMETER):
    """``ValueError`` naming ``name`` if an entry of ``values`` exceeds ``limit``
    in size (used by the families' ``check_ranges``, which ``check_psi`` calls)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and np.max(np.abs(values)) > limit:
        worst = float(values.flat[np.argmax(np.abs(values))])
        raise ValueError(f"{name} is out of range: it holds {worst:.4g}, beyond "
                         f"+-{limit:.0e}; psi parameters that large make the field overflow "
                         "float64 (refimpl.psi.MAX_PARAMETER): rescale the parameters")


# Written past ``ctx_size`` by the probe of ``_check_layout``; a family that
# changes them writes out of bounds.
_CANARY = -1.2345678901234567e300
_CANARY_SLOTS = 8


def _check_layout(psi):
    """Catch a ``theta``/``ctx_size`` that would make the kernels read or write
    out of bounds (they do not check indices).

    A family with ``from_theta`` is rebuilt from its ``theta``: that checks
    the header and length, recomputes derived entries (which must equal the
    stored ones: an edited ``theta`` may not leave them stale) and gives the
    ``ctx_size`` the kernels need, and its ``check_ranges`` (if any) bounds
    the parameters (``MAX_PARAMETER``). Other families are probed once per call:
    ``prepare`` and ``pair`` run on a scratch array with guard values past
    ``ctx_size``, which must survive (reads out of bounds cannot be seen).
    Returns the rebuilt psi (None for other families).
    """
    if hasattr(type(psi), "from_theta"):
        try:
            rebuilt = type(psi).from_theta(psi.theta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"psi.theta does not fit the {type(psi).__name__} layout: {exc}") \
                from None
        if not np.array_equal(rebuilt.theta, psi.theta):
            raise ValueError(f"psi.theta has derived entries that no longer match its "
                             f"parameters (was theta edited in place?); rebuild it with "
                             f"{type(psi).__name__}.from_theta")
        if int(psi.ctx_size) < int(rebuilt.ctx_size):
            raise ValueError(f"psi.ctx_size = {psi.ctx_size} is smaller than the "
                             f"{rebuilt.ctx_size} that {type(psi).__name__} needs")
        # from_theta skips the parameters' ranges (a theta vector may carry
        # gradients); a psi that is used must be within them
        if hasattr(rebuilt, "check_ranges"):
            rebuilt.check_ranges()
        return rebuilt
    ctx = np.full(int(psi.ctx_size) + _CANARY_SLOTS, _CANARY)
    psi.prepare(psi.theta, 0.0, ctx)
    psi.pair(psi.theta, ctx, 1.0)
    if np.any(ctx[int(psi.ctx_size):] != _CANARY):
        raise ValueError(f"psi writes past ctx_size = {psi.ctx_size}: its prepare/pair need "
                         "a larger ctx_size")


_SIGNATURES = {"prepare": PREPARE_SIG, "pair": PAIR_SIG, "pair2": PAIR2_SIG,
               "pair_vjp": PAIR_VJP_SIG, "prepare_vjp": PREPARE_VJP_SIG}


def family_function(member):
    """``@njit(<MEMBER>_SIG, cache=True)`` for the built-in families, compiled
    (or loaded from Numba's cache) when the kernels first need it
    (``compiled``) instead of at import: importing refimpl then compiles no
    family, a forward solve compiles no gradient functions, and a solve that
    runs on a specialized kernel (``_kernels.psi_mode``) compiles none.
    ``check_psi`` accepts such a function for its own member only."""
    def wrap(fn):
        dispatcher = njit(cache=True)(fn)
        dispatcher._psi_signature = _SIGNATURES[member]
        return dispatcher
    return wrap


def _members(gradients):
    return ["prepare", "pair"] + (["pair2", "pair_vjp", "prepare_vjp"] if gradients else [])


class _Args(tuple):
    """A signature's argument types, hashed once: the key of a dispatcher's
    ``overloads`` (Numba types recompute their hash on every lookup)."""

    def __new__(cls, args):
        new = super().__new__(cls, args)
        new._hash = hash(tuple(args))
        return new

    def __hash__(self):
        return self._hash


_ARGS = {attr: _Args(sig.args) for attr, sig in _SIGNATURES.items()}


def _overload(fn, attr):
    """The compile result of dispatcher ``fn`` for member ``attr``'s argument
    types (``None`` if there is none); ``recompile`` replaces it."""
    overloads = getattr(fn, "overloads", None)
    return overloads.get(_ARGS[attr]) if overloads is not None else None


def _is_family_function(fn, attr):
    """Whether ``fn`` is a built-in family's function for member ``attr``."""
    return isinstance(fn, CPUDispatcher) and getattr(fn, "_psi_signature", None) is \
        _SIGNATURES[attr]


def _require_compiled(fn, attr):
    """The compile result of ``fn`` for member ``attr``: a family function is
    compiled now if it was not yet; anything else must have been compiled with
    the member's signature, and return its type (``TypeError`` otherwise)."""
    sig = _SIGNATURES[attr]
    overload = _overload(fn, attr)
    if overload is None and _is_family_function(fn, attr):
        fn.compile(sig.args)
        overload = _overload(fn, attr)
    if not isinstance(fn, CPUDispatcher) or overload is None:
        raise TypeError(f"psi.{attr} must be a Numba function compiled with "
                        f"refimpl.psi.{attr.upper()}_SIG, i.e. @njit({attr.upper()}_SIG)")
    returns = overload.signature.return_type
    if returns != sig.return_type:
        raise TypeError(f"psi.{attr} returns {returns}, but refimpl.psi.{attr.upper()}_SIG "
                        f"requires {sig.return_type}: compile it with "
                        f"@njit({attr.upper()}_SIG)")
    return overload


_F8 = np.dtype(np.float64)


class Verdict:
    """What ``check_psi`` remembers of a psi that passed.

    It holds (``holds``) while everything the check looked at is unchanged:
    the bytes, shape and layout of ``theta``, ``ctx_size`` (with its type),
    the member functions themselves with their current machine code
    (``recompile`` replaces it) and, for a verdict with gradients,
    ``trainable``. A verdict with gradients also answers a check without.
    ``memo`` is for values derived from the psi as checked (the kernels keep
    their choice of kernel there); it goes with the verdict.
    """

    __slots__ = ("gradients", "_shape", "_bytes", "_ctx_type", "_ctx_size", "_members",
                 "_trainable", "memo")

    def __init__(self, psi, gradients):
        theta = psi.theta
        self.gradients = gradients
        self._shape = theta.shape
        self._bytes = theta.tobytes()
        self._ctx_type = type(psi.ctx_size)
        self._ctx_size = psi.ctx_size
        self._members = tuple((attr, getattr(psi, attr), _overload(getattr(psi, attr), attr))
                              for attr in _members(gradients))
        self._trainable = _index_key(psi.trainable) if gradients else None
        self.memo = {}

    def holds(self, psi, gradients):
        """Whether ``check_psi(psi, gradients)`` would pass again (and give this verdict)."""
        if gradients and not self.gradients:
            return False
        theta = getattr(psi, "theta", None)
        if not (type(theta) is np.ndarray and theta.dtype is _F8 and theta.shape == self._shape
                and theta.flags.c_contiguous and theta.tobytes() == self._bytes):
            return False
        ctx_size = getattr(psi, "ctx_size", None)
        if type(ctx_size) is not self._ctx_type or ctx_size != self._ctx_size:
            return False
        for attr, fn, overload in self._members:
            if getattr(psi, attr, None) is not fn or _overload(fn, attr) is not overload:
                return False
        return not self.gradients or _index_key(getattr(psi, "trainable", None)) == \
            self._trainable


def _index_key(trainable):
    idx = np.asarray(trainable)
    return idx.dtype.str, idx.shape, idx.tobytes()


def check_psi(psi, gradients=False):
    """Raise ``TypeError``/``ValueError`` unless ``psi`` follows the protocol;
    return its ``Verdict``.

    With ``gradients=True`` also require the members that gradients need.
    A psi that passed keeps its verdict (``psi._psi_checked``), so checking
    it again unchanged costs about a microsecond (a comparison of ``theta``'s
    bytes and of the members) instead of a rebuild; any change, in-place
    edits of ``theta`` included, is checked in full.
    """
    verdict = getattr(psi, "_psi_checked", None)
    if isinstance(verdict, Verdict) and verdict.holds(psi, gradients):
        return verdict
    _check_psi(psi, gradients)
    verdict = Verdict(psi, gradients)
    try:
        psi._psi_checked = verdict
    except AttributeError:  # a psi with __slots__: checked in full every time
        pass
    return verdict


def _check_psi(psi, gradients):
    members = _members(gradients)
    for attr in ["theta", "ctx_size"] + members + (["trainable"] if gradients else []):
        if getattr(psi, attr, None) is None:
            what = "the psi protocol" + (" with gradients" if gradients else "")
            raise TypeError(f"psi must follow {what} (refimpl.psi); it has no {attr!r}")
    for attr in members:
        fn = getattr(psi, attr)
        if not _is_family_function(fn, attr):  # those compile when first needed (``compiled``)
            _require_compiled(fn, attr)
    theta = psi.theta
    if not (isinstance(theta, np.ndarray) and theta.dtype == np.float64 and theta.ndim == 1
            and theta.flags.c_contiguous):
        raise TypeError("psi.theta must be a 1-D C-contiguous float64 array")
    if not np.all(np.isfinite(theta)):
        raise ValueError("psi.theta contains NaN or infinite values")
    as_positive_int(psi.ctx_size, "psi.ctx_size", minimum=0)
    rebuilt = _check_layout(psi)
    if gradients:
        idx = np.asarray(psi.trainable)
        if idx.dtype.kind not in "iu" or idx.ndim != 1 or (idx.size and (
                idx.min() < 0 or idx.max() >= theta.size or np.unique(idx).size != idx.size)):
            raise ValueError("psi.trainable must be distinct integer indices into psi.theta")
        # a family with from_theta says it for its theta, not for an attribute one may edit
        allowed = getattr(psi if rebuilt is None else rebuilt, "differentiable", None)
        if allowed is not None:
            outside = idx[~np.isin(idx, allowed)]
            if outside.size:
                raise ValueError(
                    f"psi.trainable includes theta entries {outside[:8].tolist()} that "
                    f"{type(psi).__name__} does not differentiate (layout, sizes, centres or "
                    "fixed widths); psi.differentiable lists the entries that may be trainable")


class _Compiled:
    """A psi function as the kernels' ``FunctionType`` argument, looked up once.

    Given the dispatcher itself, Numba finds its address on every call, and
    it types a ``WrapperAddressProtocol`` object by building its
    ``FunctionType`` anew: about 35 us per function argument, more than a
    small kernel takes. This object carries both, computed once (Numba reads
    ``_numba_type_`` when typing an argument and ``__wrapper_address__`` when
    passing it). It holds the compile result ``overload`` whose machine code
    the address points into, which keeps that code alive.
    """

    def __init__(self, fn, sig, overload):
        self._numba_type_ = types.FunctionType(sig)
        self._sig = sig
        self.overload = overload
        self._address = _get_wrapper_address(fn, sig)

    def __wrapper_address__(self):
        return self._address

    def signature(self):
        return self._sig


def function_argument(fn, sig):
    """Numba dispatcher ``fn``, compiled with signature ``sig``, as an argument
    of type ``types.FunctionType(sig)`` that is cheap to pass (a ``_Compiled``;
    the dispatcher itself where Numba lacks the private helper, as ``compiled``).
    Does not follow a later ``recompile`` of ``fn``: for the package's own kernels."""
    if _get_wrapper_address is None:
        return fn
    return _Compiled(fn, sig, fn.overloads[tuple(sig.args)])


# dispatcher -> {member name: _Compiled}; weak, so that a psi function
# nobody else holds (a family made in a loop) is not kept alive by the cache.
_COMPILED = weakref.WeakKeyDictionary()


def compiled(psi, attr):
    """``psi.<attr>`` (a member of the protocol) in the form the kernels take it.

    Call ``check_psi`` first: it makes sure the function was compiled with
    its signature, or is a built-in family's function (``family_function``),
    which is compiled here the first time. The handle is rebuilt whenever the dispatcher's compile
    result for that signature is no longer the one it was made from (after
    ``fn.recompile()``, say), so the kernels never call stale machine code.

    The fast handle rests on Numba's private
    ``numba.experimental.function_type._get_wrapper_address`` (present in
    the Numba that refimpl pins); should a Numba upgrade remove it, the
    dispatcher itself is returned, which the kernels accept as a first-class
    function too (same results, about 35 us more per call and function).
    """
    fn = getattr(psi, attr)
    overload = _overload(fn, attr)
    if overload is None:  # a family function that check_psi accepted uncompiled
        overload = _require_compiled(fn, attr)
    if _get_wrapper_address is None:
        return fn
    handles = _COMPILED.get(fn)
    if handles is None:
        handles = _COMPILED[fn] = {}
    handle = handles.get(attr)
    if handle is None or handle.overload is not overload:
        handle = handles[attr] = _Compiled(fn, _SIGNATURES[attr], overload)
    return handle
