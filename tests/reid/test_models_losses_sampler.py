import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from reid.losses import (
    IdentityLoss,
    ReIDLoss,
    TripletLoss,
    batch_hard_triplet,
    identity_cross_entropy,
)
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from tests.helpers import assert_config_round_trip


def test_triplet_loss_on_a_hand_made_batch():
    # Identity 0 at x=0 and x=3; identity 1 at x=1 and x=10 (1-d embeddings).
    embeddings = np.array([[0.0], [3.0], [1.0], [10.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    loss = batch_hard_triplet(labels, embeddings, margin=0.5).numpy()
    # anchor 0: d+ = 3, d- = min(1, 10) = 1 -> 3 - 1 + 0.5
    # anchor 1: d+ = 3, d- = min(2, 7) = 2 -> 1.5
    # anchor 2: d+ = 9, d- = min(1, 2) = 1 -> 8.5
    # anchor 3: d+ = 9, d- = min(10, 7) = 7 -> 2.5
    np.testing.assert_allclose(loss, [2.5, 1.5, 8.5, 2.5], rtol=1e-5)
    soft = batch_hard_triplet(labels, embeddings, margin=None).numpy()
    np.testing.assert_allclose(soft, np.log1p(np.exp([2.0, 1.0, 8.0, 2.0])), rtol=1e-5)
    # Well separated identities: zero loss; an identity alone has no positive: zero loss.
    far = batch_hard_triplet([0, 0, 1, 1, 2], [[0.0], [0.1], [5.0], [5.1], [9.0]], 0.3).numpy()
    np.testing.assert_allclose(far, 0.0, atol=1e-6)


def test_triplet_gradient_is_finite_for_identical_embeddings():
    x = tf.Variable(np.zeros((4, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(batch_hard_triplet([0, 0, 1, 1], x, 0.3))
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_identity_cross_entropy_with_label_smoothing():
    logits = np.array([[2.0, 0.0, 0.0]], np.float32)
    log_p = logits - np.log(np.exp(logits).sum())
    q = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    expected = -(q * log_p).sum()
    np.testing.assert_allclose(identity_cross_entropy([0], logits, 0.1).numpy(), [expected], 1e-5)
    plain = identity_cross_entropy([0], logits, 0.0).numpy()
    np.testing.assert_allclose(plain, [-log_p[0, 0]], rtol=1e-5)


def test_reid_loss_combines_both_terms_and_round_trips():
    features = np.array([[0.0], [3.0], [1.0], [10.0]], np.float32)
    logits = np.zeros((4, 2), np.float32)
    labels = np.array([0, 0, 1, 1])
    loss = ReIDLoss(label_smoothing=0.0, margin=0.5, identity_weight=2.0, triplet_weight=0.5)
    value = float(loss(labels, [features, logits]))
    assert value == pytest.approx(2.0 * np.log(2.0) + 0.5 * np.mean([2.5, 1.5, 8.5, 2.5]), 1e-5)
    with pytest.raises(ValueError, match="expects the two outputs"):
        loss(labels, logits)
    for obj in (loss, IdentityLoss(0.2), TripletLoss(None)):
        assert_config_round_trip(obj)


@pytest.mark.parametrize("backbone", ["resnet", "mobilenet"])
def test_model_outputs_and_embedding_model(backbone):
    model = build_reid_model((16, 8, 3), 5, backbone, width=0.25, embedding_dim=12)
    assert [tuple(s) for s in model.output_shape] == [(None, 12), (None, 5)]
    encoder = embedding_model(model)
    assert encoder.output_shape == (None, 12)
    x = np.random.default_rng(0).random((2, 16, 8, 3)).astype(np.float32)
    bn = model.get_layer("embedding")
    features = model(x)[0].numpy()
    expected = (features - bn.moving_mean.numpy()) / np.sqrt(
        bn.moving_variance.numpy() + bn.epsilon
    ) * bn.gamma.numpy() + bn.beta.numpy()
    np.testing.assert_allclose(encoder(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_mobile_backbone_is_lighter_and_bad_arguments_fail():
    resnet = build_reid_model((16, 8, 3), 5, "resnet", width=0.5)
    mobile = build_reid_model((16, 8, 3), 5, "mobilenet", width=0.5)
    assert mobile.count_params() * 3 < resnet.count_params()
    with pytest.raises(ValueError, match="Expected backbone in"):
        build_reid_model((16, 8, 3), 5, "vgg")
    with pytest.raises(ValueError, match="no 'embedding' layer"):
        embedding_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))


def test_sampler_gives_p_by_k_batches():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 4 + [3] * 3 + [4] * 6)
    sampler = PKSampler(labels, p=2, k=3, seed=1)
    assert sampler.batch_size == 6 and sampler.batches_per_epoch == 2
    batches = sampler.batches(10)
    assert batches.shape == (10, 6)
    for row in batches:
        groups = labels[row].reshape(2, 3)
        assert np.all(groups == groups[:, :1])  # k images of one identity, identity-major
        assert groups[0, 0] != groups[1, 0]  # p distinct identities
        for group_row, indices in zip(groups, row.reshape(2, 3)):
            if np.sum(labels == group_row[0]) >= 3:
                assert len(set(indices.tolist())) == 3  # no repeats when enough images
    # One epoch (two batches, p=2) visits four distinct identities.
    first_epoch = labels[batches[:2]].reshape(-1)
    assert len(set(first_epoch.tolist())) == 4
    np.testing.assert_array_equal(batches, PKSampler(labels, 2, 3, seed=1).batches(10))
    with pytest.raises(ValueError, match="only 5"):
        PKSampler(labels, p=6, k=2)
    with pytest.raises(ValueError, match="p >= 2"):
        PKSampler(labels, p=2, k=1)


def test_pk_dataset_batches_and_augmentation():
    images = np.random.default_rng(0).random((8, 8, 4, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    sampler = PKSampler(labels, 2, 2, seed=0)
    plain = list(pk_dataset(images, labels, sampler, steps=3, augment=False))
    assert len(plain) == 3
    for (batch, batch_labels), indices in zip(plain, sampler.batches(3)):
        np.testing.assert_array_equal(batch.numpy(), images[indices])
        np.testing.assert_array_equal(batch_labels.numpy(), labels[indices])
    augmented = [b.numpy() for b, _ in pk_dataset(images, labels, sampler, 3, True, seed=1)]
    assert augmented[0].shape == (4, 8, 4, 3)
    # Each image is a window of the zero-padded original, maybe mirrored.
    for batch, indices in zip(augmented, sampler.batches(3)):
        for image, index in zip(batch, indices):
            padded = np.pad(images[index], [(1, 1), (1, 1), (0, 0)])
            windows = [padded[y : y + 8, x : x + 4] for y in range(3) for x in range(3)]
            windows += [w[:, ::-1] for w in windows]
            assert any(np.array_equal(image, w) for w in windows)
    again = [b.numpy() for b, _ in pk_dataset(images, labels, sampler, 3, True, seed=1)]
    other = [b.numpy() for b, _ in pk_dataset(images, labels, sampler, 3, True, seed=2)]
    np.testing.assert_array_equal(np.stack(augmented), np.stack(again))
    assert not np.array_equal(np.stack(augmented), np.stack(other))


@pytest.mark.slow
def test_two_output_model_trains_with_per_output_losses():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((8, 16, 8, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    model = build_reid_model((16, 8, 3), 4, "mobilenet", width=0.25, embedding_dim=8)
    model.compile(
        keras.optimizers.Adam(0.01),
        loss={"features": TripletLoss(0.3), "logits": IdentityLoss(0.1)},
    )
    targets = {"features": labels, "logits": labels}

    def loss_on_all_images() -> float:  # one fixed batch: not at the mercy of the sampler's draws
        return model.evaluate(images, targets, batch_size=8, verbose=0)[0]

    before = loss_on_all_images()
    dataset = pk_dataset(images, labels, PKSampler(labels, 2, 2), steps=8, augment=False)
    history = model.fit(dataset, epochs=12, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert loss_on_all_images() < 0.6 * before


def test_folded_bnneck_gives_the_same_embeddings():
    keras.utils.set_random_seed(1)
    model = build_reid_model((16, 8, 3), 5, "mobilenet", width=0.25, embedding_dim=6)
    norm = model.get_layer("embedding")
    rng = np.random.default_rng(0)
    norm.set_weights(
        [rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)]
    )
    folded = fold_bnneck(model)
    assert [layer.name for layer in folded.layers[-2:]] == ["embedding", "logits"]
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers[-3:]
    )
    x = rng.random((3, 16, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        embedding_model(folded)(x).numpy(), embedding_model(model)(x).numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(folded(x)[1].numpy(), model(x)[1].numpy(), rtol=1e-4, atol=1e-5)
