"""The mean-free prior: sampling, normalization, and the mean-free check."""

import numpy as np
import pytest
from scipy import stats

import refimpl
from refimpl.prior import MEAN_FREE_RTOL


def _orthonormal_mean_free_basis(k, d):
    """Columns: an orthonormal basis of the mean-free subspace of R^{K D}."""
    centring = np.kron(np.eye(k) - np.ones((k, k)) / k, np.eye(d))
    u, s, _ = np.linalg.svd(centring)
    return u[:, : (k - 1) * d]


def test_remove_mean_centres_every_configuration():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 7, 3))
    z = refimpl.remove_mean(x)
    assert np.max(np.abs(z.mean(axis=-2))) < 1e-14
    np.testing.assert_allclose(z - x, np.broadcast_to(-x.mean(axis=-2, keepdims=True), x.shape))


@pytest.mark.parametrize("k,d", [(2, 1), (4, 2), (13, 3)])
def test_log_prob_equals_standard_normal_in_subspace_coordinates(k, d):
    prior = refimpl.MeanFreeNormal(k, d)
    z = prior.sample(50, 1)
    coords = z.reshape(50, -1) @ _orthonormal_mean_free_basis(k, d)
    want = stats.multivariate_normal(np.zeros((k - 1) * d)).logpdf(coords)
    np.testing.assert_allclose(prior.log_prob(z), want, rtol=1e-12)


def test_samples_are_standard_normal_on_the_subspace():
    k, d, n = 4, 2, 40_000
    z = refimpl.MeanFreeNormal(k, d).sample(n, np.random.default_rng(7))
    coords = z.reshape(n, -1) @ _orthonormal_mean_free_basis(k, d)
    cov = np.cov(coords.T)
    # entries of a sample covariance of N(0, I) have standard error ~ sqrt(2/n)
    assert np.max(np.abs(cov - np.eye(cov.shape[0]))) < 6 * np.sqrt(2 / n)
    assert np.max(np.abs(z.mean(axis=1))) < 1e-14


def test_sampling_is_deterministic_given_the_seed():
    prior = refimpl.MeanFreeNormal(3, 2)
    np.testing.assert_array_equal(prior.sample(4, 123), prior.sample(4, 123))
    np.testing.assert_array_equal(prior.sample(4, np.random.default_rng(9)),
                                  prior.sample(4, np.random.default_rng(9)))


def test_log_prob_refuses_configurations_that_are_not_mean_free():
    prior = refimpl.MeanFreeNormal(3, 2)
    z = prior.sample(3, 0)
    z[1] += 1e-3
    with pytest.raises(ValueError, match=r"configuration \(1,\).*remove_mean"):
        prior.log_prob(z)
    z[1] -= z[1].mean(axis=0)
    prior.log_prob(z)  # float64 rounding of the centring is accepted
    z[2, :, 0] += 10 * MEAN_FREE_RTOL
    with pytest.raises(ValueError):
        prior.log_prob(z)


@pytest.mark.parametrize("args,error", [((1, 2), ValueError), ((3, 0), ValueError),
                                        ((3.0, 2), TypeError), ((True, 2), TypeError)])
def test_constructor_rejects_bad_sizes(args, error):
    with pytest.raises(error):
        refimpl.MeanFreeNormal(*args)


def test_sample_and_log_prob_reject_bad_arguments():
    prior = refimpl.MeanFreeNormal(3, 2)
    with pytest.raises(TypeError):
        prior.sample(2.5, 0)
    with pytest.raises(ValueError):
        prior.sample(0, 0)
    with pytest.raises(TypeError):
        prior.sample(2, "seed")
    with pytest.raises(ValueError, match="K = 4"):
        prior.log_prob(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="D = 3"):
        prior.log_prob(np.zeros((3, 3)))
