import tf_keras as keras

from kd_keras.profile import profile_model
from tests.helpers import tiny_classifier


def test_dense_flops_and_params_by_hand():
    inputs = keras.Input((10,))
    outputs = keras.layers.Dense(5)(inputs)
    profile = profile_model(keras.Model(inputs, outputs))
    assert profile.params == 10 * 5 + 5
    # MatMul: 2·10·5 multiply-adds counted as 2 FLOPs each; BiasAdd: 5.
    assert profile.flops == 2 * 10 * 5 + 5
    assert profile.size_bytes > 4 * profile.params


def test_conv_flops_scale_with_width():
    small = profile_model(tiny_classifier(3, 4))
    large = profile_model(tiny_classifier(3, 8))
    # conv MACs: 6·6 positions · 3·3·1 kernel · width; twice the width, twice the conv FLOPs.
    assert small.flops >= 2 * 36 * 9 * 4
    assert 1.8 < large.flops / small.flops < 2.1
    assert large.params > small.params
