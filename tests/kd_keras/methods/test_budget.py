import numpy as np
import pytest
import tf_keras as keras

from detection.centernet import build_centernet
from kd_keras.methods import budget
from kd_keras.models import build_cnn_classifier

CONVS = ["stage1_block1_conv", "stage2_block1_conv", "stage3_block1_conv"]


def _backbone(name: str) -> bool:
    return name.startswith(("stem", "stage"))


def _random_scales(model, convs, seed=0):
    rng = np.random.default_rng(seed)
    for name in convs:
        bn = budget.scale_layer(model, name)
        bn.gamma.assign(rng.uniform(0.1, 1.0, bn.gamma.shape).astype(np.float32))
        bn.beta.assign(rng.normal(size=bn.beta.shape).astype(np.float32))
        bn.moving_mean.assign(rng.normal(size=bn.gamma.shape).astype(np.float32))


def _silence_dropped(model, kept):
    """Zeroes γ and β of the channels `slim` drops: the full model then computes the same."""
    for name, indices in kept.items():
        bn = budget.scale_layer(model, name)
        mask = np.zeros(bn.gamma.shape, np.float32)
        mask[indices] = 1.0
        bn.gamma.assign(bn.gamma.numpy() * mask)
        bn.beta.assign(bn.beta.numpy() * mask)


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def test_prunable_convs_of_a_plain_chain_and_of_residual_backbones():
    cnn = build_cnn_classifier((16, 16, 1), 4, 0.5)
    assert budget.prunable_convs(cnn) == CONVS
    resnet = build_centernet((32, 32, 3), 2, "resnet", 0.25, 1)
    # Block outputs meet the shortcut in an Add: only the stem and inner convs can shrink.
    assert budget.prunable_convs(resnet, _backbone) == [
        "stem_conv",
        "stage1_block1_a_conv",
        "stage2_block1_a_conv",
        "stage3_block1_a_conv",
    ]
    mobilenet = build_centernet((32, 32, 3), 2, "mobilenet", 0.25, 1)
    assert "stage1_block1_expand_conv" in budget.prunable_convs(mobilenet, _backbone)


@pytest.mark.parametrize("kind", ["cnn_lma", "resnet", "mobilenet"])
def test_slim_keeps_the_chosen_channels_and_their_weights_exactly(kind):
    keras.utils.set_random_seed(0)
    if kind == "cnn_lma":
        model = build_cnn_classifier((16, 16, 1), 4, 0.5, activation="lma")
        shape = (3, 16, 16, 1)
    else:
        model = build_centernet((32, 32, 3), 2, kind, 0.25, 1)
        shape = (3, 32, 32, 3)
    convs = budget.prunable_convs(model, _backbone)
    _random_scales(model, convs)
    widths = {name: max(1, model.get_layer(name).filters // 2) for name in convs}
    kept = budget.strongest_channels(model, widths)
    slimmed = budget.slim(model, kept)
    assert {name: slimmed.get_layer(name).filters for name in convs} == widths
    assert slimmed.count_params() < model.count_params()
    _silence_dropped(model, kept)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    for full, slim in zip(_outputs(model, x), _outputs(slimmed, x)):
        np.testing.assert_allclose(slim, full, atol=1e-5)


def test_strongest_channels_are_the_largest_scales_in_order():
    model = build_cnn_classifier((8, 8, 1), 3, 0.25)
    budget.scale_layer(model, CONVS[0]).gamma.assign([0.1, -0.9, 0.5, 0.0, 0.3, 0.8, -0.2, 0.05])
    kept = budget.strongest_channels(model, {CONVS[0]: 3})
    np.testing.assert_array_equal(kept[CONVS[0]], [1, 2, 5])


def test_channel_costs_count_the_weights_one_channel_touches():
    model = build_cnn_classifier((8, 8, 1), 3, 0.25)  # 8, 16, 32 channels
    costs = budget.channel_costs(model, CONVS, "params")
    # A stage-2 channel: its 3·3·8 kernel, 4 BN values, and 3·3·32 weights of the next conv.
    assert costs["stage2_block1_conv"] == 3 * 3 * 8 + 4 + 3 * 3 * 32
    # A stage-3 channel: 3·3·16 kernel, 4 BN values and one row (3 weights) of the dense layer.
    assert costs["stage3_block1_conv"] == 3 * 3 * 16 + 4 + 3
    weights = budget.cost_weights(costs)
    assert np.isclose(np.mean(list(weights.values())), 1.0)
    flops = budget.channel_costs(model, CONVS, "flops")
    assert flops["stage1_block1_conv"] > flops["stage3_block1_conv"]  # larger maps, more FLOPs


def test_scaling_penalty_is_the_weighted_l1_of_the_scales():
    model = build_cnn_classifier((8, 8, 1), 3, 0.25)
    _random_scales(model, CONVS)
    weights = {CONVS[0]: 2.0, CONVS[1]: 1.0, CONVS[2]: 0.5}
    budget.add_scaling_penalty(model, CONVS, 0.01, weights)
    factors = budget.scaling_factors(model, CONVS)
    expected = sum(0.01 * weights[name] * factors[name].sum() for name in CONVS)
    assert np.isclose(float(sum(model.losses)), expected, rtol=1e-5)


@pytest.mark.parametrize("measure", ["params", "flops"])
def test_chosen_widths_fit_the_budget_with_the_lowest_threshold(measure):
    model = build_cnn_classifier((16, 16, 1), 4, 0.5)
    _random_scales(model, CONVS)
    full = budget.cost(model, measure)
    assert budget.choose_widths(model, CONVS, full, measure) == {
        name: model.get_layer(name).filters for name in CONVS
    }
    target = full // 3
    widths = budget.choose_widths(model, CONVS, target, measure, min_channels=2)
    assert budget.cost(budget.with_widths(model, widths), measure) <= target
    # One channel more, the next one by |γ|, would not fit.
    factors = budget.scaling_factors(model, CONVS)
    threshold = min(np.sort(factors[n])[::-1][widths[n] - 1] for n in CONVS)
    candidates = [
        (g, name) for name in CONVS for g in factors[name] if g < threshold and widths[name] < 16
    ]
    _, name = max(candidates)
    wider = {**widths, name: widths[name] + 1}
    assert budget.cost(budget.with_widths(model, wider), measure) > target


def test_a_budget_below_the_smallest_network_is_refused():
    model = build_cnn_classifier((16, 16, 1), 4, 0.5)
    with pytest.raises(ValueError, match="A params budget of 40 cannot be met"):
        budget.choose_widths(model, CONVS, 40, "params")  # 1 channel each: 47


def test_slim_refuses_a_conv_read_by_an_addition():
    resnet = build_centernet((32, 32, 3), 2, "resnet", 0.25, 1)
    with pytest.raises(ValueError, match=r"\['stage1_block1_b_conv'\] cannot"):
        budget.slim(resnet, {"stage1_block1_b_conv": [0, 1]})
