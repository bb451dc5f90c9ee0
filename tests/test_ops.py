import math

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import ops

EPS = ops.BATCH_NORM_EPSILON


def np_standardize(x, axes):
    """Population mean/variance over axes, as tf.nn.moments computes them."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def channel_skewed_batch(seed, shape, offsets, scales):
    """float32 NHWC batch whose channels have very different means and spreads."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.asarray(scales) + np.asarray(offsets)
    return x.astype(np.float32)


def built(layer, *inputs):
    layer(*inputs)  # creates the weights
    return layer


# ---------------------------------------------------------------- replay alignment

def test_replay_alignment_loss_hand_computed():
    new = tf.constant([1.0, -2.0, 3.0, 0.5], shape=[1, 2, 2, 1])
    old = tf.constant([0.0, 1.0, 3.0, -0.5], shape=[1, 2, 2, 1])
    # differences 1, -3, 0, 1 -> squares 1 + 9 + 0 + 1 = 11 -> 5.5
    assert float(ops.replay_alignment_loss(new, old)) == pytest.approx(5.5, abs=1e-6)
    assert float(ops.replay_alignment_loss(new, new)) == 0.0


def test_replay_alignment_loss_matches_numpy_sum_over_batch_and_pixels():
    rng = np.random.default_rng(3)
    new = rng.uniform(-1, 1, (5, 8, 8, 3)).astype(np.float32)
    old = rng.uniform(-1, 1, (5, 8, 8, 3)).astype(np.float32)
    expected = 0.5 * np.sum((new.astype(np.float64) - old) ** 2)
    got = float(ops.replay_alignment_loss(tf.constant(new), tf.constant(old)))
    assert got == pytest.approx(expected, rel=1e-5)
    # a sum, not a mean: doubling the batch doubles the loss
    doubled = float(ops.replay_alignment_loss(tf.concat([new, new], 0), tf.concat([old, old], 0)))
    assert doubled == pytest.approx(2 * expected, rel=1e-5)


# ---------------------------------------------------------------- gradient penalty

def linear_critic(w):
    return lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3])


def quadratic_critic(x):
    return 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])


@pytest.mark.parametrize('alpha_values', [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.1, 0.5, 0.93]])
def test_gradient_penalty_linear_critic_is_independent_of_alpha(alpha_values):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    real = tf.constant(rng.standard_normal((3, 4, 4, 2)), tf.float32)
    fake = tf.constant(rng.standard_normal((3, 4, 4, 2)), tf.float32)
    alpha = tf.constant(alpha_values, shape=[3, 1, 1, 1])
    expected = (np.linalg.norm(w.astype(np.float64)) - 1.0) ** 2
    got = float(ops.gradient_penalty(linear_critic(tf.constant(w)), real, fake, alpha))
    assert got == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_hand_computed_values():
    real = tf.zeros([2, 2, 2, 1])
    fake = tf.ones([2, 2, 2, 1])
    alpha = tf.constant([0.3, 0.8], shape=[2, 1, 1, 1])
    # ||w|| = sqrt(4 * 0.25) = 1 -> no penalty
    assert float(ops.gradient_penalty(linear_critic(tf.fill([1, 2, 2, 1], 0.5)), real, fake, alpha)) \
        == pytest.approx(0.0, abs=1e-6)
    # ||w|| = sqrt(4 * 0.01) = 0.2 -> (0.2 - 1)^2 = 0.64
    assert float(ops.gradient_penalty(linear_critic(tf.fill([1, 2, 2, 1], 0.1)), real, fake, alpha)) \
        == pytest.approx(0.64, rel=1e-5)
    # quadratic critic: gradient = interpolate = alpha * ones, norm 2 * alpha
    # mean((0.6 - 1)^2, (1.6 - 1)^2) = mean(0.16, 0.36) = 0.26
    assert float(ops.gradient_penalty(quadratic_critic, real, fake, alpha)) == pytest.approx(0.26, rel=1e-5)


def test_gradient_penalty_quadratic_critic_matches_numpy_per_sample_alpha():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((6, 3, 3, 2)).astype(np.float32) * 0.3
    fake = rng.standard_normal((6, 3, 3, 2)).astype(np.float32) * 0.3
    alpha = rng.uniform(0, 1, (6, 1, 1, 1)).astype(np.float32)
    interpolates = real + alpha * (fake - real)  # the gradient of 0.5 * ||x||^2 is x
    slopes = np.sqrt(np.sum(interpolates.astype(np.float64) ** 2, axis=(1, 2, 3)))
    expected = np.mean((slopes - 1.0) ** 2)
    got = float(ops.gradient_penalty(quadratic_critic, tf.constant(real), tf.constant(fake), tf.constant(alpha)))
    assert got == pytest.approx(expected, rel=1e-5)
    # alpha matters per sample: a different alpha gives a different penalty
    reversed_alpha = tf.constant(alpha[::-1].copy())
    other = float(ops.gradient_penalty(quadratic_critic, tf.constant(real), tf.constant(fake), reversed_alpha))
    assert abs(other - got) > 1e-3


def test_gradient_penalty_differentiates_into_critic_weights():
    """The critic's update needs d GP / d w: for the linear critic 2 (||w|| - 1) w / ||w||."""
    w_init = np.array([0.3, -1.2, 0.5, 2.0], np.float32).reshape(1, 2, 2, 1)
    w = tf.Variable(w_init)
    real = tf.zeros([2, 2, 2, 1])
    fake = tf.ones([2, 2, 2, 1])
    alpha = tf.constant([0.25, 0.75], shape=[2, 1, 1, 1])
    with tf.GradientTape() as tape:
        penalty = ops.gradient_penalty(linear_critic(w), real, fake, alpha)
    gradient = tape.gradient(penalty, w)
    norm = np.linalg.norm(w_init.astype(np.float64))
    np.testing.assert_allclose(gradient.numpy(), 2 * (norm - 1) * w_init / norm, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- alpha

def test_sample_interpolation_weights_one_uniform_draw_per_sample():
    alpha = ops.sample_interpolation_weights(tf.random.Generator.from_seed(7), 16)
    assert alpha.shape == (16, 1, 1, 1)
    assert alpha.dtype == tf.float32
    values = alpha.numpy().ravel()
    assert values.min() >= 0.0 and values.max() < 1.0
    assert len(np.unique(values)) == 16


def test_sample_interpolation_weights_follow_the_generator_state():
    first = ops.sample_interpolation_weights(tf.random.Generator.from_seed(7), 8).numpy()
    again = ops.sample_interpolation_weights(tf.random.Generator.from_seed(7), 8).numpy()
    np.testing.assert_array_equal(first, again)
    rng = tf.random.Generator.from_seed(7)
    ops.sample_interpolation_weights(rng, 8)
    second_draw = ops.sample_interpolation_weights(rng, 8).numpy()
    assert not np.array_equal(first, second_draw)


def test_sample_interpolation_weights_are_uniform_on_a_large_draw():
    values = ops.sample_interpolation_weights(tf.random.Generator.from_seed(2024), 20000).numpy().ravel()
    assert values.min() >= 0.0 and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.01  # standard error 0.002
    assert abs(values.var() - 1.0 / 12.0) < 0.003
    assert scipy.stats.kstest(values, 'uniform').pvalue > 0.01
    # a normal alpha (the Keras example's bug) would fail the same test
    normal = np.random.default_rng(0).normal(0.5, 0.29, 20000)
    assert scipy.stats.kstest(normal, 'uniform').pvalue < 1e-6


# ---------------------------------------------------------------- Wasserstein / AC losses

def test_critic_wasserstein_loss_hand_computed():
    real = tf.constant([1.0, 2.0, 3.0, 4.0])
    fake = tf.constant([-1.0, 0.0, 2.0])
    # mean(fake) - mean(real) = 1/3 - 5/2 = -13/6
    assert float(ops.critic_wasserstein_loss(real, fake)) == pytest.approx(-13.0 / 6.0, rel=1e-6)
    assert float(ops.critic_wasserstein_loss(fake, real)) == pytest.approx(13.0 / 6.0, rel=1e-6)


def test_generator_wasserstein_loss_hand_computed():
    assert float(ops.generator_wasserstein_loss(tf.constant([-1.0, 0.0, 2.0]))) == pytest.approx(-1.0 / 3.0)
    assert float(ops.generator_wasserstein_loss(tf.constant([4.0, 6.0]))) == pytest.approx(-5.0)


def np_cross_entropy(logits, labels):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_softmax[np.arange(len(labels)), labels])


def test_classification_loss_matches_numpy_log_softmax():
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((7, 10)) * 3).astype(np.float32)
    labels = np.array([0, 9, 3, 3, 5, 1, 7])
    got = float(ops.classification_loss(tf.constant(logits), tf.constant(labels)))
    assert got == pytest.approx(np_cross_entropy(logits, labels), rel=1e-5)


def test_classification_loss_hand_computed_and_stable():
    # uniform logits over 4 classes: -log(1/4)
    assert float(ops.classification_loss(tf.zeros([3, 4]), tf.constant([0, 2, 3]))) \
        == pytest.approx(math.log(4.0), rel=1e-6)
    # large logits must not overflow: [1000, 0] with label 1 costs 1000, label 0 costs ~0
    logits = tf.constant([[1000.0, 0.0], [1000.0, 0.0]])
    assert float(ops.classification_loss(logits, tf.constant([1, 0]))) == pytest.approx(500.0, rel=1e-6)


# ---------------------------------------------------------------- normalisation

def test_standardize_matches_numpy_on_given_axes():
    x = channel_skewed_batch(11, (3, 4, 4, 2), offsets=[5.0, -2.0], scales=[3.0, 0.2])
    for axes in ([0, 1, 2], [1, 2, 3]):
        np.testing.assert_allclose(ops.standardize(tf.constant(x), axes).numpy(),
                                   np_standardize(x.astype(np.float64), tuple(axes)), rtol=1e-4, atol=1e-5)


def test_conditional_batch_norm_uses_each_samples_class_parameters():
    x = channel_skewed_batch(0, (5, 3, 3, 2), offsets=[4.0, -1.0], scales=[2.0, 0.5])
    labels = np.array([2, 0, 1, 2, 0])
    layer = built(ops.ConditionalBatchNorm(3), tf.constant(x), tf.constant(labels))
    assert layer.gamma.shape == (3, 2) and layer.beta.shape == (3, 2)
    np.testing.assert_array_equal(layer.gamma.numpy(), np.ones((3, 2)))
    np.testing.assert_array_equal(layer.beta.numpy(), np.zeros((3, 2)))
    gamma = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]], np.float32)
    beta = np.array([[0.0, 1.0], [-2.0, 3.0], [10.0, -10.0]], np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)

    got = layer(tf.constant(x), tf.constant(labels)).numpy()
    normalized = np_standardize(x.astype(np.float64), (0, 1, 2))  # statistics of the whole batch
    for i, label in enumerate(labels):
        np.testing.assert_allclose(got[i], normalized[i] * gamma[label] + beta[label], rtol=1e-4, atol=1e-4)


def test_conditional_batch_norm_has_no_moving_statistics():
    layer = ops.ConditionalBatchNorm(4)
    first = channel_skewed_batch(1, (8, 4, 4, 3), offsets=[100.0, -3.0, 0.0], scales=[5.0, 0.1, 1.0])
    second = channel_skewed_batch(2, (8, 4, 4, 3), offsets=[-50.0, 7.0, 2.0], scales=[0.3, 20.0, 4.0])
    labels = tf.constant([0, 1, 2, 3, 3, 2, 1, 0])
    for batch in (first, second, first):
        out = layer(tf.constant(batch), labels).numpy()
        variance = batch.astype(np.float64).var(axis=(0, 1, 2))
        np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
        np.testing.assert_allclose(out.var(axis=(0, 1, 2)), variance / (variance + EPS), rtol=1e-4)
    assert [tuple(w.shape) for w in layer.weights] == [(4, 3), (4, 3)]
    assert layer.non_trainable_weights == []
    # inference mode uses the batch statistics too
    np.testing.assert_allclose(layer(tf.constant(second), labels, training=False).numpy(),
                               layer(tf.constant(second), labels, training=True).numpy(), atol=1e-6)


def test_batch_norm_matches_numpy_with_per_channel_parameters():
    x = channel_skewed_batch(4, (4, 3, 5, 3), offsets=[2.0, -6.0, 0.0], scales=[1.0, 3.0, 0.05])
    layer = built(ops.BatchNorm(), tf.constant(x))
    assert [tuple(w.shape) for w in layer.weights] == [(3,), (3,)]
    gamma = np.array([2.0, -0.5, 1.5], np.float32)
    beta = np.array([0.1, 3.0, -1.0], np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    expected = np_standardize(x.astype(np.float64), (0, 1, 2)) * gamma + beta
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_layer_norm_matches_numpy_per_sample_over_h_w_c():
    rng = np.random.default_rng(6)
    # samples on very different scales, so batch statistics would give a different answer
    x = (rng.standard_normal((3, 4, 4, 2)) * np.array([0.1, 1.0, 30.0])[:, None, None, None]
         + np.array([-5.0, 0.0, 8.0])[:, None, None, None]).astype(np.float32)
    layer = built(ops.LayerNorm(), tf.constant(x))
    assert [tuple(w.shape) for w in layer.weights] == [(2,), (2,)]
    gamma = np.array([3.0, -2.0], np.float32)
    beta = np.array([0.5, 1.0], np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    got = layer(tf.constant(x)).numpy()
    expected = np_standardize(x.astype(np.float64), (1, 2, 3)) * gamma + beta
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # per sample: a sample normalised alone gives the same numbers as inside the batch
    np.testing.assert_allclose(layer(tf.constant(x[1:2])).numpy(), got[1:2], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- reference init

def test_init_std_formulas():
    assert ops.dense_init_std(128, 2048) == pytest.approx(math.sqrt(2.0 / (128 + 2048)), rel=1e-12)
    # conv 5x5 stride 2, 1 -> 32: fan_in 25, fan_out 32 * 25 / 4 = 200
    assert ops.conv_init_std(1, 32, 5, stride=2) == pytest.approx(math.sqrt(4.0 / 225.0), rel=1e-12)
    assert ops.conv_init_std(1, 32, 5, stride=2) == pytest.approx(2.0 / 15.0, rel=1e-12)
    # transposed 128 -> 64, 5x5 stride 2: fan_in 128 * 25 / 4 = 800, fan_out 64 * 25 = 1600
    assert ops.conv_init_std(128, 64, 5, stride=2, transposed=True) \
        == pytest.approx(math.sqrt(4.0 / 2400.0), rel=1e-12)
    # 3x3 stride 1, 512 -> 512 (ResNet blocks): fan_in = fan_out = 4608
    assert ops.conv_init_std(512, 512, 3) == pytest.approx(math.sqrt(4.0 / 9216.0), rel=1e-12)
    # Glorot variant for the 1x1 shortcuts and the ResNet critic stem: 2 instead of 4
    assert ops.conv_init_std(3, 64, 3, he=False) == pytest.approx(math.sqrt(2.0 / (27 + 576)), rel=1e-12)
    assert ops.conv_init_std(256, 128, 1, he=False) == pytest.approx(math.sqrt(2.0 / 384.0), rel=1e-12)


def test_reference_uniform_bounds():
    config = ops.reference_uniform(0.2).get_config()
    assert config['minval'] == pytest.approx(-0.2 * math.sqrt(3.0))
    assert config['maxval'] == pytest.approx(0.2 * math.sqrt(3.0))


def assert_reference_kernel(kernel, std, rel):
    kernel = np.asarray(kernel, np.float64)
    limit = std * math.sqrt(3.0)
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)
    assert np.abs(kernel).max() > 0.99 * limit  # fills the interval, so uniform not normal
    assert kernel.std() == pytest.approx(std, rel=rel)
    assert abs(kernel.mean()) < 0.05 * std


def test_built_layers_follow_the_reference_init():
    keras.utils.set_random_seed(0)
    layer = built(ops.dense(128, 2048), tf.zeros([1, 128]))
    assert layer.kernel.shape == (128, 2048)
    assert_reference_kernel(layer.kernel, math.sqrt(2.0 / 2176.0), rel=0.01)
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)

    layer = built(ops.conv(1, 32, 5, stride=2), tf.zeros([1, 8, 8, 1]))
    assert layer.kernel.shape == (5, 5, 1, 32) and layer.strides == (2, 2) and layer.padding == 'same'
    assert_reference_kernel(layer.kernel, 2.0 / 15.0, rel=0.08)  # 800 weights: std known to ~2%
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)

    layer = built(ops.conv(64, 128, 5, stride=2), tf.zeros([1, 8, 8, 64]))
    assert_reference_kernel(layer.kernel, math.sqrt(4.0 / (1600 + 800)), rel=0.01)

    layer = built(ops.transposed_conv(128, 64, 5), tf.zeros([1, 4, 4, 128]))
    assert layer.kernel.shape == (5, 5, 64, 128) and layer.strides == (2, 2)
    assert_reference_kernel(layer.kernel, math.sqrt(4.0 / 2400.0), rel=0.01)
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    assert layer(tf.zeros([2, 4, 4, 128])).shape == (2, 8, 8, 64)

    layer = built(ops.conv(256, 256, 3, use_bias=False), tf.zeros([1, 4, 4, 256]))
    assert layer.bias is None and len(layer.weights) == 1
    assert_reference_kernel(layer.kernel, math.sqrt(4.0 / 4608.0), rel=0.01)


# ---------------------------------------------------------------- resampling

def test_mean_pool_exact():
    x = np.arange(1 * 4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 2)
    expected = x.reshape(1, 2, 2, 2, 2, 2).mean(axis=(2, 4))
    got = ops.mean_pool(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # channel 0 is 0, 2, 4, ...: top-left window holds 0, 2, 8, 10
    assert got[0, 0, 0, 0] == pytest.approx(5.0)
    assert got[0, 1, 1, 1] == pytest.approx((21 + 23 + 29 + 31) / 4)


def test_upsample_nearest_exact():
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]], shape=[1, 2, 2, 1])
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], np.float32)
    np.testing.assert_array_equal(ops.upsample_nearest(x).numpy()[0, :, :, 0], expected)
    y = np.random.default_rng(8).standard_normal((2, 3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(ops.upsample_nearest(tf.constant(y)).numpy(),
                                  y.repeat(2, axis=1).repeat(2, axis=2))
    # mean_pool undoes it
    np.testing.assert_allclose(ops.mean_pool(ops.upsample_nearest(tf.constant(y))).numpy(), y, rtol=1e-6)
