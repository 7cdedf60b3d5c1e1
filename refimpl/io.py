"""Saving and loading trained models as one ``.npz`` (no pickles).

A model file holds plain named arrays, written atomically (temporary file,
then rename) and read with ``allow_pickle=False``:

``format``, ``version``
    ``"refimpl-model"`` and ``1``.
``kind``
    ``"equivariant_flow"`` or ``"realnvp"``.
equivariant flow
    ``psi_family`` (``"RBFKernel"``, ``"TanhMLP"`` or ``"BgflowKernel"``), ``psi_theta`` (the
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
inconsistent raises ``ValueError`` naming the file and the field.
"""

import numpy as np

from .bgflow_kernel import BgflowKernel
from .flow import EquivariantFlow
from .grad import FlowModel
from .mlp import TanhMLP
from .potentials import DoubleWell, LennardJones
from .rbf import RBFKernel
from .realnvp import RealNVP
from .train import atomic_savez, read_npz

MODEL_FORMAT = "refimpl-model"
MODEL_VERSION = 1
_FAMILIES = {"RBFKernel": RBFKernel, "TanhMLP": TanhMLP, "BgflowKernel": BgflowKernel}
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
        if family not in _FAMILIES:
            raise TypeError(f"only {sorted(_FAMILIES)} psi families can be saved, got {family}")
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
        raise TypeError(f"cannot save a {type(model).__name__}")
    arrays.update(_potential_arrays(potential))
    atomic_savez(path, arrays)


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
    ``potential`` is ``None`` if none was saved.
    """
    arrays = read_npz(path, MODEL_FORMAT, MODEL_VERSION, ["kind", "potential_kind"])
    kind = str(arrays["kind"])
    try:
        if kind == "equivariant_flow":
            family = str(_field(arrays, path, "psi_family"))
            if family not in _FAMILIES:
                raise ValueError(f"{path}: unknown psi family {family!r}")
            psi = _FAMILIES[family].from_theta(_field(arrays, path, "psi_theta"))
            k, d = (int(_field(arrays, path, f)) for f in ("n_particles", "dim"))
            model = EquivariantFlow(psi, *(float(_field(arrays, path, f)) for f in
                                           ("t0", "t1", "rtol", "atol")),
                                    int(_field(arrays, path, "max_steps")),
                                    n_particles=None if k < 0 else k, dim=None if d < 0 else d)
        elif kind == "realnvp":
            model = RealNVP(int(_field(arrays, path, "n_particles")),
                            int(_field(arrays, path, "dim")),
                            n_layers=int(_field(arrays, path, "n_layers")),
                            hidden=tuple(int(h) for h in _field(arrays, path, "hidden")),
                            init_scale=float(_field(arrays, path, "init_scale")),
                            scale_clamp=float(_field(arrays, path, "scale_clamp")))
            params = _field(arrays, path, "params")
            if params.shape != (model.n_params,):
                raise ValueError(f"{path}: params has shape {params.shape}, the architecture "
                                 f"needs ({model.n_params},)")
            model.params = params.astype(np.float64)
        else:
            raise ValueError(f"{path}: unknown model kind {kind!r}")
        return model, _load_potential(arrays, path)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") \
            from None


def _field(arrays, path, name):
    if name not in arrays:
        raise ValueError(f"{path} lacks the field {name!r}")
    return arrays[name]


def _load_potential(arrays, path):
    kind = str(arrays["potential_kind"])
    if kind == "none":
        return None
    if kind not in _POTENTIAL_FIELDS:
        raise ValueError(f"{path}: unknown potential kind {kind!r}")
    values = _field(arrays, path, "potential_values")
    names = _POTENTIAL_FIELDS[kind]
    if values.shape != (len(names),):
        raise ValueError(f"{path}: potential_values has shape {values.shape}, expected "
                         f"({len(names)},)")
    k, d = (int(v) for v in _field(arrays, path, "potential_size"))
    settings = dict(zip(names, (float(v) for v in values)))
    if kind == "DoubleWell":
        settings["pairs"] = str(_field(arrays, path, "potential_pairs"))
        return DoubleWell(k, d, **settings)
    return LennardJones(k, d, **settings)
