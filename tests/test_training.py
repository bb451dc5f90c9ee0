"""The compiled step, the replay strategies and the task transitions."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import runs
import sampling
import strategies
import training
from data import group_by_class, load_dataset


@pytest.fixture(scope='module')
def mnist_5k():
    return load_dataset('mnist_5k', None)


MODE_FLAGS = {'sft': [], 'ra': ['--RA'], 'jtr': ['--JTR'], 'ewc': ['--EWC'], 'dgr': ['--DGR']}


def make_config(mode, tmp_path, seed=0, **overrides):
    return runs.default_config('mnist_5k', tmp_path, flags=MODE_FLAGS[mode], seed=seed, iters=2, log_every=1,
                               sample_every=100, ckpt_every=100, **overrides)


def make_trainer(data, mode, tmp_path, seed=0, split_replay_batch=True, strategy=None):
    config = make_config(mode, tmp_path, seed)
    settings = dataclasses.replace(config.settings, split_replay_batch=split_replay_batch)
    strategy = strategy or strategies.strategy_for(config.mode, config.method_options)
    return training.Trainer(config, data, strategy, settings)


def tasks_for(data, count):
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    return runs.sequential_tasks(offsets, count)


def spec_tensors(task):
    return training.Trainer.spec_tensors(task)


def weights_of(network):
    return [w.numpy().copy() for w in network.weights]


def test_sequential_tasks_cover_one_class_each(mnist_5k):
    tasks = tasks_for(mnist_5k, 3)
    assert [t.spec for t in tasks] == [(0, 400, 0, 1, 0), (400, 800, 1, 2, 1), (800, 1200, 2, 3, 2)]
    assert tasks[2].seen_classes == [0, 1, 2] and tasks[2].new_classes == [2]


def test_old_generator_is_frozen_while_new_generator_learns(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'ra', tmp_path)
    task1, task2 = tasks_for(mnist_5k, 2)
    trainer.train_step(spec_tensors(task1))
    trainer.begin_task()
    old_before = weights_of(trainer.models.old_generator)
    new_before = weights_of(trainer.models.generator)
    for old, new in zip(old_before, new_before):
        np.testing.assert_array_equal(old, new)  # the copy is exact
    for _ in range(3):
        metrics = trainer.train_step(spec_tensors(task2))
    for before, after in zip(old_before, weights_of(trainer.models.old_generator)):
        np.testing.assert_array_equal(before, after)
    moved = [not np.array_equal(b, a) for b, a in zip(new_before, weights_of(trainer.models.generator))]
    assert all(moved[:1]) and sum(moved) > len(moved) // 2
    assert float(metrics['generator/replay_alignment']) > 0
    optimised = {id(v) for v in trainer.generator_optimizer.variables}
    assert not any(id(v) in optimised for v in trainer.models.old_generator.trainable_variables)


def test_replay_alignment_is_zero_when_generators_agree_and_in_first_task(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'ra', tmp_path)
    task1, task2 = tasks_for(mnist_5k, 2)
    metrics = trainer.train_step(spec_tensors(task1))
    assert float(metrics['generator/replay_alignment']) == 0.0  # no earlier class yet
    trainer.begin_task()
    # Same weights, same z and classes for both generators: the alignment term is exactly 0
    # at the first step of the task (it is computed before the update).
    metrics = trainer.train_step(spec_tensors(task2))
    assert float(metrics['generator/replay_alignment']) == 0.0


def test_replay_alignment_term_matches_its_formula(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'ra', tmp_path)
    generator, old_generator = trainer.models.generator, trainer.models.old_generator
    old_generator.weights[0].assign(generator.weights[0] + 0.01)
    z = tf.random.stateless_normal([63, 128], seed=[1, 2])
    labels = tf.repeat(tf.range(3), 21)
    old_images = old_generator(z, labels, groups=3)
    replay = training.Replay(z, labels, 3, tf.constant(3.0))
    terms = strategies.ReplayAlignment(1e-3).generator_terms(trainer.models, replay)
    difference = generator(z, labels, groups=3).numpy() - old_images.numpy()
    expected = 1e-3 * 0.5 * np.sum(difference.astype(np.float64) ** 2) / 3
    assert expected > 0
    np.testing.assert_allclose(float(terms['replay_alignment']), expected, rtol=1e-5)


def test_joint_training_with_replay_terms(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'jtr', tmp_path)
    models = trainer.models
    z = tf.random.stateless_normal([64, 128], seed=[3, 4])
    labels = tf.repeat(tf.range(2), 32)
    old_images = models.old_generator(z, labels, groups=2)
    replay = training.Replay(z, labels, 2, tf.constant(2.0))
    terms = strategies.JointTrainingWithReplay().critic_terms(models, replay)
    old_scores, old_logits = models.critic(old_images)
    new_scores, _ = models.critic(models.generator(z, labels, groups=2))
    cross_entropy = -tf.nn.log_softmax(old_logits).numpy()[np.arange(64), labels.numpy()].mean()
    expected = 2.0 * (new_scores.numpy().mean() - old_scores.numpy().mean() + cross_entropy)
    np.testing.assert_allclose(float(terms['jtr_critic']), expected, rtol=1e-5, atol=1e-6)


def test_joint_training_with_replay_generator_term_needs_no_old_generator(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'jtr', tmp_path)
    models = trainer.models._replace(old_generator=None)  # fails if the term runs it
    z = tf.random.stateless_normal([64, 128], seed=[5, 6])
    labels = tf.repeat(tf.range(4), 16)
    terms = strategies.JointTrainingWithReplay().generator_terms(models, training.Replay(z, labels, 4, tf.constant(4.0)))
    scores, logits = models.critic(models.generator(z, labels, groups=4))
    cross_entropy = -tf.nn.log_softmax(logits).numpy()[np.arange(64), labels.numpy()].mean()
    expected = 4.0 * (-scores.numpy().mean() + cross_entropy)
    np.testing.assert_allclose(float(terms['jtr_generator']), expected, rtol=1e-5, atol=1e-6)


class RecordingStrategy(strategies.Strategy):
    """Hands the replay batch it gets to a test's function."""
    generator_term_names = ('replay_alignment',)

    def __init__(self, record):
        self.record = record

    def generator_terms(self, models, replay):
        return self.record(models, replay)


def test_replay_batch_splits_classes_evenly(mnist_5k, tmp_path):
    seen = {}

    def record(models, replay):
        seen['labels'] = replay.labels
        seen['z'] = replay.z
        seen['scale'] = replay.class_scale
        seen['old_images'] = replay.images(models.old_generator)
        return {'replay_alignment': tf.constant(0.0)}

    trainer = make_trainer(mnist_5k, 'ra', tmp_path, strategy=RecordingStrategy(record))
    trainer.replay_terms(spec_tensors(tasks_for(mnist_5k, 4)[3]), 'generator')
    assert np.bincount(seen['labels'].numpy()).tolist() == [21, 21, 21]  # 64 // 3 each
    assert seen['labels'].numpy().tolist() == sorted(seen['labels'].numpy().tolist())
    assert float(seen['scale']) == 3.0
    # Each class is normalised as a batch of its own, as the reference's per-class calls.
    old_images = seen['old_images'].numpy()
    assert old_images.shape == (63, 32, 32, 1)
    first_class_alone = trainer.models.old_generator(seen['z'][:21], seen['labels'][:21]).numpy()
    np.testing.assert_allclose(old_images[:21], first_class_alone, atol=1e-5)


def test_replay_batch_per_class_without_split(mnist_5k, tmp_path):
    """LSUN's setting: a full batch per earlier class and no division by t."""
    seen = {}

    def record(models, replay):
        seen.update(labels=replay.labels, scale=replay.class_scale, groups=replay.groups)
        return {'replay_alignment': tf.constant(0.0)}

    trainer = make_trainer(mnist_5k, 'ra', tmp_path, split_replay_batch=False, strategy=RecordingStrategy(record))
    trainer.replay_terms(spec_tensors(tasks_for(mnist_5k, 3)[2]), 'generator')
    assert np.bincount(seen['labels'].numpy()).tolist() == [64, 64]
    assert float(seen['scale']) == 1.0 and int(seen['groups']) == 2


def test_fake_labels_follow_the_task(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path)
    task3 = tasks_for(mnist_5k, 3)[2]
    _, labels = trainer.fake_inputs(spec_tensors(task3))
    assert set(labels.numpy().tolist()) == {2}
    images, real_labels = trainer.real_batch(spec_tensors(task3))
    assert set(real_labels.numpy().tolist()) == {2}
    assert images.shape == (64, 32, 32, 1) and -1.0 <= float(tf.reduce_min(images)) <= float(tf.reduce_max(images)) <= 1.0


def test_new_task_resets_adam_but_keeps_learning_rate(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path)
    trainer.train_step(spec_tensors(tasks_for(mnist_5k, 1)[0]))
    optimizer = trainer.critic_optimizer
    assert int(optimizer.iterations) == 5
    critic_before = weights_of(trainer.models.critic)
    trainer.begin_task()
    assert int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)
    moments = [v for v in optimizer.variables if 'momentum' in v.path or 'velocity' in v.path]
    assert moments and all(not np.any(v.numpy()) for v in moments)
    for before, after in zip(critic_before, weights_of(trainer.models.critic)):
        np.testing.assert_array_equal(before, after)  # the critic keeps its weights


def test_step_is_traced_once_across_tasks(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'jtr', tmp_path)
    for task in tasks_for(mnist_5k, 3):
        trainer.begin_task()
        trainer.train_step(spec_tensors(task))
    assert trainer.train_step.experimental_get_tracing_count() == 1


class LabelEchoGenerator:
    """Stands in for a generator: pixel value encodes the label; records each batch's labels."""

    def __init__(self):
        self.batches = []

    def __call__(self, z, labels):
        labels = np.asarray(labels)
        self.batches.append(labels.copy())
        return tf.constant(np.broadcast_to((labels * 0.1 - 0.5)[:, None, None, None], (len(labels), 2, 2, 1)),
                           tf.float32)


def test_joint_task_trains_mixed_batches_and_sequential_tasks_do_not(mnist_5k):
    _, _, offsets = group_by_class(mnist_5k.train_x, mnist_5k.train_y, mnist_5k.num_classes)
    assert sampling.trains_mixed_batches(runs.joint_task(offsets, 5))
    assert not any(sampling.trains_mixed_batches(task) for task in tasks_for(mnist_5k, 3))


def test_mixed_batch_sampler_makes_balanced_mixed_batches_and_hands_out_by_class():
    generator = LabelEchoGenerator()
    sampler = sampling.MixedBatchSampler(generator, [0, 1, 2], seed=0)
    images = {c: sampler(c, 50) for c in (2, 0, 1)}
    # 150 images in 3 batches of 64, the last one padded; generated once for all classes
    assert [len(b) for b in generator.batches] == [64, 64, 64]
    assert all(len(np.unique(batch)) == 3 for batch in generator.batches)
    assert np.bincount(np.concatenate(generator.batches)[:150], minlength=3).tolist() == [50, 50, 50]
    for class_id, class_images in images.items():
        assert class_images.shape == (50, 2, 2, 1) and class_images.dtype == np.uint8
        assert np.all(class_images == round((class_id * 0.1 - 0.5 + 1) * 127.5))
    sampler(1, 7)  # a new count is a new generation
    assert len(generator.batches) == 4


def test_sequential_sampling_uses_single_class_batches(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path)
    trainer.generate = LabelEchoGenerator()
    task = tasks_for(mnist_5k, 3)[2]
    images = trainer.strategy.sampler(trainer, task)(2, 70)
    assert images.shape == (70, 2, 2, 1)
    assert [batch.tolist() for batch in trainer.generate.batches] == [[2] * 64, [2] * 64]


@pytest.mark.parametrize('mode', ['ra', 'dgr'])
def test_a_checkpoint_brings_back_every_weight_of_every_network(mnist_5k, tmp_path, mode):
    """Frozen copies (the old generator, DGR's old solver) have no optimiser that would
    save their weights for them."""
    trainer = make_trainer(mnist_5k, mode, tmp_path / 'a')
    networks = lambda t: [t.models.generator, t.models.critic, t.models.old_generator] + (
        [t.strategy.solver, t.strategy.old_solver] if mode == 'dgr' else [])
    for network in networks(trainer):  # values no fresh trainer would have
        for weight in network.weights:
            weight.assign(tf.random.stateless_normal(weight.shape, seed=[len(weight.path), 1]) + 3.0)
    trainer.checkpoint.write(str(tmp_path / 'ckpt'))
    fresh = make_trainer(mnist_5k, mode, tmp_path / 'b')
    fresh.checkpoint.read(str(tmp_path / 'ckpt')).assert_existing_objects_matched()
    for saved, restored in zip(networks(trainer), networks(fresh)):
        assert len(saved.weights) == len(restored.weights) > 4
        for a, b in zip(saved.weights, restored.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f'{saved.name}: {a.path}')
