"""Reweighting generated samples to the Boltzmann distribution (the BG's step 2).

For samples ``x ~ q_X`` with known ``log q_X(x)`` and target
``p(x) ~ exp(-u(x) / T)``, the importance weights are
``log w(x) = -u(x) / T - log q_X(x)`` (up to a constant). Self-normalized,
they estimate ``E_p[O] = sum_n w_n O(x_n) / sum_n w_n``; their quality is
summarized by Kish's effective sample size ``(sum w)^2 / sum w^2``.
"""

import numpy as np

from ._validate import as_float_array


def _as_vector(a, name):
    """A non-empty 1-D float64 copy; infinities allowed here, NaN and non-real input not."""
    a = as_float_array(a, name, finite=False)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} contains NaN (first at index {int(np.argmax(np.isnan(a)))})")
    return a


def log_weights(reduced_energy, log_q):
    """``log w = -u(x)/T - log q_X(x)`` for each sample (``reduced_energy = u/T``)."""
    u = _as_vector(reduced_energy, "reduced_energy")
    log_q = _as_vector(log_q, "log_q")
    if u.shape != log_q.shape:
        raise ValueError(f"reduced_energy {u.shape} and log_q {log_q.shape} differ in length")
    if np.any(u == -np.inf):
        raise ValueError("reduced_energy contains -inf: the target density is not normalizable")
    if not np.all(np.isfinite(log_q)):
        raise ValueError("log_q must be finite for every sample (it was drawn from q)")
    return -u - log_q  # +inf energies give weight 0


def normalized_weights(log_w):
    """Self-normalized weights ``w_n / sum_m w_m``, computed stably in log space."""
    log_w = _as_vector(log_w, "log_w")
    if np.any(log_w == np.inf):
        raise ValueError("log_w contains +inf: an infinite weight cannot be normalized")
    if not np.any(np.isfinite(log_w)):
        raise ValueError("no sample has a finite weight")
    # Shift by the largest log-weight, then divide by the sum (>= 1): subtracting logsumexp
    # instead loses log(n) to rounding once |log_w| >> 1 (log_w = [1e20, 1e20] gave weights
    # [1, 1]). log_w - max <= 0, so where the subtraction overflows it goes to -inf, whose
    # weight exp(-inf) = 0 is the exact underflow (e.g. log_w = [1e308, -1e308]).
    with np.errstate(over="ignore"):
        w = np.exp(log_w - np.max(log_w))
    return w / np.sum(w)


def effective_sample_size(log_w):
    """Kish's ``(sum w)^2 / sum w^2``, between 1 and the number of samples."""
    w = normalized_weights(log_w)
    return 1.0 / np.sum(w * w)


def reweighted_mean(values, log_w):
    """Self-normalized importance estimate of ``E_p[O]`` and its standard error.

    The error uses the delta-method variance of a ratio estimator,
    ``sum_n w_n^2 (O_n - mean)^2`` with normalized weights; it is reliable
    only when the effective sample size is not tiny.

    Returns ``(mean, standard_error)``.
    """
    values = as_float_array(values, "values")  # finite: an infinite O has no mean
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    w = normalized_weights(log_w)
    if w.shape != values.shape:
        raise ValueError(f"values {values.shape} and log_w {w.shape} differ in length")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.sum(w * values))
        error = float(np.sqrt(np.sum(w * w * (values - mean) ** 2)))
    if not (np.isfinite(mean) and np.isfinite(error)):
        # only for |values| near the float64 limit: redo in units of the largest value
        scale = float(np.max(np.abs(values)))
        mean, error = (scale * v for v in reweighted_mean(values / scale, log_w))
        if not (np.isfinite(mean) and np.isfinite(error)):
            raise ValueError(f"values up to {scale:.3g} give a mean or standard error beyond "
                             "float64; rescale the observable")
    return mean, error
