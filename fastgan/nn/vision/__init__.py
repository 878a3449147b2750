"""Vision-aided discriminators (Kumari et al., CVPR 2022): frozen pretrained backbones with trainable heads.

- :mod:`.backbones`: the backbone registry (random, efficientnet-lite0, clip-vit-b32, dino-vit-b16, vgg16,
  vgg16-lpf4, swin-t), local sha256-checked weight files, the reference preprocessing.
- :mod:`.vit`, :mod:`.swin`, :mod:`.convnets`: the architectures, with the parameter names of the released files.
- :mod:`.heads`: spectral-norm heads and the losses (always scalars, loss / head pairing checked).
- :mod:`.discriminator`: :class:`VisionAidedDiscriminator` (``loss_d`` / ``loss_g``, DiffAugment or per-backbone
  ADA, config and state for exact resume).
- :mod:`.probe`: linear-probe selection and the progressive schedule.

See docs/vision-aided.md.
"""
from .backbones import (BackboneInfo, OutputSpec, VisionBackbone, available_backbones, backbone_from_state_dict,
                        backbone_info, build_backbone, canonical_spec, preprocess, read_weight_file,
                        register_backbone, synthetic_state_dict)
from .discriminator import VisionAidedDiscriminator, recipe_loss
from .heads import LOSSES, MLPHead, MultiLevelHead, SimpleHead, check_pairing, default_loss, vision_loss
from .probe import (ProgressiveSchedule, fit_logistic_regression, linear_probe_accuracy, pooled_features,
                    rank_backbones)

__all__ = ["available_backbones", "build_backbone", "VisionBackbone", "VisionAidedDiscriminator",
           "linear_probe_accuracy", "rank_backbones", "ProgressiveSchedule", "fit_logistic_regression",
           "pooled_features", "register_backbone", "BackboneInfo", "OutputSpec", "backbone_info",
           "backbone_from_state_dict", "synthetic_state_dict", "read_weight_file", "canonical_spec", "preprocess",
           "LOSSES", "vision_loss", "check_pairing", "default_loss", "recipe_loss", "MultiLevelHead", "SimpleHead",
           "MLPHead"]
