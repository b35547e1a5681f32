"""securefl: the server learns the (weighted) mean of the clients' model updates and nothing else.

Recipes (one interface: ``agg.aggregate(updates, weights=None, dropped=None) -> Result``):
Plaintext (the baseline), AdditiveSharing (K non-colluding aggregators), SecAgg (Bonawitz et al.
2017; SecAgg+ of Bell et al. 2020 with neighbors=k), CKKS (TenSEAL) and Paillier (phe, packed).
"""

from securefl.aggregator import Aggregator
from securefl.he.ckks import CKKS
from securefl.he.paillier import Paillier
from securefl.mpc.additive import AdditiveSharing
from securefl.mpc.secagg import SecAgg
from securefl.plaintext import Plaintext
from securefl.report import Report, Result

__all__ = ["AdditiveSharing", "Aggregator", "CKKS", "Paillier", "Plaintext", "Report", "Result", "SecAgg"]
__version__ = "0.1.0"
