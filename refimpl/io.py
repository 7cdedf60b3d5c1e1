"""Saving and loading trained models as one ``.npz`` (no pickles).

A model file holds plain named arrays, written atomically and read with the
checks of ``refimpl.files`` (no pickles; every member's dtype and size
checked before anything is allocated):

``format``, ``version``
    ``"refimpl-model"`` and ``1``.
``kind``
    ``"equivariant_flow"`` or ``"realnvp"``.
equivariant flow
    ``psi_family`` (a name in ``refimpl.families.FAMILIES``), ``psi_theta`` (the
    family's full parameter vector), ``t0``, ``t1``, ``rtol``, ``atol``,
    ``max_steps``, ``n_particles``, ``dim`` (``-1`` where unset).
RealNVP
    ``n_particles``, ``dim``, ``n_layers``, ``hidden``, ``init_scale``,
    ``scale_clamp``, ``params``.
potential (optional)
    ``potential_kind`` (``"none"``, ``"DoubleWell"`` or ``"LennardJones"``),
    ``potential_values`` (its numbers in the constructor's order after
    ``n_particles, dim``) and ``potential_pairs``.

Anything truncated, corrupted, of another format or version, or
inconsistent raises ``refimpl.files.FileFormatError`` (a ``ValueError``)
naming the file and the field.
"""

import numpy as np

from ._validate import MAX_STEPS_LIMIT
from .families import FAMILIES
from .files import FileFormatError, read_npz, save_npz
from .flow import EquivariantFlow
from .grad import FlowModel
from .potentials import DoubleWell, LennardJones
from .realnvp import RealNVP, n_coupling_params

MODEL_FORMAT = "refimpl-model"
MODEL_VERSION = 1
# The fields a model file may hold and the dtype kinds of each (files.read_npz).
_FIELDS = {
    "format": "U", "version": "iu", "kind": "U", "psi_family": "U", "psi_theta": "iuf",
    "t0": "iuf", "t1": "iuf", "rtol": "iuf", "atol": "iuf", "max_steps": "iu",
    "n_particles": "iu", "dim": "iu", "n_layers": "iu", "hidden": "iu", "init_scale": "iuf",
    "scale_clamp": "iuf", "params": "iuf", "potential_kind": "U", "potential_values": "iuf",
    "potential_pairs": "U", "potential_size": "iu",
}
_POTENTIAL_FIELDS = {
    "DoubleWell": ("a", "b", "c", "d0", "temperature"),
    "LennardJones": ("epsilon", "r_m", "tether", "temperature"),
}


def save_model(path, model, potential=None, params=None):
    """Write ``model`` (an ``EquivariantFlow``, ``FlowModel`` or ``RealNVP``) to ``path``.

    ``params`` replaces the model's own trainable parameters (e.g. the result
    of ``refimpl.train.train``). ``potential`` (``DoubleWell`` or
    ``LennardJones``) is stored alongside.
    """
    if isinstance(model, FlowModel):
        model = model.flow if params is None else model.with_params(params)
        params = None
    arrays = {"format": np.array(MODEL_FORMAT), "version": np.array(MODEL_VERSION)}
    if isinstance(model, EquivariantFlow):
        if params is not None:
            model = FlowModel(model).with_params(params)
        family = type(model.psi).__name__
        if family not in FAMILIES or FAMILIES[family].cls is not type(model.psi):
            raise TypeError(f"only {sorted(FAMILIES)} psi families can be saved, got {family}")
        arrays.update(kind=np.array("equivariant_flow"), psi_family=np.array(family),
                      psi_theta=model.psi.theta, t0=np.array(model.t0), t1=np.array(model.t1),
                      rtol=np.array(model.rtol), atol=np.array(model.atol),
                      max_steps=np.array(model.max_steps),
                      n_particles=np.array(-1 if model.n_particles is None else model.n_particles),
                      dim=np.array(-1 if model.dim is None else model.dim))
    elif isinstance(model, RealNVP):
        p = model.params if params is None else np.asarray(params, dtype=np.float64)
        if p.shape != (model.n_params,):
            raise ValueError(f"params must have shape ({model.n_params},), got {p.shape}")
        arrays.update(kind=np.array("realnvp"), n_particles=np.array(model.n_particles),
                      dim=np.array(model.dim), n_layers=np.array(model.n_layers),
                      hidden=np.array(model.hidden), init_scale=np.array(model.init_scale),
                      scale_clamp=np.array(model.scale_clamp), params=p)
    else:
        raise TypeError(f"model must be an EquivariantFlow, FlowModel or RealNVP; cannot save a "
                        f"{type(model).__name__}")
    arrays.update(_potential_arrays(potential))
    save_npz(path, arrays)


def _potential_arrays(potential):
    if potential is None:
        return {"potential_kind": np.array("none"), "potential_values": np.zeros(0),
                "potential_pairs": np.array(""), "potential_size": np.zeros(2, dtype=np.int64)}
    kind = type(potential).__name__
    if kind not in _POTENTIAL_FIELDS:
        raise TypeError(f"only {sorted(_POTENTIAL_FIELDS)} potentials can be saved, got {kind}")
    values = [float(getattr(potential, f)) for f in _POTENTIAL_FIELDS[kind]]
    return {"potential_kind": np.array(kind), "potential_values": np.array(values),
            "potential_pairs": np.array(getattr(potential, "pairs", "")),
            "potential_size": np.array([potential.n_particles, potential.dim])}


def load_model(path):
    """Read a model file; returns ``(model, potential)``.

    ``model`` is an ``EquivariantFlow`` (its psi carries the trained
    parameters) or a ``RealNVP`` whose ``params`` are the saved ones;
    ``potential`` is ``None`` if none was saved. Every field is checked
    (dtype, shape, range) before anything is built from it; errors are
    ``FileFormatError`` (a ``ValueError``) naming the file and the field.
    """
    f = read_npz(path, "refimpl model file", fields=_FIELDS, file_format=(MODEL_FORMAT,
                                                                          MODEL_VERSION),
                 required=["kind", "potential_kind"])
    kind = f.string("kind")
    try:
        if kind == "equivariant_flow":
            family = f.string("psi_family")
            if family not in FAMILIES:
                raise FileFormatError(f"{f.path}: field 'psi_family' is {family!r}; known: "
                                      f"{', '.join(sorted(FAMILIES))}")
            psi = FAMILIES[family].cls.from_theta(f.floats("psi_theta", ndim=1))
            if hasattr(psi, "check_ranges"):  # from_theta leaves ranges to the caller
                psi.check_ranges()
            k, d = f.integer("n_particles", minimum=-1), f.integer("dim", minimum=-1)
            model = EquivariantFlow(psi, *(f.real(name) for name in ("t0", "t1", "rtol", "atol")),
                                    f.integer("max_steps", minimum=1, maximum=MAX_STEPS_LIMIT),
                                    n_particles=None if k < 0 else k, dim=None if d < 0 else d)
        elif kind == "realnvp":
            k, d = f.integer("n_particles", minimum=2), f.integer("dim", minimum=1)
            n_layers = f.integer("n_layers", minimum=1)
            hidden = tuple(int(h) for h in f.integers("hidden", minimum=1))
            params = f.floats("params", ndim=1)
            # Check the size before building: the basis alone is (K D)^2 numbers.
            need = n_coupling_params((k - 1) * d, n_layers, hidden)
            if params.size != need:
                raise FileFormatError(f"{f.path}: field 'params' holds {params.size} numbers; "
                                      f"n_particles={k}, dim={d}, n_layers={n_layers}, "
                                      f"hidden={hidden} need {need}")
            model = RealNVP(k, d, n_layers=n_layers, hidden=hidden,
                            init_scale=f.real("init_scale"),
                            scale_clamp=f.real("scale_clamp"))
            model.params = params
        else:
            raise FileFormatError(f"{f.path}: field 'kind' is {kind!r}; expected "
                                  "'equivariant_flow' or 'realnvp'")
        return model, _load_potential(f)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        raise FileFormatError(message if message.startswith(f.path) else f"{f.path}: {message}") \
            from None


def _load_potential(f):
    kind = f.string("potential_kind")
    if kind == "none":
        return None
    if kind not in _POTENTIAL_FIELDS:
        raise FileFormatError(f"{f.path}: field 'potential_kind' is {kind!r}; known: none, "
                              f"{', '.join(sorted(_POTENTIAL_FIELDS))}")
    names = _POTENTIAL_FIELDS[kind]
    values = f.floats("potential_values", shape=(len(names),))
    size = f.integers("potential_size", minimum=1, shape=(2,))
    settings = dict(zip(names, (float(v) for v in values)))
    if kind == "DoubleWell":
        settings["pairs"] = f.string("potential_pairs")
        return DoubleWell(int(size[0]), int(size[1]), **settings)
    return LennardJones(int(size[0]), int(size[1]), **settings)
