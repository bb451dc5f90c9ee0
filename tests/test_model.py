import keras
import numpy as np
import pytest
import tensorflow as tf

import model
import ops

NUM_CLASSES = 10

# Hand counts for width 32 from model.py's docstrings (dense -> 4x4x128, three 5x5
# stride-2 transposed convs with conditional BN; three 5x5 stride-2 convs, two heads):
#   generator: dense 128*2048+2048 = 264192; CBN 2*10*(128+64+32) = 4480;
#              tconv 25*128*64+64 = 204864; tconv 25*64*32+32 = 51232; tconv 25*32*C+C
#   critic:    conv 25*C*32+32; conv 25*32*64+64 = 51264; conv 25*64*128+128 = 204928;
#              score 2048+1 = 2049; classes 2048*10+10 = 20490
DCGAN_PARAMS = {
    1: (264192 + 4480 + 204864 + 51232 + 801, 832 + 51264 + 204928 + 2049 + 20490),
    3: (264192 + 4480 + 204864 + 51232 + 2403, 2432 + 51264 + 204928 + 2049 + 20490),
}


def conditional_norms(generator):
    return [layer for layer in generator.layers if isinstance(layer, ops.ConditionalBatchNorm)]


def randomize_class_parameters(generator, seed):
    """Distinct gamma/beta per class, as after training (at init every class has 1 and 0)."""
    rng = np.random.default_rng(seed)
    for norm in conditional_norms(generator):
        norm.gamma.assign(rng.uniform(0.5, 1.5, norm.gamma.shape).astype(np.float32))
        norm.beta.assign(rng.normal(0.0, 0.5, norm.beta.shape).astype(np.float32))


def noise(seed, batch):
    return tf.constant(np.random.default_rng(seed).standard_normal((batch, model.Z_DIM)), tf.float32)


@pytest.fixture(scope='module', params=[(32, 32, 1), (32, 32, 3)], ids=['mnist', 'svhn'])
def dcgan(request):
    keras.utils.set_random_seed(0)
    shape = request.param
    return (shape, model.build_generator('dcgan32', NUM_CLASSES, shape),
            model.build_critic('dcgan32', NUM_CLASSES, shape))


@pytest.fixture
def fresh_generator():
    """A DCGAN generator of its own, for tests that overwrite its class parameters."""
    keras.utils.set_random_seed(1)
    return model.build_generator('dcgan32', NUM_CLASSES, (32, 32, 1))


# ---------------------------------------------------------------- DCGAN pair

def test_dcgan_output_shapes_and_ranges(dcgan):
    shape, generator, critic = dcgan
    labels = tf.constant([0, 1, 2, 3, 4, 5, 9])
    images = generator(noise(0, 7), labels)
    assert images.shape == (7, *shape) and images.dtype == tf.float32
    values = images.numpy()
    assert np.all(np.isfinite(values)) and values.min() >= -1.0 and values.max() <= 1.0
    assert values.min() < -0.01 and values.max() > 0.01  # tanh's symmetric range, not [0, 1]
    assert values.std() > 1e-3  # not a constant image
    scores, logits = critic(images)
    assert scores.shape == (7,) and logits.shape == (7, NUM_CLASSES)
    scores, logits = critic(tf.zeros([3, *shape]))
    assert scores.shape == (3,) and logits.shape == (3, NUM_CLASSES)


def test_dcgan_parameter_counts_match_the_hand_count(dcgan):
    shape, generator, critic = dcgan
    generator_params, critic_params = DCGAN_PARAMS[shape[-1]]
    assert generator.count_params() == generator_params
    assert critic.count_params() == critic_params
    assert generator.non_trainable_weights == [] and critic.non_trainable_weights == []


def test_dcgan_parameter_counts_are_stable_numbers():
    assert DCGAN_PARAMS[1] == (525569, 279563)  # MNIST
    assert DCGAN_PARAMS[3] == (527171, 281163)  # SVHN


def test_dcgan_generator_weight_shapes(dcgan):
    shape, generator, _ = dcgan
    channels = shape[-1]
    assert sorted(tuple(w.shape) for w in generator.weights) == sorted([
        (128, 2048), (2048,),
        (10, 128), (10, 128), (10, 64), (10, 64), (10, 32), (10, 32),
        (5, 5, 64, 128), (64,), (5, 5, 32, 64), (32,), (5, 5, channels, 32), (channels,)])


def test_dcgan_critic_has_no_normalisation(dcgan):
    shape, _, critic = dcgan
    assert [type(layer) for layer in critic.layers] == [keras.layers.Conv2D] * 3 + [keras.layers.Dense] * 2
    owned = {id(w) for layer in critic.layers for w in layer.weights}
    assert owned == {id(w) for w in critic.weights} and len(critic.weights) == 10
    # no batch coupling: each sample's score is the same alone as inside a batch
    images = tf.constant(np.random.default_rng(2).uniform(-1, 1, (4, *shape)), tf.float32)
    scores, logits = critic(images)
    for i in range(4):
        alone_score, alone_logits = critic(images[i:i + 1])
        np.testing.assert_allclose(alone_score.numpy(), scores.numpy()[i:i + 1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alone_logits.numpy(), logits.numpy()[i:i + 1], rtol=1e-4, atol=1e-5)


def test_dcgan_critic_layers_are_5x5_stride_2():
    critic = model.DCGANCritic(NUM_CLASSES, 3)
    assert [(layer.kernel_size, layer.strides, layer.padding) for layer in critic.convs] \
        == [((5, 5), (2, 2), 'same')] * 3


def test_dcgan_generator_is_class_independent_at_init(fresh_generator):
    # every class starts with gamma = 1, beta = 0, so the class has no effect yet
    z = tf.repeat(noise(3, 1), 10, axis=0)
    images = fresh_generator(z, tf.range(10)).numpy()
    np.testing.assert_allclose(images, np.repeat(images[:1], 10, axis=0), atol=1e-6)


def test_dcgan_generator_output_depends_on_class(fresh_generator):
    randomize_class_parameters(fresh_generator, 4)
    z0, z1 = noise(5, 2)[0], noise(5, 2)[1]
    z = tf.stack([z0, z0, z1, z0, z0])
    labels = tf.constant([3, 3, 5, 7, 0])
    images = fresh_generator(z, labels).numpy()
    # same z and class in one batch: the same image
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)
    # same z, other classes: other images
    assert np.abs(images[0] - images[3]).max() > 0.05
    assert np.abs(images[0] - images[4]).max() > 0.05
    assert np.abs(images[3] - images[4]).max() > 0.05


def test_dcgan_generator_uses_batch_statistics_also_when_sampling(fresh_generator):
    randomize_class_parameters(fresh_generator, 6)
    z, labels = noise(7, 6), tf.constant([0, 1, 2, 3, 4, 5])
    training = fresh_generator(z, labels, training=True).numpy()
    sampling = fresh_generator(z, labels, training=False).numpy()
    np.testing.assert_allclose(sampling, training, atol=1e-6)
    # the batch composition matters: the first sample changes when the others do
    other_batch = fresh_generator(tf.concat([z[:1], noise(8, 5)], 0), labels).numpy()
    assert np.abs(other_batch[0] - training[0]).max() > 1e-3


def test_dcgan_class_enters_only_through_conditional_batch_norm(fresh_generator):
    rng = np.random.default_rng(9)
    for norm in conditional_norms(fresh_generator):
        channels = norm.gamma.shape[1]
        shared_gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        norm.gamma.assign(np.tile(shared_gamma, (NUM_CLASSES, 1)))
        norm.beta.assign(np.zeros((NUM_CLASSES, channels), np.float32))
    assert len(conditional_norms(fresh_generator)) == 3
    z = tf.repeat(noise(10, 1), 10, axis=0)
    images = fresh_generator(z, tf.range(10)).numpy()
    np.testing.assert_allclose(images, np.repeat(images[:1], 10, axis=0), atol=1e-6)
    # and the shared gamma does act: with it changed, the images change
    before = images[0]
    fresh_generator.layers[1].gamma.assign(fresh_generator.layers[1].gamma * 2.0 + 0.3)
    assert np.abs(fresh_generator(z, tf.range(10)).numpy()[0] - before).max() > 1e-3


# ---------------------------------------------------------------- ResNet pair

@pytest.fixture(scope='module')
def resnet():
    keras.utils.set_random_seed(0)
    shape = (64, 64, 3)
    return (model.build_generator('resnet64', 4, shape), model.build_critic('resnet64', 4, shape))


def test_resnet_output_shapes_and_ranges(resnet):
    generator, critic = resnet
    images = generator(noise(11, 2), tf.constant([0, 3]))
    assert images.shape == (2, 64, 64, 3) and images.dtype == tf.float32
    values = images.numpy()
    assert np.all(np.isfinite(values)) and values.min() >= -1.0 and values.max() <= 1.0
    assert values.min() < -0.01 and values.max() > 0.01
    # the one-hot class goes through the first dense layer: same z, other class, other image
    same_z = generator(tf.repeat(noise(12, 1), 2, axis=0), tf.constant([1, 2])).numpy()
    assert np.abs(same_z[0] - same_z[1]).max() > 1e-3
    scores, logits = critic(images)
    assert scores.shape == (2,) and logits.shape == (2, 4)


def test_resnet_parameter_counts(resnet):
    generator, critic = resnet
    # generator: dense 132*8192+8192 = 1089536; up blocks 4983808, 1902592, 476160, 119296
    # (e.g. 512->256: shortcut 512*256+256, BN 2*512, conv1 9*512*256, BN 2*256, conv2 9*256*256+256);
    # output BN 128; conv 9*64*3+3 = 1731
    assert generator.count_params() == 1089536 + 4983808 + 1902592 + 476160 + 119296 + 128 + 1731
    # critic: stem 27*64+64 = 1792; down blocks mirror the up blocks; heads 8193 and 32772
    assert critic.count_params() == 1792 + 119296 + 476160 + 1902592 + 4983808 + 8193 + 32772
    assert generator.non_trainable_weights == [] and critic.non_trainable_weights == []


def test_resnet_critic_scores_each_sample_on_its_own(resnet):
    _, critic = resnet
    images = tf.constant(np.random.default_rng(13).uniform(-1, 1, (2, 64, 64, 3)), tf.float32)
    scores, logits = critic(images)
    alone_score, alone_logits = critic(images[1:])
    np.testing.assert_allclose(alone_score.numpy(), scores.numpy()[1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(alone_logits.numpy(), logits.numpy()[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('architecture, shape, classes', [('dcgan32', (32, 32, 1), 10), ('resnet64', (64, 64, 3), 4)])
def test_grouped_generator_call_equals_separate_calls(architecture, shape, classes):
    """groups=k normalises each of k consecutive groups on its own statistics."""
    generator = model.build_generator(architecture, classes, shape)
    z = tf.random.stateless_normal([6, model.Z_DIM], seed=[5, 6])
    labels = tf.constant([0, 0, 1, 1, 2, 2])
    grouped = generator(z, labels, groups=3).numpy()
    separate = np.concatenate([generator(z[i:i + 2], labels[i:i + 2]).numpy() for i in (0, 2, 4)])
    np.testing.assert_allclose(grouped, separate, atol=2e-5)
    whole = generator(z, labels).numpy()
    assert np.abs(whole - separate).max() > 1e-3  # statistics really differ


@pytest.mark.parametrize('flags, expected', [
    ('fpu sse2 avx512f avx512_bf16 avx512_vnni', True),  # AMD EPYC (Zen 4 and later)
    ('fpu sse2 avx512f amx_bf16 amx_tile', True),        # Intel Xeon with AMX
    ('fpu sse2 avx512f avx512_vnni', False),             # AVX-512 without bfloat16
    (None, False),                                       # no /proc/cpuinfo (not Linux)
])
def test_bfloat16_units_are_read_from_the_cpu_flags_when_there_is_no_gpu(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(tf.config, 'list_physical_devices', lambda kind=None: [])
    cpuinfo = tmp_path / 'cpuinfo'
    if flags is not None:
        cpuinfo.write_text(f'processor\t: 0\nmodel name\t: a bf16 word here: avx512_bf16_not\nflags\t\t: {flags}\n\n'
                           f'processor\t: 1\nflags\t\t: {flags}\n')
    assert model.has_bfloat16_units(str(cpuinfo)) is expected
    assert model.auto_precision(str(cpuinfo)) == ('mixed_bfloat16' if expected else 'float32')


@pytest.mark.parametrize('capabilities, expected', [
    ([(8, 0)], True), ([(9, 0), (8, 6)], True), ([(7, 5)], False), ([(8, 0), (7, 0)], False), ([None], False)])
def test_with_gpus_bfloat16_needs_every_gpu_to_be_ampere_or_later(tmp_path, monkeypatch, capabilities, expected):
    gpus = [f'GPU:{index}' for index in range(len(capabilities))]
    monkeypatch.setattr(tf.config, 'list_physical_devices', lambda kind=None: gpus if kind == 'GPU' else [])
    monkeypatch.setattr(tf.config.experimental, 'get_device_details',
                        lambda gpu: {} if capabilities[gpus.index(gpu)] is None
                        else {'compute_capability': capabilities[gpus.index(gpu)]})
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('flags\t\t: avx512_bf16\n')  # the CPU does not train when there is a GPU
    assert model.has_bfloat16_units(str(cpuinfo)) is expected
