"""The trainer: tasks, the compiled step and its replay batch, task transitions, sampling and checkpoints."""
import numpy as np
import pytest
import tensorflow as tf

import runs
from data import group_by_class
from helpers import make_trainer, spec_tensors, tasks_for, weights_of
from training import method_base, sampling
from training.objective import StepInputs

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


class RecordingMethod(method_base.Method):
    """Hands the replay batch it gets to a test's function."""
    generator_term_names = ('replay_alignment',)

    def __init__(self, record):
        self.record = record

    def generator_terms(self, models, inputs, replay):
        return self.record(models, replay)


def test_replay_batch_splits_classes_evenly(mnist_5k, tmp_path):
    seen = {}

    def record(models, replay):
        seen['labels'] = replay.labels
        seen['z'] = replay.z
        seen['scale'] = replay.class_scale
        seen['old_images'] = replay.images(models.old_generator)
        return {'replay_alignment': tf.constant(0.0)}

    trainer = make_trainer(mnist_5k, 'ra', tmp_path, method_object=RecordingMethod(record))
    trainer.replay_terms(StepInputs(spec_tensors(tasks_for(mnist_5k, 4)[3]), *[None] * 5), 'generator')
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

    trainer = make_trainer(mnist_5k, 'ra', tmp_path, split_replay_batch=False, method_object=RecordingMethod(record))
    trainer.replay_terms(StepInputs(spec_tensors(tasks_for(mnist_5k, 3)[2]), *[None] * 5), 'generator')
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


@pytest.mark.parametrize('mode, traces', [('jtr', [1, 2, 2]), ('sft', [1, 1, 1])])
def test_step_is_traced_for_the_first_task_and_once_for_all_that_replay(mnist_5k, tmp_path, mode, traces):
    trainer = make_trainer(mnist_5k, mode, tmp_path)
    counts = []
    for task in tasks_for(mnist_5k, 3):
        trainer.begin_task()
        metrics = trainer.train_step(spec_tensors(task))
        counts.append(trainer.compiled_step.experimental_get_tracing_count())
        if mode == 'jtr':
            assert (float(metrics['critic/jtr_critic']) == 0.0) == (task.number == 1)
    assert counts == traces


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
    trainer.run_generator.generate = echo = LabelEchoGenerator()
    task = tasks_for(mnist_5k, 3)[2]
    images = trainer.run_generator.sampler(task)(2, 70)
    assert images.shape == (70, 2, 2, 1)
    assert [batch.tolist() for batch in echo.batches] == [[2] * 64, [2] * 64]


@pytest.mark.parametrize('mode', ['ra', 'dgr'])
def test_a_checkpoint_brings_back_every_weight_of_every_network(mnist_5k, tmp_path, mode):
    """Frozen copies (the old generator, DGR's old solver) have no optimiser that would
    save their weights for them."""
    trainer = make_trainer(mnist_5k, mode, tmp_path / 'a')
    networks = lambda t: [t.models.generator, t.models.critic, t.models.old_generator] + (
        [t.method.solver, t.method.old_solver] if mode == 'dgr' else [])
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
