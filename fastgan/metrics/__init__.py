"""GAN evaluation metrics on features: FID, KID, precision / recall / density / coverage (float64, any device)."""
from .functional import COV_NORMS, fid_from_features, frechet_distance, kid_from_features, mean_cov, prdc
from .extractors import FeatureExtractor, find_weights, get_extractor, list_extractors, register_extractor
from .protocols import PROTOCOLS, preprocess
from .selection import GradDSimilarity, SourceScore, grad_d_cosines, grad_d_similarity, select_source
from .stats import FeatureStats, fid_from_stats

__all__ = ["frechet_distance", "fid_from_features", "kid_from_features", "prdc", "mean_cov", "COV_NORMS",
           "FeatureStats", "fid_from_stats", "FeatureExtractor", "get_extractor", "list_extractors",
           "register_extractor", "find_weights", "PROTOCOLS", "preprocess", "select_source", "SourceScore",
           "grad_d_similarity", "grad_d_cosines", "GradDSimilarity"]
