"""Differential privacy for every aggregator (`dp=`): mechanisms, accounting and the privacy audit.

GaussianMechanism (central noise, added by the party that decodes the sum) and DistributedGaussian
(exact discrete Gaussian noise added by each client inside the ring, before masking or sharing);
epsilon / noise_multiplier through dp-accounting. The audit lives in securefl.dp.audit.
"""

from securefl.dp.accounting import epsilon, epsilon_of_rounds, noise_multiplier
from securefl.dp.mechanisms import DistributedGaussian, GaussianMechanism, Mechanism, discrete_gaussian

__all__ = [
    "DistributedGaussian",
    "GaussianMechanism",
    "Mechanism",
    "discrete_gaussian",
    "epsilon",
    "epsilon_of_rounds",
    "noise_multiplier",
]
