import numpy as np
import pytest

from reid.evaluation import evaluate_ranking, pairwise_distances


def test_cmc_and_map_on_a_hand_made_distance_matrix():
    # Gallery: id 1 cam 2, id 2 cam 1, id 1 cam 1 (same camera as query 0), junk, id 1 cam 3,
    # distractor 0000.
    gallery_ids = np.array([1, 2, 1, -1, 1, 0])
    gallery_cameras = np.array([2, 1, 1, 2, 3, 2])
    query_ids = np.array([1, 2])
    query_cameras = np.array([1, 2])
    distances = np.array(
        [
            # query 0 (id 1, cam 1). Ranked: g2 (excluded, same id+cam), g3 (junk, ignored),
            # g1 (wrong), g0 (match), g5 (distractor, wrong), g4 (match).
            [0.4, 0.3, 0.0, 0.1, 0.6, 0.5],
            # query 1 (id 2, cam 2): g1 (id 2, cam 1) first.
            [0.5, 0.1, 0.4, 0.2, 0.3, 0.6],
        ]
    )
    result = evaluate_ranking(distances, query_ids, query_cameras, gallery_ids, gallery_cameras)
    # query 0 after exclusions: [g1 wrong, g0 hit, g5 wrong, g4 hit] -> first hit at rank 2,
    # AP = (1/2 + 2/4) / 2 = 0.5.  query 1: hit at rank 1, AP = 1.
    np.testing.assert_allclose(result.cmc[:3], [0.5, 1.0, 1.0])
    assert result.mean_ap == pytest.approx(0.75)
    assert result.valid_queries == 2 and result.skipped_queries == 0
    assert result.as_dict()["rank1"] == 0.5 and result.rank(10) == 1.0


def test_same_camera_match_does_not_count():
    """A perfect same-camera match is removed; the cross-camera one decides."""
    distances = np.array([[0.0, 0.9, 0.5]])
    result = evaluate_ranking(distances, [7], [1], np.array([7, 7, 3]), np.array([1, 2, 2]))
    np.testing.assert_allclose(result.cmc[:2], [0.0, 1.0])  # id 3 ranks above the other camera
    assert result.mean_ap == pytest.approx(0.5)


def test_junk_is_ignored_not_counted_as_a_mistake():
    distances = np.array([[0.0, 0.1]])
    with_junk = evaluate_ranking(distances, [4], [1], np.array([-1, 4]), np.array([2, 2]))
    assert with_junk.rank(1) == 1.0 and with_junk.mean_ap == 1.0
    as_wrong = evaluate_ranking(distances, [4], [1], np.array([5, 4]), np.array([2, 2]))
    assert as_wrong.rank(1) == 0.0 and as_wrong.mean_ap == 0.5


def test_queries_without_cross_camera_match_are_skipped():
    distances = np.array([[0.1, 0.2], [0.3, 0.1]])
    result = evaluate_ranking(distances, [1, 2], [1, 1], np.array([1, 2]), np.array([1, 3]))
    assert result.valid_queries == 1 and result.skipped_queries == 1
    assert result.rank(1) == 1.0
    with pytest.raises(ValueError, match="No query has a correct match"):
        evaluate_ranking(distances[:1], [1], [1], np.array([1, 2]), np.array([1, 3]))
    with pytest.raises(ValueError, match="Expected distances of shape"):
        evaluate_ranking(distances, [1], [1], np.array([1, 2]), np.array([1, 3]))


def test_pairwise_distances():
    query = np.array([[1.0, 0.0], [0.0, 2.0]])
    gallery = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    cosine = pairwise_distances(query, gallery)
    np.testing.assert_allclose(
        cosine, [[0, 1 - 1 / np.sqrt(2), 1], [1, 1 - 1 / np.sqrt(2), 2]], atol=1e-6
    )
    euclidean = pairwise_distances(query, gallery, "euclidean")
    np.testing.assert_allclose(
        euclidean, [[1, 1, np.sqrt(2)], [np.sqrt(8), np.sqrt(2), 3]], atol=1e-5
    )
    with pytest.raises(ValueError, match="Expected metric in"):
        pairwise_distances(query, gallery, "manhattan")
