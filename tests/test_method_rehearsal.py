"""Rehearsal: a buffer of real images per finished class, replayed as real data of its class."""
import numpy as np
import pytest
import tensorflow as tf

import main
from helpers import kill_resume_and_compare, make_trainer, run_cli, tasks_for
from training import rehearsal
from training.trainer import Replay


def rehearsal_trainer(data, tmp_path, per_class=5):
    return make_trainer(data, 'rehearsal', tmp_path, method_object=rehearsal.Rehearsal(rehearsal_per_class=per_class))


def test_the_images_kept_of_a_class_are_its_own_seeded_and_repeated_when_short(mnist_5k):
    kept = rehearsal.stored_images(mnist_5k, 3, 7, seed=0)
    own = mnist_5k.train_x[mnist_5k.train_y == 3]
    assert kept.shape == (7, 32, 32, 1) and kept.dtype == np.uint8
    assert all(any(np.array_equal(image, candidate) for candidate in own) for image in kept)
    np.testing.assert_array_equal(kept, rehearsal.stored_images(mnist_5k, 3, 7, seed=0))
    assert not np.array_equal(kept, rehearsal.stored_images(mnist_5k, 3, 7, seed=1))
    every = rehearsal.stored_images(mnist_5k, 3, len(own) + 10, seed=0)  # more than the class has
    np.testing.assert_array_equal(every[len(own):], every[:10])


def test_each_finished_class_fills_its_row_of_the_buffer_and_replays_come_from_it(mnist_5k, tmp_path):
    trainer = rehearsal_trainer(mnist_5k, tmp_path)
    method = trainer.method
    task1, task2 = tasks_for(mnist_5k, 2)
    assert not np.any(method.buffer.numpy())
    trainer.end_task(task1)
    buffer = method.buffer.numpy()
    np.testing.assert_array_equal(buffer[0], rehearsal.stored_images(mnist_5k, 0, 5, seed=0))
    assert not np.any(buffer[1:])
    trainer.end_task(task2)
    np.testing.assert_array_equal(method.buffer.numpy()[1], rehearsal.stored_images(mnist_5k, 1, 5, seed=0))
    # the first noise coordinate picks the stored image: Phi(z_0) in [k/5, (k+1)/5) -> image k
    z = np.zeros((4, 128), np.float32)
    z[:, 0] = [-3.0, -0.5, 0.5, 3.0]  # Phi: 0.001, 0.31, 0.69, 0.999
    labels = tf.constant([0, 0, 1, 1])
    images = method.replayed_images(trainer.models, Replay(tf.constant(z), labels, 2, tf.constant(2.0))).numpy()
    expected = np.stack([buffer[0, 0], buffer[0, 1], method.buffer.numpy()[1, 3], method.buffer.numpy()[1, 4]])
    np.testing.assert_array_equal(images, expected.astype(np.float32) / 127.5 - 1.0)


def test_the_critic_term_is_jtr_s_with_stored_images_on_the_real_side(mnist_5k, tmp_path):
    trainer = rehearsal_trainer(mnist_5k, tmp_path)
    models, rehearsal = trainer.models, trainer.method
    for task in tasks_for(mnist_5k, 2):
        trainer.end_task(task)
    z = tf.random.stateless_normal([64, 128], seed=[3, 4])
    labels = tf.repeat(tf.range(2), 32)
    replay = Replay(z, labels, 2, tf.constant(2.0))
    terms = rehearsal.critic_terms(models, None, replay)
    stored = rehearsal.replayed_images(models, replay)
    stored_scores, stored_logits = models.critic(stored)
    new_scores, _ = models.critic(models.generator(z, labels, groups=2))
    cross_entropy = -tf.nn.log_softmax(stored_logits).numpy()[np.arange(64), labels.numpy()].mean()
    expected = 2.0 * (new_scores.numpy().mean() - stored_scores.numpy().mean() + cross_entropy)
    assert set(terms) == {'rehearsal_critic'}
    np.testing.assert_allclose(float(terms['rehearsal_critic']), expected, rtol=1e-5, atol=1e-6)
    generator_terms = rehearsal.generator_terms(models._replace(old_generator=None), None, replay)
    assert set(generator_terms) == {'rehearsal_generator'}  # and no old generator is needed


@pytest.mark.parametrize('argv, message', [
    (['--rehearsal', '--rehearsal_per_class', '0'], 'must be at least 1'),
    (['--rehearsal_per_class', '10'], '--rehearsal_per_class needs --rehearsal'),
    (['--rehearsal', '--RA'], 'choose one method: --RA or --rehearsal'),
])
def test_impossible_rehearsal_flags_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', *argv, '--result_path', str(tmp_path / 'never')], capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / 'never').exists()


@pytest.mark.slow
def test_the_buffer_survives_a_kill_and_resume(tmp_path):
    """Killed once task 1 ended and class 0 was stored (ckpt-3): task 2 needs the buffer,
    and only the checkpoint has it. (Killed inside task 2, rehearsal and JTR resumed equal
    only to float precision while the critic's updates were written out in the graph; as
    calls of one traced function, one try of each passed. See the README's Reliability.)"""
    saved = kill_resume_and_compare(tmp_path, '--rehearsal', ['--rehearsal_per_class', '10'], 'ckpt-3')
    assert any(name.startswith('strategy_buffer') for name in saved)
