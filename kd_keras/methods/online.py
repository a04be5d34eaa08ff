"""Online distillation with diverse peers (OKDDip): students taught by their group, no teacher.

Chen, Mei, Wang, Feng and Chen, "Online Knowledge Distillation with Diverse Peers", AAAI 2020
(arXiv:1912.00350). Several auxiliary peers and one group leader train together from scratch; each
peer learns from its own attention-weighted aggregate of the group, and the leader, the only model
kept afterwards, learns from the ensemble of those targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf
import tf_keras as keras

from kd_keras import losses
from kd_keras.distiller import as_float32
from kd_keras.methods.base import Method
from kd_keras.models import graph

_PACKAGE = "kd_keras"
# Added to the attention logit of a peer on itself: its weight is exactly 0 after the softmax.
_SELF_ENERGY = -1e9


class GroupDistillation(NamedTuple):
    """The OKDDip quantities for one batch of `m` peers and `C` classes.

    Attributes:
        attention: `[batch, m, m]` aggregation weights α; row `i` is peer i's (sums to 1, α_ii = 0).
        peer_targets: `[batch, m, C]` soft targets t_i = Σ_{j≠i} α_ij · softmax(z_j / T).
        leader_target: `[batch, C]` the leader's target t_L = (1/m) Σ_i t_i (no gradient).
        peer_kl: `[batch, m]` T² · KL(t_i ‖ softmax(z_i / T)), unweighted.
        leader_kl: `[batch]` T² · KL(t_L ‖ softmax(z_L / T)), unweighted.
        attention_entropy: `[batch]` mean over peers of the entropy of α_i (in nats).
    """

    attention: tf.Tensor
    peer_targets: tf.Tensor
    leader_target: tf.Tensor
    peer_kl: tf.Tensor
    leader_kl: tf.Tensor
    attention_entropy: tf.Tensor


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OnlineDistiller(keras.Model):
    """Trains a group leader and auxiliary peers together by two-level distillation (OKDDip).

    There is no pre-trained teacher: the targets come from the group itself (Chen et al., "Online
    Knowledge Distillation with Diverse Peers", AAAI 2020). Plain averaging of the peers' outputs
    (as in ONE or CL-ILR) pulls every peer to the same target, and the group homogenises early;
    OKDDip gives each peer its own attention-weighted aggregate instead, which keeps the peers
    diverse, and the leader learns from the ensemble of those diverse targets.

    Formula:
        z_1..z_m = peers' logits,  z_L = leader's logits,  p_j = softmax(sg(z_j) / T)
        α_ij = softmax_{j≠i}( (W_q sg(z_i)) · (W_k sg(z_j)) ),  α_ii = 0   (rows of α sum to 1)
        t_i  = Σ_{j≠i} α_ij · p_j                                  (peer i's own target)
        L_i  = CE(y, z_i) + λ · T² · KL(t_i ‖ softmax(z_i / T))
        t_L  = sg( (1/m) Σ_i t_i )
        L_L  = CE(y, z_L) + λ · T² · KL(t_L ‖ softmax(z_L / T))
        loss = Σ_i L_i + L_L

    where `sg` is stop-gradient, `λ = distillation_weight`, `T = temperature`, and T² keeps the
    gradient of the soft terms independent of T (Hinton et al., 2015).

    Gradients: a target is a constant for the model it teaches (and for every other peer), so each
    peer learns only through its own CE and the student side of its KL. The query/key projections
    `W_q`, `W_k` (Dense, `projection_dim` units, no bias, as in the paper) are the only variables
    on the target side; they learn through the peers' KL terms, which is how the aggregation is
    learned. The leader's target passes no gradient at all.

    Deviation from the paper: the sum excludes `j = i` (the paper's abstract says "from
    predictions of other auxiliary peers", but its released code attends to all m). Learned
    through the KL with a constant p_i, the self weight has a trivial optimum, α_ii = 1: the
    target becomes the peer's own prediction, its KL is 0, and the first level of distillation
    disappears. With the self term, the attention entropy of 3 tiny peers fell from log 3 = 1.10
    to 0.17-0.30 nats within 160 Adam steps and kept falling. Without it, every target mixes other
    peers, so its KL never vanishes; the attention still learns which peers to weigh for each
    example (the KL pulls it towards the most similar other peer). With 2 peers each target is
    simply the other peer (α is 1 and the projections get zero gradient), which is deep mutual
    learning for the peers. `attention_entropy` tracks the diversity of the weights: log(m − 1)
    is uniform, 0 is a single chosen peer.

    The paper projects each peer's penultimate features; here the projections read the peers'
    logits instead, so a peer is any logits classifier (black-box: no layer names, any
    architecture), at the cost of a less informative attention input.

    Args:
        leader: the logits classifier kept afterwards (a functional or Sequential tf_keras model;
            the pipeline saves it).
        peers: at least 2 auxiliary logits classifiers with the leader's number of classes, each a
            distinct model (shared weights would make the group's "diversity" meaningless).
        temperature: softening temperature T > 0 of every soft target.
        distillation_weight: weight λ ≥ 0 of each T²-scaled KL term.
        projection_dim: width of the query and key projections.
        name: the model's name.

    Metrics: `loss` (the total above, per example), `leader_loss`, `peer_loss` (mean of the
    L_i over peers), `attention_entropy`, then the compiled metrics on the leader's logits.
    Evaluation runs the leader only: `loss` is then its cross-entropy.

    Raises:
        ValueError: with fewer than 2 peers, a model given twice, a class-count mismatch, or a
            non-positive temperature or projection width.

    Example:
        >>> distiller = OnlineDistiller(leader, [peer_a, peer_b, peer_c], temperature=3.0)
        >>> distiller.compile(keras.optimizers.SGD(0.1, momentum=0.9),
        ...                   metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        >>> distiller.fit(dataset, epochs=30)
        >>> distiller.leader.save("leader.keras")
    """

    def __init__(
        self,
        leader: keras.Model,
        peers: Sequence[keras.Model],
        *,
        temperature: float = 3.0,
        distillation_weight: float = 1.0,
        projection_dim: int = 32,
        name: str = "online_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(peers, keras.Model) or not isinstance(peers, Sequence):
            raise ValueError(
                "Expected peers to be a list of at least 2 models. "
                f"Received: peers={type(peers).__name__}."
            )
        peers = list(peers)
        if len(peers) < 2:
            raise ValueError(
                "Expected at least 2 peers: OKDDip aggregates each peer's target from the group. "
                f"Received: {len(peers)} peers={[getattr(p, 'name', p) for p in peers]}."
            )
        if not temperature > 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}.")
        if not distillation_weight >= 0:
            raise ValueError(
                "Expected distillation_weight >= 0. "
                f"Received: distillation_weight={distillation_weight}."
            )
        if int(projection_dim) != projection_dim or projection_dim < 1:
            raise ValueError(
                f"Expected projection_dim to be a positive integer. "
                f"Received: projection_dim={projection_dim}."
            )
        graph.check_functional(leader, "leader")
        for index, peer in enumerate(peers):
            graph.check_functional(peer, f"peers[{index}]")
        models = [leader, *peers]
        if len({id(model) for model in models}) != len(models):
            raise ValueError(
                "Expected the leader and each peer to be distinct models. "
                f"Received: leader={leader.name!r}, peers={[p.name for p in peers]}, with a "
                "model given twice."
            )
        num_classes = _num_classes("leader", leader)
        for index, peer in enumerate(peers):
            peer_classes = _num_classes(f"peers[{index}]", peer)
            if peer_classes != num_classes:
                raise ValueError(
                    "Expected the leader and every peer to predict the same number of classes. "
                    f"Received: leader={leader.name!r} with {num_classes} classes, "
                    f"peers[{index}]={peer.name!r} with {peer_classes} classes."
                )

        self.leader = leader
        self.peers = peers
        self.temperature = float(temperature)
        self.distillation_weight = float(distillation_weight)
        self.projection_dim = int(projection_dim)
        self.num_classes = num_classes
        # float32 even under mixed precision: the attention logits go through a softmax.
        self.query = keras.layers.Dense(
            self.projection_dim, use_bias=False, dtype="float32", name="query"
        )
        self.key = keras.layers.Dense(
            self.projection_dim, use_bias=False, dtype="float32", name="key"
        )
        self.query.build((None, num_classes))
        self.key.build((None, num_classes))
        self.built = True

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.leader_loss_tracker = keras.metrics.Mean(name="leader_loss")
        self.peer_loss_tracker = keras.metrics.Mean(name="peer_loss")
        self.attention_entropy_tracker = keras.metrics.Mean(name="attention_entropy")
        # Global results already (see `Distiller`): not summed once more per worker.
        self.distribute_reduction_method = "first"

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; the loss is built in, metrics apply to the leader's logits.

        Labels are integer class ids; every model's task loss is sparse categorical cross-entropy
        from logits.

        Raises:
            ValueError: if `loss` is given.
        """
        if loss is not None:
            raise ValueError(
                "Expected loss=None: the OnlineDistiller builds in sparse categorical "
                f"cross-entropy from logits for the leader and every peer. Received: loss={loss!r}."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    # === Forward ===

    def call(self, inputs, training=None):
        return self.leader(inputs, training=training)

    def group_distillation(
        self, peer_logits: Sequence[tf.Tensor], leader_logits: tf.Tensor
    ) -> GroupDistillation:
        """The attention, targets and KL terms of the formula, from the models' logits.

        Args:
            peer_logits: one `[batch, classes]` tensor per peer, in the order of `peers`.
            leader_logits: `[batch, classes]` leader logits.

        Returns:
            A `GroupDistillation`; the KL terms are T²-scaled but not weighted by λ.
        """
        temperature = tf.constant(self.temperature, tf.float32)
        logits = tf.stack([tf.cast(z, tf.float32) for z in peer_logits], axis=1)  # [b, m, C]
        # The targets are constants for the peers: neither the probabilities nor the attention
        # inputs pass gradients to any peer. Only W_q and W_k learn from the target side.
        frozen = tf.stop_gradient(logits)
        energy = tf.einsum("bid,bjd->bij", self.query(frozen), self.key(frozen))
        # A peer never attends to itself: with α_ii free, the KL's optimum is α_ii = 1 (see the
        # class docstring). A large finite value, not -inf, keeps 0 · log α finite.
        energy += _SELF_ENERGY * tf.eye(len(peer_logits), dtype=energy.dtype)
        attention = tf.nn.softmax(energy, axis=-1)
        probabilities = tf.nn.softmax(frozen / temperature, axis=-1)
        peer_targets = tf.einsum("bij,bjc->bic", attention, probabilities)
        leader_target = tf.stop_gradient(tf.reduce_mean(peer_targets, axis=1))
        peer_kl = _kl_to_distribution(peer_targets, logits, temperature)
        leader_kl = _kl_to_distribution(leader_target, leader_logits, temperature)
        entropy = -tf.reduce_sum(attention * tf.nn.log_softmax(energy, axis=-1), axis=-1)
        return GroupDistillation(
            attention=attention,
            peer_targets=peer_targets,
            leader_target=leader_target,
            peer_kl=peer_kl,
            leader_kl=leader_kl,
            attention_entropy=tf.reduce_mean(entropy, axis=-1),
        )

    def _objective(self, x, y, training):
        """Leader logits, then per-example total, leader loss, mean peer loss, attention entropy."""
        leader_logits = as_float32(self.leader(x, training=training))
        peer_logits = [as_float32(peer(x, training=training)) for peer in self.peers]
        group = self.group_distillation(peer_logits, leader_logits)
        weight = self.distillation_weight
        peer_losses = (
            tf.stack([_cross_entropy(y, z) for z in peer_logits], axis=1) + weight * group.peer_kl
        )  # [batch, m]
        leader_loss = _cross_entropy(y, leader_logits) + weight * group.leader_kl
        total = tf.reduce_sum(peer_losses, axis=1) + leader_loss
        return (
            leader_logits,
            total,
            leader_loss,
            tf.reduce_mean(peer_losses, axis=1),
            group.attention_entropy,
        )

    def train_step(self, data):
        x, y = _unpack(data)
        with tf.GradientTape() as tape:
            leader_logits, total, leader_loss, peer_loss, entropy = self._objective(
                x, y, training=True
            )
            # Average over the global batch so gradients summed across replicas are the mean.
            loss = losses.global_batch_mean(total)
            if self.losses:
                regularization = tf.add_n([tf.cast(r, tf.float32) for r in self.losses])
                loss += tf.nn.scale_regularization_loss(regularization)
        # One optimizer over leader, peers and projections; `minimize` lets a
        # `LossScaleOptimizer` (mixed precision) scale the loss and unscale the gradients.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(total)
        self.leader_loss_tracker.update_state(leader_loss)
        self.peer_loss_tracker.update_state(peer_loss)
        self.attention_entropy_tracker.update_state(entropy)
        self.compiled_metrics.update_state(y, leader_logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        # Only the leader is kept, so only the leader is evaluated (the peers do not run).
        x, y = _unpack(data)
        leader_logits = as_float32(self.leader(x, training=False))
        self.loss_tracker.update_state(_cross_entropy(y, leader_logits))
        self.compiled_metrics.update_state(y, leader_logits)
        compiled = self.compiled_metrics.metrics if self.compiled_metrics is not None else []
        return {m.name: m.result() for m in [self.loss_tracker, *compiled]}

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.leader(x, training=False)

    @property
    def metrics(self):
        trackers = [
            self.loss_tracker,
            self.leader_loss_tracker,
            self.peer_loss_tracker,
            self.attention_entropy_tracker,
        ]
        compiled = self.compiled_metrics.metrics if self.compiled_metrics is not None else []
        return trackers + list(compiled)

    # === Config ===

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "leader": serialize(self.leader),
            "peers": [serialize(peer) for peer in self.peers],
            "temperature": self.temperature,
            "distillation_weight": self.distillation_weight,
            "projection_dim": self.projection_dim,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        config["leader"] = deserialize(config["leader"], custom_objects=custom_objects)
        config["peers"] = [deserialize(p, custom_objects=custom_objects) for p in config["peers"]]
        return cls(**config)


def _num_classes(role: str, model: keras.Model) -> int:
    shape = model.output_shape
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"Expected the {role} to be a logits classifier with one [batch, classes] output. "
            f"Received: {role}={model.name!r} with output shape {shape}."
        )
    return int(shape[-1])


def _cross_entropy(y, logits: tf.Tensor) -> tf.Tensor:
    """`[batch]` sparse categorical cross-entropy from logits."""
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _kl_to_distribution(target: tf.Tensor, logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
    """T² · KL(target ‖ softmax(logits / T)) over the last axis, for a target already softened.

    The targets are mixtures of softened distributions, not logits, so `soft_target_kl` runs at
    T = 1 on `logits / T` (which must not soften the target again) and the T² factor goes here.
    """
    kl = losses.soft_target_kl(target, logits / temperature, 1.0, teacher_kind="probabilities")
    return temperature**2 * kl


def _unpack(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None or sample_weight is not None:
        raise ValueError(
            "Expected each element to be (x, y) with integer labels y: every model's "
            "cross-entropy needs them, and sample weights are not supported. "
            f"Received: y={'missing' if y is None else 'given'}, "
            f"sample_weight={'given' if sample_weight is not None else None}."
        )
    return x, y


#: A leader trained with its peers by `OnlineDistiller`, no teacher (its task reads
#: `stage.method`).
OKDDIP = Method("okddip", "OKDDip peers, no teacher")

__all__ = ["OKDDIP", "GroupDistillation", "OnlineDistiller"]
