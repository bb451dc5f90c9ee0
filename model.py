"""The generator/critic pairs of the paper, built from ops.

32x32 DCGAN pair for MNIST and SVHN, 64x64 ResNet pair for LSUN. Networks know
nothing about tasks: a generator maps (z, class) to images in [-1, 1], a critic
maps images to (Wasserstein score, class logits). groups=k makes a generator
treat its batch as k equal consecutive batches for normalisation statistics.
"""
import contextlib

import keras
import tensorflow as tf

import ops

Z_DIM = 128
PRECISIONS = ('float32', 'mixed_bfloat16')  # Keras policies: compute dtype; weights stay float32
AUTO_PRECISION = 'auto'  # a flag value, never a run's precision: resolved by auto_precision()
CPU_BFLOAT16_FLAGS = {'avx512_bf16', 'amx_bf16'}
GPU_BFLOAT16_CAPABILITY = (8, 0)  # Ampere


def has_bfloat16_units(cpuinfo='/proc/cpuinfo'):
    """Whether the device that trains has bfloat16 arithmetic: every GPU if there is one, else
    the CPU's flags (Linux). Without such units mixed_bfloat16 is slower than float32."""
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get('compute_capability') for gpu in gpus]
        return all(capability and tuple(capability) >= GPU_BFLOAT16_CAPABILITY for capability in capabilities)
    try:
        with open(cpuinfo) as f:
            flags = {word for line in f if line.startswith('flags') for word in line.split(':', 1)[-1].split()}
    except OSError:
        return False
    return bool(flags & CPU_BFLOAT16_FLAGS)


def auto_precision(cpuinfo='/proc/cpuinfo'):
    """mixed_bfloat16 where the hardware has bfloat16 units, float32 elsewhere (README: which
    runs were checked to learn the same in both)."""
    return PRECISIONS[1] if has_bfloat16_units(cpuinfo) else PRECISIONS[0]


@contextlib.contextmanager
def precision_policy(name):
    """Layers made inside compute in `name`; the policy before comes back even on an error,
    so that nothing made later (the evaluation classifier, DGR's solver) inherits it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def generator_norm(num_classes, conditional):
    return ops.ConditionalBatchNorm(num_classes) if conditional else ops.BatchNorm()


def normalize(norm, x, labels, groups):
    """Conditional norms look the class up; plain ones (DGR's unconditional G) ignore it."""
    if isinstance(norm, ops.ConditionalBatchNorm):
        return norm(x, labels, groups=groups)
    return norm(x, groups=groups)


class DCGANGenerator(keras.Model):
    """dense -> 4x4x4w, three 5x5 stride-2 transposed convs; class via conditional BN.

    conditional=False gives DGR's unconditional generator: plain batch norm, labels ignored.
    """

    def __init__(self, num_classes, channels, width=32, conditional=True, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.project = ops.dense(Z_DIM, 4 * 4 * 4 * width)
        self.norms = [generator_norm(num_classes, conditional) for _ in range(3)]
        self.upsamplers = [ops.transposed_conv(4 * width, 2 * width, 5),
                           ops.transposed_conv(2 * width, width, 5)]
        self.to_image = ops.transposed_conv(width, channels, 5)

    def call(self, z, labels, groups=None):
        x = tf.reshape(self.project(z), [-1, 4, 4, 4 * self.width])
        x = tf.nn.relu(normalize(self.norms[0], x, labels, groups))
        for upsample, norm in zip(self.upsamplers, self.norms[1:]):
            x = tf.nn.relu(normalize(norm, upsample(x), labels, groups))
        return tf.cast(tf.tanh(self.to_image(x)), tf.float32)


class DCGANCritic(keras.Model):
    """Three 5x5 stride-2 convs with LeakyReLU 0.2, no normalisation, two heads."""

    def __init__(self, num_classes, channels, width=32, **kwargs):
        super().__init__(**kwargs)
        sizes = [channels, width, 2 * width, 4 * width]
        self.convs = [ops.conv(sizes[i], sizes[i + 1], 5, stride=2) for i in range(3)]
        features = 4 * 4 * 4 * width
        self.score_head = ops.dense(features, 1)
        self.class_head = ops.dense(features, num_classes)

    def call(self, images):
        x = images
        for layer in self.convs:
            x = ops.leaky_relu(layer(x))
        return critic_heads(self, x)


def critic_heads(critic, features):
    """Score and logits, in float32 whatever the compute precision (losses stay exact)."""
    features = tf.reshape(features, [tf.shape(features)[0], -1])
    scores = tf.squeeze(critic.score_head(features), axis=1)
    return tf.cast(scores, tf.float32), tf.cast(critic.class_head(features), tf.float32)


class ResidualUp(keras.layers.Layer):
    """BN, ReLU, nearest x2 + 3x3 conv, BN, ReLU, 3x3 conv; 1x1 conv shortcut."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.shortcut = ops.conv(in_channels, out_channels, 1, he=False)
        self.norm1, self.norm2 = ops.BatchNorm(), ops.BatchNorm()
        self.conv1 = ops.conv(in_channels, out_channels, 3, use_bias=False)
        self.conv2 = ops.conv(out_channels, out_channels, 3)

    def call(self, x, groups=None):
        residual = self.conv1(ops.upsample_nearest(tf.nn.relu(self.norm1(x, groups=groups))))
        residual = self.conv2(tf.nn.relu(self.norm2(residual, groups=groups)))
        return self.shortcut(ops.upsample_nearest(x)) + residual


class ResidualDown(keras.layers.Layer):
    """LN, ReLU, 3x3 conv, LN, ReLU, 3x3 conv + mean-pool; mean-pool + 1x1 conv shortcut."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.shortcut = ops.conv(in_channels, out_channels, 1, he=False)
        self.norm1, self.norm2 = ops.LayerNorm(), ops.LayerNorm()
        self.conv1 = ops.conv(in_channels, in_channels, 3, use_bias=False)
        self.conv2 = ops.conv(in_channels, out_channels, 3)

    def call(self, x):
        residual = self.conv1(tf.nn.relu(self.norm1(x)))
        residual = ops.mean_pool(self.conv2(tf.nn.relu(self.norm2(residual))))
        return self.shortcut(ops.mean_pool(x)) + residual


class ResNetGenerator(keras.Model):
    """z with the one-hot class -> 4x4x8w -> four up blocks -> 64x64 (LSUN).

    conditional=False (DGR): z alone, labels ignored.
    """

    def __init__(self, num_classes, channels, width=64, conditional=True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.width, self.conditional = num_classes, width, conditional
        self.project = ops.dense(Z_DIM + (num_classes if conditional else 0), 4 * 4 * 8 * width)
        sizes = [8 * width, 8 * width, 4 * width, 2 * width, width]
        self.blocks = [ResidualUp(sizes[i], sizes[i + 1]) for i in range(4)]
        self.norm = ops.BatchNorm()
        self.to_image = ops.conv(width, channels, 3)

    def call(self, z, labels, groups=None):
        x = tf.concat([z, tf.one_hot(labels, self.num_classes)], axis=1) if self.conditional else z
        x = tf.reshape(self.project(x), [-1, 4, 4, 8 * self.width])
        for block in self.blocks:
            x = block(x, groups=groups)
        return tf.cast(tf.tanh(self.to_image(tf.nn.relu(self.norm(x, groups=groups)))), tf.float32)


class ResNetCritic(keras.Model):
    """3x3 conv -> four down blocks with layer norm -> 4x4x8w, two heads (LSUN)."""

    def __init__(self, num_classes, channels, width=64, **kwargs):
        super().__init__(**kwargs)
        self.stem = ops.conv(channels, width, 3, he=False)
        sizes = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.blocks = [ResidualDown(sizes[i], sizes[i + 1]) for i in range(4)]
        features = 4 * 4 * 8 * width
        self.score_head = ops.dense(features, 1)
        self.class_head = ops.dense(features, num_classes)

    def call(self, images):
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return critic_heads(self, x)


def critic_pass(critic, *batches):
    """One critic call on several batches, split back into (scores, logits) per batch.

    Exact because the critics have no batch coupling (no batch norm), and one
    large call runs faster than several small ones.
    """
    scores, logits = critic(tf.concat(batches, axis=0))
    sizes = [tf.shape(batch)[0] for batch in batches]
    return list(zip(tf.split(scores, sizes), tf.split(logits, sizes)))


ARCHITECTURES = {
    'dcgan32': (DCGANGenerator, DCGANCritic),
    'resnet64': (ResNetGenerator, ResNetCritic),
}


def build_generator(architecture, num_classes, image_shape, conditional=True):
    generator = ARCHITECTURES[architecture][0](num_classes, image_shape[-1], conditional=conditional)
    generator(tf.zeros([2, Z_DIM]), tf.zeros([2], tf.int32))  # create the weights now
    return generator


def build_critic(architecture, num_classes, image_shape):
    critic = ARCHITECTURES[architecture][1](num_classes, image_shape[-1])
    critic(tf.zeros([2, *image_shape]))
    return critic


def build_solver(architecture, num_classes, image_shape):
    """DGR's solver: a classifier with the critic's architecture, read through its class head."""
    return build_critic(architecture, num_classes, image_shape)
