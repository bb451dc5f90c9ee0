"""DGR: an unconditional GAN, its replay share, its solver and its sampler."""
import importlib.util
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import ops
from helpers import ROOT, make_trainer, spec_tensors, tasks_for, weights_of
from training import dgr, methods, sampling
from training.objective import StepInputs

def test_dgr_generator_is_unconditional_and_has_no_auxiliary_terms(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path)
    z = tf.random.stateless_normal([64, 128], seed=[1, 1])
    same_z_other_labels = [trainer.models.generator(z, tf.fill([64], c)).numpy() for c in (0, 7)]
    np.testing.assert_array_equal(*same_z_other_labels)
    metrics = trainer.train_step(spec_tensors(tasks_for(mnist_5k, 1)[0]))
    assert float(metrics['critic/ac_loss']) == 0.0 and float(metrics['generator/ac_loss']) == 0.0
    assert float(metrics['critic/dgr_replay_critic']) == 0.0  # nothing to replay in task 1


@pytest.mark.parametrize('share, weight', [('half', 1.0), ('balanced', 2.0)])
def test_dgr_replays_reach_the_critic_real_side_from_task_2_weighted_by_their_share(mnist_5k, tmp_path,
                                                                                    share, weight):
    method = dgr.DeepGenerativeReplay(DGR_solver_steps=1, DGR_replay_share=share)
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path, method_object=method)
    models = trainer.models
    models.old_generator.weights[0].assign(models.generator.weights[0] + 0.05)
    replay = trainer.replay_batch(tf.constant(2))  # task 3: the replays stand for 2 of 3 classes
    assert replay.groups is None and replay.z.shape == (64, 128)  # one full unconditional batch
    method.rng = tf.random.Generator.from_seed(11)
    alpha = ops.sample_interpolation_weights(tf.random.Generator.from_seed(11), 64)
    replays, fakes = models.old_generator(replay.z, replay.labels), models.generator(replay.z, replay.labels)
    penalty = ops.gradient_penalty(lambda x: models.critic(x)[0], replays, fakes, alpha)
    expected = (models.critic(fakes)[0].numpy().mean() - models.critic(replays)[0].numpy().mean()
                + 10.0 * float(penalty))
    inputs = StepInputs(spec_tensors(tasks_for(mnist_5k, 3)[2]), None, None, None, None, None)
    value = method.critic_terms(models, inputs, replay)['dgr_replay_critic']
    # the real pair has weight 1: the replays' weight is their share over the new class's
    np.testing.assert_allclose(float(value), weight * expected, rtol=1e-4, atol=1e-5)
    metrics = trainer.train_step(spec_tensors(tasks_for(mnist_5k, 2)[1]))
    assert float(metrics['critic/dgr_replay_critic']) != 0.0


def test_each_class_share_of_dgr_real_side_balanced_and_half():
    assert dgr.intended_class_shares('balanced', 1) == [1.0]
    np.testing.assert_allclose(dgr.intended_class_shares('balanced', 4), [0.25] * 4)
    np.testing.assert_allclose(dgr.intended_class_shares('balanced', 10), [0.1] * 10)
    assert dgr.intended_class_shares('half', 4) == [0.125, 0.125, 0.25, 0.5]
    assert dgr.intended_class_shares('half', 2) == dgr.intended_class_shares('balanced', 2)
    for task in (2, 3, 7):
        weights = dgr.solver_sample_weights(dgr.current_class_share('balanced', task), 64).numpy()
        real_share = weights[:64].sum() / weights.sum()
        np.testing.assert_allclose(real_share, 1 / task, rtol=1e-6)
        assert weights.mean() == pytest.approx(1.0)  # the loss keeps its scale
    # 'half' weighs every image 1: the runs made before the option compute the same mean
    half = dgr.solver_sample_weights(dgr.current_class_share('half', 5), 64).numpy()
    np.testing.assert_array_equal(half, np.ones(128, np.float32))


def test_dgr_runs_saved_before_the_share_option_keep_the_half_share():
    assert methods.method_for('dgr', {'DGR_solver_steps': 500}).replay_share == 'half'
    assert dgr.DeepGenerativeReplay.options['DGR_replay_share'].default(None) == 'balanced'


def test_dgr_solver_learns_the_real_class_then_keeps_replayed_ones(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path, method_object=dgr.DeepGenerativeReplay(DGR_solver_steps=20))
    task1, task2 = tasks_for(mnist_5k, 2)
    trainer.begin_task(task1)
    trainer.end_task(task1)
    real_0, _ = trainer.real_batch(spec_tensors(task1))
    assert set(trainer.method.solver_label(real_0).numpy().tolist()) == {0}
    trainer.begin_task(task2)
    for old, new in zip(trainer.method.old_solver.weights, trainer.method.solver.weights):
        np.testing.assert_array_equal(old.numpy(), new.numpy())  # the previous solver labels replays
    old_solver_before = weights_of(trainer.method.old_solver)
    trainer.end_task(task2)
    for before, after in zip(old_solver_before, weights_of(trainer.method.old_solver)):
        np.testing.assert_array_equal(before, after)


class StripeGenerator:
    """Unconditional stand-in: image value = first noise coordinate; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, z, labels):
        self.calls += 1
        z = np.asarray(z)
        return tf.constant(np.broadcast_to(np.tanh(z[:, :1, None, None]), (len(z), 2, 2, 1)), tf.float32)


def sign_solver(images):
    """Labels 1 where the image is bright, else 0; never 2."""
    return tf.cast(tf.reduce_mean(images, axis=[1, 2, 3]) > 0, tf.int32)


def test_solver_labels_drive_the_dgr_sampler_and_a_class_never_made_comes_back_empty():
    generator = StripeGenerator()
    sampler = sampling.SolverSampler(generator, sign_solver, classes=[0, 1, 2], seed=0)
    ones, zeros, twos = sampler(1, 30), sampler(0, 30), sampler(2, 30)
    assert ones.shape == (30, 2, 2, 1) and np.all(ones > 127) and np.all(zeros <= 127)
    assert twos.shape == (0, 2, 2, 1)
    # class 2 never appears: drawing stops at the cap, 5x the 90 images asked for
    assert generator.calls == -(-sampling.SAMPLER_DRAW_FACTOR * 90 // 64)
    assert set(sampler.class_shares) == {0, 1} and abs(sum(sampler.class_shares.values()) - 1) < 1e-9


def test_dgr_grids_draw_until_a_rare_class_fills_its_grid_and_leave_out_a_class_never_made():
    """Class 1 is rare (first noise coordinate above 1.5: about 7% of images), class 2 never made."""
    method = dgr.DeepGenerativeReplay(DGR_solver_steps=1)
    method.solver_label = lambda images: tf.cast(tf.reduce_mean(images, axis=[1, 2, 3]) > np.tanh(1.5), tf.int32)
    trainer = types.SimpleNamespace(generate=StripeGenerator(), config=types.SimpleNamespace(seed=0))
    task = types.SimpleNamespace(seen_classes=[0, 1, 2])
    fixed_noise = np.random.default_rng(1).standard_normal((100, 4)).astype(np.float32)
    in_fixed_noise = int(np.sum(fixed_noise[:, 0] > 1.5))
    grids = method.grid_images(trainer, task, fixed_noise)
    assert set(grids) == {0, 1}
    assert grids[0].shape == (100, 2, 2, 1) and np.all(grids[0] <= np.tanh(1.5) + 1e-2)
    # the fixed noise alone held a few images of class 1; drawing more fills its grid
    assert in_fixed_noise < 10 and grids[1].shape == (100, 2, 2, 1)
    assert np.all(grids[1] > np.tanh(1.5) - 1e-2) and grids[1].max() <= 1.0


def dgr_labels_script():
    spec = importlib.util.spec_from_file_location('dgr_labels', os.path.join(ROOT, 'reproduction', 'dgr_labels.py'))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_dgr_labels_counts_precision_and_recall_of_the_solver_per_class():
    """reproduction/dgr_labels.py (findings.md, DGR at 4,001 iterations)."""
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 0, 1, 1])
    table = dgr_labels_script().labelling_quality(predicted, truth, [0, 1, 2])
    assert table[0] == (3, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert table[1] == (3, pytest.approx(1 / 3), pytest.approx(1 / 2))
    labelled, precision, recall = table[2]
    assert labelled == 0 and np.isnan(precision) and recall == 0.0


def test_dgr_labels_second_opinion_shares_and_confidence_where_it_disagrees():
    script = dgr_labels_script()
    # softmax of (log 3, 0, 0) is (0.6, 0.2, 0.2); of (0, log 4, 0) is (1/6, 4/6, 1/6)
    logits = np.array([[np.log(3), 0, 0], [np.log(3), 0, 0], [0, np.log(4), 0], [0, 0, 0]])
    shares, confidence = script.second_opinion(0, logits, num_classes=3)
    np.testing.assert_allclose(shares, [0.75, 0.25, 0.0])  # a tie goes to the first class
    assert confidence == pytest.approx(4 / 6)
    shares, confidence = script.second_opinion(0, logits[:2], num_classes=3)
    np.testing.assert_allclose(shares, [1.0, 0.0, 0.0])
    assert np.isnan(confidence)
