"""Person re-identification: Market-1501 data, BNNeck models, ReID losses, CMC/mAP, ReID KD.

reid.config        ReIDConfig, the settings of `recipes.reid`
reid.task          ReIDTask: re-identification for the shared pipeline (kd_keras.pipeline)
reid.data          load_data: the run's Market-1501 folder, the user's or the built-in one
reid.models        build_reid_model (BNNeck), embedding_model, fold_bnneck
reid.evaluation    CMC and mAP under the Market-1501 protocol
reid.distillation  reid_kd_terms; similarity and projection embedding KD
reid.losses        identity and batch-hard triplet losses
reid.market1501    reading a Market-1501 folder
reid.synthetic     writing the built-in Market-1501 folder
reid.sampler       P×K batches
"""

from reid.config import ReIDConfig
from reid.data import load_data
from reid.distillation import ProjectionDistillation, SimilarityDistillation, reid_kd_terms
from reid.evaluation import RankingResult, evaluate, evaluate_ranking, pairwise_distances
from reid.losses import IdentityLoss, ReIDLoss, TripletLoss, batch_hard_triplet
from reid.market1501 import Market1501, ReIDSplit, load_market1501, parse_name
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from reid.synthetic import SyntheticConfig, write_synthetic_market1501
from reid.task import ReIDTask

__all__ = [
    "IdentityLoss",
    "Market1501",
    "PKSampler",
    "ProjectionDistillation",
    "RankingResult",
    "ReIDConfig",
    "ReIDLoss",
    "ReIDSplit",
    "ReIDTask",
    "SimilarityDistillation",
    "SyntheticConfig",
    "TripletLoss",
    "batch_hard_triplet",
    "build_reid_model",
    "embedding_model",
    "evaluate",
    "evaluate_ranking",
    "fold_bnneck",
    "load_data",
    "load_market1501",
    "parse_name",
    "pairwise_distances",
    "pk_dataset",
    "reid_kd_terms",
    "write_synthetic_market1501",
]
