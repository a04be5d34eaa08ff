"""Person re-identification: Market-1501 data, BNNeck models, ReID losses, CMC/mAP, ReID KD."""

from reid.distillation import ProjectionDistillation, SimilarityDistillation
from reid.evaluation import RankingResult, evaluate, evaluate_ranking, pairwise_distances
from reid.losses import IdentityLoss, ReIDLoss, TripletLoss, batch_hard_triplet
from reid.market1501 import Market1501, ReIDSplit, load_market1501, parse_name
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from reid.synthetic import SyntheticConfig, write_synthetic_market1501

__all__ = [
    "IdentityLoss",
    "Market1501",
    "PKSampler",
    "ProjectionDistillation",
    "RankingResult",
    "ReIDLoss",
    "ReIDSplit",
    "SimilarityDistillation",
    "SyntheticConfig",
    "TripletLoss",
    "batch_hard_triplet",
    "build_reid_model",
    "embedding_model",
    "evaluate",
    "evaluate_ranking",
    "fold_bnneck",
    "load_market1501",
    "parse_name",
    "pairwise_distances",
    "pk_dataset",
    "write_synthetic_market1501",
]
