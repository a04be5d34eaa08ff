"""CMC and mAP under the Market-1501 protocol, for any embedding function.

For each query, the gallery is ranked by distance to the query's embedding, after removing
- gallery images of the same identity taken by the same camera (matching them is trivial), and
- junk images (person id `-1`), which count neither as matches nor as mistakes.
Distractors (`0000`) stay in the gallery as non-matches. Queries with no valid match left are
skipped and counted.

CMC at rank k is the fraction of queries whose first correct match is among the k nearest.
AP is the mean, over the correct matches, of the precision at each one's rank (the area under the
precision-recall curve without interpolation); mAP averages AP over the queries. (Zheng et al.,
"Scalable Person Re-identification: A Benchmark", ICCV 2015.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from reid.market1501 import JUNK, Market1501, ReIDSplit

METRICS = ("cosine", "euclidean")


@dataclasses.dataclass(frozen=True)
class RankingResult:
    """CMC curve (`cmc[k-1]` = rank-k accuracy), mAP and how many queries were scored."""

    cmc: np.ndarray
    mean_ap: float
    valid_queries: int
    skipped_queries: int

    def rank(self, k: int) -> float:
        """Rank-k accuracy: the fraction of queries whose first correct match is in the top k.

        Raises:
            ValueError: `k` is not between 1 and the curve's length (`max_rank`).
        """
        max_rank = len(self.cmc)
        if not 1 <= k <= max_rank:
            raise ValueError(
                "Expected k between 1 and the CMC curve's length max_rank (evaluate with a "
                f"larger max_rank to read deeper ranks). Received: k={k}, max_rank={max_rank}."
            )
        return float(self.cmc[k - 1])

    def as_dict(self) -> dict:
        """Rank-1, -5 and -10 accuracy (those within `max_rank`), mAP and valid queries."""
        ranks = {f"rank{k}": self.rank(k) for k in (1, 5, 10) if k <= len(self.cmc)}
        return {**ranks, "mAP": self.mean_ap, "valid_queries": self.valid_queries}


def pairwise_distances(
    query: np.ndarray, gallery: np.ndarray, metric: str = "cosine"
) -> np.ndarray:
    """`[q, g]` distances: `1 − cos(a, b)` for `"cosine"`, `‖a − b‖` for `"euclidean"`."""
    if metric not in METRICS:
        raise ValueError(f"Expected metric in {METRICS}. Received: metric={metric!r}.")
    query = np.asarray(query, np.float32)
    gallery = np.asarray(gallery, np.float32)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            "Expected query and gallery embeddings of shape [n, d] with the same d. "
            f"Received: query shape={query.shape}, gallery shape={gallery.shape}."
        )
    if metric == "cosine":
        q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
        return 1.0 - q @ g.T
    squared = np.sum(query**2, 1)[:, None] - 2.0 * query @ gallery.T + np.sum(gallery**2, 1)[None]
    return np.sqrt(np.maximum(squared, 0.0))


def evaluate_ranking(
    distances: np.ndarray,
    query_ids: np.ndarray,
    query_cameras: np.ndarray,
    gallery_ids: np.ndarray,
    gallery_cameras: np.ndarray,
    max_rank: int = 10,
) -> RankingResult:
    """CMC and mAP from a `[q, g]` distance matrix under the Market-1501 protocol.

    Ties are broken by gallery order (a stable sort), so results are reproducible.

    Raises:
        ValueError: shapes disagree, or no query has a valid match.
    """
    distances = np.asarray(distances)
    query_ids, query_cameras = np.asarray(query_ids), np.asarray(query_cameras)
    gallery_ids, gallery_cameras = np.asarray(gallery_ids), np.asarray(gallery_cameras)
    if distances.shape != (len(query_ids), len(gallery_ids)) or len(query_ids) != len(
        query_cameras
    ):
        raise ValueError(
            "Expected distances of shape [queries, gallery] matching the id and camera arrays. "
            f"Received: distances shape={distances.shape}, {len(query_ids)} query ids, "
            f"{len(query_cameras)} query cameras, {len(gallery_ids)} gallery ids."
        )
    order = np.argsort(distances, axis=1, kind="stable")
    cmc_sum = np.zeros(max_rank)
    average_precisions = []
    skipped = 0
    for i in range(len(query_ids)):
        ranked_ids = gallery_ids[order[i]]
        ranked_cameras = gallery_cameras[order[i]]
        same_view = (ranked_ids == query_ids[i]) & (ranked_cameras == query_cameras[i])
        keep = ~(same_view | (ranked_ids == JUNK))
        matches = ranked_ids[keep] == query_ids[i]
        if not matches.any():
            skipped += 1
            continue
        first = int(np.argmax(matches))
        cmc_sum[first:] += 1
        hits = np.flatnonzero(matches)
        precision = np.arange(1, len(hits) + 1) / (hits + 1)
        average_precisions.append(float(precision.mean()))
    if not average_precisions:
        raise ValueError(
            "No query has a correct match in the gallery from another camera, so CMC and mAP "
            "are undefined. Check the query and gallery splits. "
            f"Received: {len(query_ids)} queries."
        )
    valid = len(average_precisions)
    return RankingResult(cmc_sum / valid, float(np.mean(average_precisions)), valid, skipped)


def evaluate(
    embed: Callable[[np.ndarray], np.ndarray],
    query: ReIDSplit,
    gallery: ReIDSplit,
    metric: str = "cosine",
    max_rank: int = 10,
) -> RankingResult:
    """Embeds the query and gallery images with `embed` and scores the ranking.

    Args:
        embed: images `[n, h, w, 3]` to embeddings `[n, d]`, e.g. `keras_embedder(model)` or a
            LiteRT runner of an int8 `.tflite` embedding model.
        query: the query split.
        gallery: the gallery split.
        metric: `"cosine"` or `"euclidean"`.
        max_rank: length of the CMC curve.
    """
    distances = pairwise_distances(embed(query.images), embed(gallery.images), metric)
    return evaluate_ranking(
        distances, query.person_ids, query.cameras, gallery.person_ids, gallery.cameras, max_rank
    )


def keras_embedder(model, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """`images -> embeddings` for a Keras embedding model, in inference mode."""

    def embed(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), np.float32)

    return embed


def evaluate_dataset(
    embed: Callable[[np.ndarray], np.ndarray], data: Market1501, metric: str = "cosine"
) -> RankingResult:
    """`evaluate` on the query and gallery splits of `data`."""
    return evaluate(embed, data.query, data.gallery, metric)
