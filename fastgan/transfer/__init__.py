"""Transfer from pretrained generators: strict weight transfer with a mismatch table, the AdaFM recipe on the
StyleGAN2-style generator, FreezeD and finetune baselines (see docs/transfer.md).

- :func:`transfer_weights` / :class:`TransferReport` / :class:`WeightMismatchError`: strict copy by name.
- :func:`to_adafm`, :func:`fold`, :func:`fold_snapshot`: AdaFM generators with identity init, and back to plain.
- :func:`make_policy` / :class:`FreezePolicy`: which parameters train under finetune, freezed and adafm.
- :func:`transfer_networks`: a source snapshot into new networks; :func:`transfer`: a whole run.
"""
from .adafm import adafm_resolutions_for, count_adafm, fold, fold_record, fold_snapshot, is_adafm_name, to_adafm
from .freeze import METHODS, FreezePolicy, check_freeze_d, d_block_names, default_freeze_d, make_policy
from .recipe import is_front_name, transfer, transfer_networks
from .weights import TransferReport, WeightMismatchError, summary_table, transfer_weights

__all__ = ["transfer_weights", "TransferReport", "WeightMismatchError", "summary_table",
           "to_adafm", "fold", "fold_record", "fold_snapshot", "adafm_resolutions_for", "is_adafm_name",
           "count_adafm", "METHODS", "FreezePolicy", "make_policy", "check_freeze_d", "d_block_names",
           "default_freeze_d", "transfer_networks", "is_front_name", "transfer"]
