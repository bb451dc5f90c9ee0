"""Layers and losses the paper needs, as small stateless pieces.

Losses are plain functions of tensors. Layers hold only their weights; batch
statistics always come from the current batch (the reference code never kept
moving averages, also not when sampling).

Under tf.distribute each replica holds a part of the global batch. Batch
statistics are then summed across replicas, and a loss is this replica's share
of the global batch's loss: the optimizer sums the replicas' gradients, so the
shares add up to one device's gradient. Outside a replica context (one device)
every helper below leaves the computation as it was.
"""
import math

import keras
import tensorflow as tf

BATCH_NORM_EPSILON = 1e-5


# --- initialisation as in the reference code (tflib) -------------------------

def reference_uniform(std):
    """Uniform initializer with the given standard deviation (tflib's choice)."""
    limit = std * math.sqrt(3.0)
    return keras.initializers.RandomUniform(-limit, limit)


def dense_init_std(fan_in, fan_out):
    return math.sqrt(2.0 / (fan_in + fan_out))


def conv_init_std(in_channels, out_channels, kernel_size, stride=1, transposed=False, he=True):
    """tflib's conv rule: fan_out shrinks by stride^2 (fan_in for transposed convs)."""
    fan_in = in_channels * kernel_size ** 2
    fan_out = out_channels * kernel_size ** 2
    if transposed:
        fan_in /= stride ** 2
    else:
        fan_out /= stride ** 2
    return math.sqrt((4.0 if he else 2.0) / (fan_in + fan_out))


def dense(in_features, units, name=None):
    return keras.layers.Dense(
        units, kernel_initializer=reference_uniform(dense_init_std(in_features, units)),
        bias_initializer='zeros', name=name)


def conv(in_channels, filters, kernel_size, stride=1, he=True, use_bias=True, name=None):
    std = conv_init_std(in_channels, filters, kernel_size, stride, he=he)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding='same', use_bias=use_bias,
        kernel_initializer=reference_uniform(std), bias_initializer='zeros', name=name)


def transposed_conv(in_channels, filters, kernel_size, stride=2, name=None):
    std = conv_init_std(in_channels, filters, kernel_size, stride, transposed=True)
    return keras.layers.Conv2DTranspose(
        filters, kernel_size, strides=stride, padding='same',
        kernel_initializer=reference_uniform(std), bias_initializer='zeros', name=name)


# --- the global batch under tf.distribute ---------------------------------------

def replica_count():
    """Replicas sharing the global batch; 1 on one device or in cross-replica context."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_sum(values):
    """Sum of each tensor over the replicas (the gradient of a sum is a sum)."""
    if replica_count() == 1:
        return values
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)


def replica_part(x, groups=None):
    """This replica's consecutive part of a global batch; with groups=k, its part of
    each of the k equal groups, so each replica holds every group."""
    count = replica_count()
    if count == 1:
        return x
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    grouped = tf.reshape(x, [1 if groups is None else groups, -1, *x.shape[1:]])
    size = tf.shape(grouped)[1]
    start, end = replica * size // count, (replica + 1) * size // count
    return tf.reshape(grouped[:, start:end], [-1, *x.shape[1:]])


def replica_share(x):
    """A replica's share of a value that every replica computes whole (a weight penalty)."""
    count = replica_count()
    return x if count == 1 else x / count


def batch_mean(x):
    """Mean over the global batch, as this replica's share (replicas may hold unequal parts)."""
    if replica_count() == 1:
        return tf.reduce_mean(x)
    global_size = replica_sum(tf.cast(tf.size(x), x.dtype))
    return tf.reduce_sum(x) / global_size


# --- normalisation -----------------------------------------------------------

def standardize(x, axes, epsilon=BATCH_NORM_EPSILON):
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon)


def batch_standardize(x, groups=None, epsilon=BATCH_NORM_EPSILON):
    """Per-channel standardisation on batch statistics (over N, H, W).

    groups=k splits the batch into k equal consecutive groups with statistics of
    their own: exactly what k separate generator calls would compute, as the
    reference code does for each replayed class. Without groups, the fused kernel
    does the same in one op (the generator's small layers are overhead-bound on CPU).
    Under tf.distribute the statistics are those of the global batch (or global groups).
    """
    if replica_count() > 1:
        return cross_replica_standardize(x, groups, epsilon)
    if groups is not None:
        height, width, channels = x.shape[1:]
        grouped = tf.reshape(x, [groups, -1, height, width, channels])
        return tf.reshape(standardize(grouped, axes=[1, 2, 3], epsilon=epsilon), tf.shape(x))
    channels = x.shape[-1]
    normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, tf.ones([channels]), tf.zeros([channels]), epsilon=epsilon, is_training=True)
    return normalized


def cross_replica_standardize(x, groups=None, epsilon=BATCH_NORM_EPSILON):
    """batch_standardize on statistics summed across replicas; two passes (mean, then
    squared deviations), as exact as one device's moments."""
    height, width, channels = x.shape[1:]
    grouped = tf.cast(tf.reshape(x, [1 if groups is None else groups, -1, height, width, channels]), tf.float32)
    count = tf.cast(tf.shape(grouped)[1] * height * width, tf.float32)
    total, count = replica_sum([tf.reduce_sum(grouped, axis=[1, 2, 3], keepdims=True), count])
    centred = grouped - total / count
    variance = replica_sum(tf.reduce_sum(tf.square(centred), axis=[1, 2, 3], keepdims=True)) / count
    normalized = centred * tf.math.rsqrt(variance + epsilon)
    return tf.reshape(tf.cast(normalized, x.dtype), tf.shape(x))


class ConditionalBatchNorm(keras.layers.Layer):
    """Batch norm whose per-channel scale and offset are looked up by class."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(self.num_classes, channels), initializer='ones', name='gamma')
        self.beta = self.add_weight(shape=(self.num_classes, channels), initializer='zeros', name='beta')

    def call(self, x, labels, groups=None):
        normalized = batch_standardize(x, groups)
        gamma = tf.cast(tf.gather(self.gamma, labels), x.dtype)[:, None, None, :]
        beta = tf.cast(tf.gather(self.beta, labels), x.dtype)[:, None, None, :]
        return normalized * gamma + beta


class BatchNorm(keras.layers.Layer):
    """Unconditional batch norm on batch statistics (LSUN generator)."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer='ones', name='gamma')
        self.beta = self.add_weight(shape=(channels,), initializer='zeros', name='beta')

    def call(self, x, groups=None):
        return batch_standardize(x, groups) * self.gamma + self.beta


class LayerNorm(keras.layers.Layer):
    """Per-sample norm over H, W, C with per-channel scale (LSUN critic).

    Per sample, so the critic's gradient penalty stays a per-sample quantity.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer='ones', name='gamma')
        self.beta = self.add_weight(shape=(channels,), initializer='zeros', name='beta')

    def call(self, x):
        return standardize(x, axes=[1, 2, 3]) * self.gamma + self.beta


def leaky_relu(x, slope=0.2):
    """max(slope * x, x), as the reference code wrote it.

    tf.nn.leaky_relu would be the same function, but after a conv its gradient
    makes grappler's remapper fail on the whole graph (TF 2.21), losing every fusion.
    """
    return tf.maximum(slope * x, x)


def mean_pool(x):
    return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding='VALID')


def upsample_nearest(x):
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


# --- losses --------------------------------------------------------------------

def critic_wasserstein_loss(real_scores, fake_scores):
    """Critic side of WGAN: E[D(fake)] - E[D(real)]."""
    return batch_mean(fake_scores) - batch_mean(real_scores)


def generator_wasserstein_loss(fake_scores):
    return -batch_mean(fake_scores)


def sample_interpolation_weights(rng, batch_size):
    """WGAN-GP's alpha: one U(0, 1) draw per sample, broadcast over pixels."""
    return rng.uniform([batch_size, 1, 1, 1], 0.0, 1.0)


def gradient_penalty(critic_score, real, fake, alpha):
    """E[(||grad_x D(x)||_2 - 1)^2] on x = real + alpha (fake - real) (Gulrajani et al.)."""
    interpolates = real + alpha * (fake - real)
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic_score(interpolates)
    gradients = tape.gradient(scores, interpolates)
    # The tiny constant keeps sqrt differentiable where a gradient vanishes.
    slopes = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + 1e-12)
    return batch_mean(tf.square(slopes - 1.0))


def classification_loss(logits, labels):
    """AC-GAN auxiliary cross-entropy, mean over the batch."""
    return batch_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def replay_alignment_loss(new_images, old_images):
    """0.5 * sum of squared pixel differences between the two generators' images
    (a sum over the batch: a replica's share is the sum over its part)."""
    return 0.5 * tf.reduce_sum(tf.square(new_images - old_images))


def ewc_penalty(weights, anchors, fisher, strength):
    """strength / 2 * sum_i F_i (theta_i - theta*_i)^2, the paper's Eq. 9 (EWC on G)."""
    terms = [tf.reduce_sum(f * tf.square(w - a)) for w, a, f in zip(weights, anchors, fisher)]
    return replica_share(0.5 * strength * tf.add_n(terms))
