"""MeRGAN-JTR: joint training with replay."""
import numpy as np
import tensorflow as tf

from helpers import make_trainer
from training import mergan
from training.trainer import Replay

def test_joint_training_with_replay_terms(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'jtr', tmp_path)
    models = trainer.models
    z = tf.random.stateless_normal([64, 128], seed=[3, 4])
    labels = tf.repeat(tf.range(2), 32)
    old_images = models.old_generator(z, labels, groups=2)
    replay = Replay(z, labels, 2, tf.constant(2.0))
    terms = mergan.JointTrainingWithReplay().critic_terms(models, None, replay)
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
    terms = mergan.JointTrainingWithReplay().generator_terms(models, None, Replay(z, labels, 4, tf.constant(4.0)))
    scores, logits = models.critic(models.generator(z, labels, groups=4))
    cross_entropy = -tf.nn.log_softmax(logits).numpy()[np.arange(64), labels.numpy()].mean()
    expected = 4.0 * (-scores.numpy().mean() + cross_entropy)
    np.testing.assert_allclose(float(terms['jtr_generator']), expected, rtol=1e-5, atol=1e-6)
