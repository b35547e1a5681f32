"""Differential privacy for every aggregator (`dp=`): mechanisms, accounting, CSPRNG-fed exact noise, audit.

GaussianMechanism (central: the party that decodes the sum adds the noise) and DistributedGaussian
(each client adds its share inside the integer ring, before masking or sharing) both add exact
discrete Gaussian noise on the fixed-point grid from the OS CSPRNG (securefl.dp.sampler). A
released round is a dp-accounting DpEvent; an Accountant (securefl.dp.accounting) composes them.
epsilon / noise_multiplier give the same figures for planning. The audit (top layer) lives in securefl.audit.
"""

from securefl.dp.accounting import Accountant, epsilon, noise_multiplier
from securefl.dp.mechanisms import DistributedGaussian, GaussianMechanism, Mechanism
from securefl.dp.sampler import discrete_gaussian

mechanism_from_dict = Mechanism.from_dict  # a round configuration's mechanism (its to_dict())

__all__ = [
    "Accountant",
    "DistributedGaussian",
    "GaussianMechanism",
    "Mechanism",
    "discrete_gaussian",
    "epsilon",
    "mechanism_from_dict",
    "noise_multiplier",
]
