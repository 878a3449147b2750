"""Transfer from pretrained generators: strict weight transfer with a mismatch table."""
from .weights import TransferReport, WeightMismatchError, transfer_weights

__all__ = ["transfer_weights", "TransferReport", "WeightMismatchError"]
