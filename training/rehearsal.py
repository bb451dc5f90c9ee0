"""Rehearsal: stored real images of the finished classes replayed as JTR replays the old
generator's (not in the paper)."""
import numpy as np
import tensorflow as tf

from training.mergan import JointTrainingWithReplay
from training.method_base import Option
from utils import positive_int


REHEARSAL_PER_CLASS = 50  # default real images kept per finished class


class Rehearsal(JointTrainingWithReplay):
    """Rehearsal, the memory baseline of continual learning (not in the paper; in Lesort et
    al.'s generative benchmark): a fixed number of real training images of each finished
    class is kept and replayed as real data of its class. Its terms are JTR's, with stored
    real images where JTR has the old generator's, so the two differ only in what is replayed.

    The buffer is the method's state, checkpointed. A class's images are the first of a
    shuffle seeded by the run's seed and the class (repeated if the class has fewer); each
    replayed sample takes the stored image its noise's first coordinate points to (Phi(z_0)
    is uniform), so that replicas under tf.distribute draw as one device does.
    """
    name = 'rehearsal'
    label = 'Rehearsal'
    flag = '--rehearsal'
    help = 'rehearsal: replay stored real images of the finished classes (baseline, not in the paper)'
    critic_term_names = ('rehearsal_critic',)
    generator_term_names = ('rehearsal_generator',)
    options = {'rehearsal_per_class': Option(f'real training images kept per finished class '
                                             f'(default {REHEARSAL_PER_CLASS})',
                                             lambda settings: REHEARSAL_PER_CLASS, positive_int)}

    def __init__(self, rehearsal_per_class):
        self.per_class = rehearsal_per_class

    def build(self, trainer):
        data = trainer.data
        self.buffer = tf.Variable(tf.zeros([data.num_classes, self.per_class, *data.image_shape], tf.uint8),
                                  trainable=False)
        return {'buffer': self.buffer}

    def end_task(self, trainer, task):
        # one assignment of the whole buffer: a slice's would reach only one replica's copy
        buffer = self.buffer.numpy()
        for class_id in task.new_classes:
            buffer[class_id] = stored_images(trainer.data, class_id, self.per_class, trainer.config.seed)
        self.buffer.assign(buffer)

    def replayed_images(self, models, replay):
        uniform = 0.5 * (1.0 + tf.math.erf(replay.z[:, 0] / np.sqrt(2.0)))  # Phi(z_0)
        position = tf.cast(uniform * self.per_class, tf.int32)
        position = tf.clip_by_value(position, 0, self.per_class - 1)
        images = tf.gather_nd(self.buffer, tf.stack([replay.labels, position], axis=1))
        return tf.cast(images, tf.float32) / 127.5 - 1.0


def stored_images(data, class_id, count, seed):
    """The `count` real training images rehearsal keeps of a class: a seeded shuffle's first."""
    images = data.train_x[data.train_y == class_id]
    order = np.random.default_rng([seed, class_id]).permutation(len(images))
    return images[np.resize(order, count)]
