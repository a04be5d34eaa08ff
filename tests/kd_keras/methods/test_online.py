import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras.methods.online import OnlineDistiller
from tests.helpers import assert_config_round_trip, tiny_classifier, tiny_data

T = 3.0


def _group(num_peers=3, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    leader = tiny_classifier(classes, 4, name="leader")
    peers = [tiny_classifier(classes, 4, name=f"peer_{i}") for i in range(num_peers)]
    return leader, peers


def _accuracy():
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _is_zero(gradient) -> bool:
    """No gradient: TensorFlow returns `None`, or zeros for the other slices of a stacked input."""
    return gradient is None or not np.any(gradient.numpy())


def _stripes(n, seed, amplitude=0.4, noise=1.0):
    """3 classes of 6×6 textures (rows, columns, checkerboard) of random sign, under noise.

    Position-free patterns suit the conv → global-pool classifiers, and the noise keeps them from
    reaching 100%, so the leader trained alone and with its group can differ.
    """
    rng = np.random.default_rng(seed)
    alternating = np.where(np.arange(6) % 2, 1.0, -1.0)
    patterns = np.stack(
        [
            np.tile(alternating[:, None], (1, 6)),
            np.tile(alternating[None, :], (6, 1)),
            alternating[:, None] * alternating[None, :],
        ]
    )
    y = rng.integers(0, 3, n)
    sign = rng.choice([-1.0, 1.0], n)[:, None, None]
    x = patterns[y] * amplitude * sign + noise * rng.normal(size=(n, 6, 6))
    return x[..., None].astype(np.float32), y.astype(np.int64)


def test_attention_rows_and_targets_are_distributions_matching_numpy():
    leader, peers = _group()
    distiller = OnlineDistiller(leader, peers, temperature=T, projection_dim=8)
    rng = np.random.default_rng(1)
    peer_logits = [rng.normal(size=(5, 3)).astype(np.float32) * 3 for _ in peers]
    leader_logits = rng.normal(size=(5, 3)).astype(np.float32)
    group = distiller.group_distillation([tf.constant(z) for z in peer_logits], leader_logits)

    attention, targets = group.attention.numpy(), group.peer_targets.numpy()
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.diagonal(attention, axis1=1, axis2=2), 0.0)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(group.leader_target.numpy().sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(group.leader_target.numpy(), targets.mean(1), rtol=1e-6)

    # The same quantities by hand.
    z = np.stack(peer_logits, 1)  # [b, m, C]
    wq, wk = distiller.query.kernel.numpy(), distiller.key.kernel.numpy()
    energy = np.einsum("bid,bjd->bij", z @ wq, z @ wk) - 1e9 * np.eye(3)
    alpha = _softmax(energy)
    t = np.einsum("bij,bjc->bic", alpha, _softmax(z / T))
    kl = T**2 * (t * (np.log(t) - np.log(_softmax(z / T)))).sum(-1)
    t_leader = t.mean(1)
    kl_leader = T**2 * (t_leader * (np.log(t_leader) - np.log(_softmax(leader_logits / T)))).sum(-1)
    entropy = -(alpha * np.log(np.maximum(alpha, 1e-30))).sum(-1).mean(-1)
    np.testing.assert_allclose(attention, alpha, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(targets, t, rtol=1e-5)
    np.testing.assert_allclose(group.peer_kl.numpy(), kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(group.leader_kl.numpy(), kl_leader, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(group.attention_entropy.numpy(), entropy, rtol=1e-5, atol=1e-6)
    assert np.all(entropy > 0) and np.all(entropy <= np.log(2) + 1e-6)


def test_first_step_loss_by_hand_and_call_is_leader():
    leader, peers = _group()
    x, y = tiny_data(4)
    distiller = OnlineDistiller(leader, peers, temperature=T, distillation_weight=0.5)
    np.testing.assert_array_equal(distiller(x).numpy(), leader(x).numpy())

    z_leader = leader(x).numpy()
    z_peers = [p(x) for p in peers]
    group = distiller.group_distillation(z_peers, z_leader)
    ce = lambda z: -np.log(_softmax(z)[np.arange(4), y])  # noqa: E731
    peer_losses = np.stack([ce(z.numpy()) for z in z_peers], 1) + 0.5 * group.peer_kl.numpy()
    leader_loss = ce(z_leader) + 0.5 * group.leader_kl.numpy()
    expected = peer_losses.sum(1) + leader_loss

    distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
    history = distiller.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(history["leader_loss"][0], leader_loss.mean(), rtol=1e-5)
    np.testing.assert_allclose(history["peer_loss"][0], peer_losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        history["attention_entropy"][0], group.attention_entropy.numpy().mean(), rtol=1e-5
    )
    assert set(history) == {"loss", "leader_loss", "peer_loss", "attention_entropy", "accuracy"}
    np.testing.assert_array_equal(distiller.predict(x, verbose=0), leader.predict(x, verbose=0))


def test_targets_pass_no_gradient_to_peers_but_train_the_projections():
    leader, peers = _group()
    distiller = OnlineDistiller(leader, peers, temperature=T)
    x, y = tiny_data(4)
    with tf.GradientTape(persistent=True) as tape:
        z_peers = [p(x) for p in peers]
        z_leader = leader(x)
        group = distiller.group_distillation(z_peers, z_leader)
        peer_0_kl = tf.reduce_sum(group.peer_kl[:, 0])
        leader_kl = tf.reduce_sum(group.leader_kl)
    projections = [distiller.query.kernel, distiller.key.kernel]

    # Peer 0's KL: a gradient on its own logits (student side) and on the projections only.
    assert np.abs(tape.gradient(peer_0_kl, z_peers[0]).numpy()).max() > 1e-4
    assert all(_is_zero(g) for g in tape.gradient(peer_0_kl, [*z_peers[1:], z_leader]))
    for gradient in tape.gradient(peer_0_kl, projections):
        assert np.abs(gradient.numpy()).max() > 1e-6
    # The leader's target is a constant: nothing but the leader learns from its KL.
    assert np.abs(tape.gradient(leader_kl, z_leader).numpy()).max() > 1e-4
    assert all(_is_zero(g) for g in tape.gradient(leader_kl, [*z_peers, *projections]))

    # One training step moves the projections and every model.
    before = [v.numpy().copy() for v in projections]
    models_before = [m.get_weights()[0].copy() for m in [leader, *peers]]
    distiller.compile(keras.optimizers.SGD(0.1))
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for a, v in zip(before, projections):
        assert np.abs(a - v.numpy()).max() > 1e-7
    for a, m in zip(models_before, [leader, *peers]):
        assert not np.array_equal(a, m.get_weights()[0])


def test_group_training_learns_and_leader_matches_training_alone():
    x, y = _stripes(128, seed=0)
    x_val, y_val = _stripes(256, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    leader, peers = _group(seed=0)
    alone = keras.models.clone_model(leader)
    alone.set_weights(leader.get_weights())

    distiller = OnlineDistiller(leader, peers, temperature=T)
    distiller.compile(keras.optimizers.Adam(0.02), metrics=[_accuracy()])
    history = distiller.fit(dataset, epochs=20, verbose=0).history
    alone.compile(
        keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[_accuracy()],
    )
    alone.fit(dataset, epochs=20, verbose=0)

    group_accuracy = distiller.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
    alone_accuracy = alone.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
    leader_accuracy = np.mean(leader.predict(x_val, verbose=0).argmax(-1) == y_val)
    print(f"held-out accuracy: leader with OKDDip {group_accuracy:.3f}, alone {alone_accuracy:.3f}")
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert group_accuracy > 0.6  # chance is 1/3
    # Observed, group vs alone: seed 0 (this test) 0.777 vs 0.676; seeds 1-4 gave 0.758/0.758,
    # 0.734/0.664, 0.664/0.672, 0.770/0.762. Better on average, not on every seed at this size,
    # so the test asks for "at least as good, within 0.02" rather than a margin.
    assert group_accuracy >= alone_accuracy - 0.02
    assert leader_accuracy == pytest.approx(group_accuracy)
    # Learned but not collapsed: below uniform over the 2 other peers, above a single choice.
    assert 0.05 < history["attention_entropy"][-1] < np.log(2) - 0.05


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda leader, peers: OnlineDistiller(
                leader, [peers[0], tiny_classifier(4, 4, name="wide")]
            ),
            r"same number of classes.*leader='leader' with 3 classes, peers\[1\]='wide' with 4",
        ),
        (lambda leader, peers: OnlineDistiller(leader, peers[:1]), r"at least 2 peers.*peer_0"),
        (lambda leader, peers: OnlineDistiller(leader, peers[0]), r"list of at least 2 models"),
        (lambda leader, peers: OnlineDistiller(leader, [peers[0], leader]), r"distinct models"),
        (lambda leader, peers: OnlineDistiller(leader, peers, temperature=0.0), r"temperature"),
        (
            lambda leader, peers: OnlineDistiller(leader, peers).compile("sgd", loss="mse"),
            r"Expected loss=None",
        ),
    ],
)
def test_bad_inputs_are_refused(build, message):
    leader, peers = _group(num_peers=2)
    with pytest.raises(ValueError, match=message):
        build(leader, peers)


def test_config_round_trips():
    leader, peers = _group(num_peers=2)
    assert_config_round_trip(
        OnlineDistiller(leader, peers, temperature=2.0, distillation_weight=0.5, projection_dim=4)
    )


def test_mirrored_strategy_matches_single_device():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest splits the CPU into two logical devices"
    x, y = tiny_data(8)

    def loss_and_gradients(strategy):
        with strategy.scope():
            leader, peers = _group()
            distiller = OnlineDistiller(leader, peers, temperature=T)
            distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
        before = [v.numpy().copy() for v in distiller.trainable_variables]
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = distiller.fit(dataset, epochs=1, verbose=0).history
        # One SGD step: the update divided by the learning rate is the gradient.
        gradients = [(b - v.numpy()) / 0.1 for b, v in zip(before, distiller.trainable_variables)]
        return history, gradients

    single, single_gradients = loss_and_gradients(tf.distribute.OneDeviceStrategy("/cpu:0"))
    # Reduced on one device rather than with collective ops, whose instance keys can clash with
    # those of another strategy made earlier in the same test process.
    mirrored = tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert mirrored.num_replicas_in_sync == 2
    replicated, replicated_gradients = loss_and_gradients(mirrored)
    for name in ("loss", "leader_loss", "peer_loss", "attention_entropy", "accuracy"):
        np.testing.assert_allclose(replicated[name][0], single[name][0], rtol=1e-5)
    assert len(single_gradients) == 4 * 4 + 2  # conv and dense of 4 models, query, key
    for a, b in zip(single_gradients, replicated_gradients):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
