"""securefl: the server learns the (weighted) mean of the clients' model updates and nothing else.

Recipes (one interface: ``agg.aggregate(updates, weights=None, dropped=None) -> Result``):
Plaintext (the baseline), AdditiveSharing (K non-colluding aggregators).
"""

from securefl.aggregator import Aggregator
from securefl.mpc.additive import AdditiveSharing
from securefl.plaintext import Plaintext
from securefl.report import Report, Result

__all__ = ["AdditiveSharing", "Aggregator", "Plaintext", "Report", "Result"]
__version__ = "0.1.0"
