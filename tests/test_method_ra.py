"""MeRGAN-RA: replay alignment (the paper's Eq. 8)."""
import numpy as np
import tensorflow as tf

from helpers import make_trainer, spec_tensors, tasks_for
from training import mergan
from training.trainer import Replay

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
    replay = Replay(z, labels, 3, tf.constant(3.0))
    terms = mergan.ReplayAlignment(1e-3).generator_terms(trainer.models, None, replay)
    difference = generator(z, labels, groups=3).numpy() - old_images.numpy()
    expected = 1e-3 * 0.5 * np.sum(difference.astype(np.float64) ** 2) / 3
    assert expected > 0
    np.testing.assert_allclose(float(terms['replay_alignment']), expected, rtol=1e-5)
