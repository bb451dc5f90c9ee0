"""Deep generative replay (Shin et al. 2017), the paper's second baseline: an unconditional
GAN whose replays a solver labels."""
import keras
import numpy as np
import tensorflow as tf

import model
import ops
from training import objective
from training.method_base import Method, Option
from training.sampling import SolverSampler
from training.trainer import BATCH_SIZE, apply_gradients
from utils import positive_int


SOLVER_STEPS = 500          # default solver updates at the end of each task
SOLVER_LEARNING_RATE = 1e-3
REPLAY_SHARES = ('balanced', 'half')


def current_class_share(replay_share, task_number):
    """The new class's share of the real side, in the critic and in the solver: 'balanced'
    gives each of the task's classes 1/t; 'half' gives the new class 1/2 and the replays 1/2."""
    return 1.0 / task_number if replay_share == 'balanced' else 0.5


def intended_class_shares(replay_share, task_number):
    """Each class's share of the real side in task t, if every generator reproduces the mix
    it was trained on: balanced 1/t each; half 1/2 for the newest, then 1/4, 1/8, ... ."""
    shares = [1.0]
    for t in range(2, task_number + 1):
        current = current_class_share(replay_share, t)
        shares = [share * (1 - current) for share in shares] + [current]
    return shares


def solver_sample_weights(current_share, count):
    """Weights of a solver batch of `count` real images, then `count` replays, that give the
    real ones the share current_share of the mean loss: 1 each for 'half', exactly."""
    ones = tf.ones([count], tf.float32)
    return tf.concat([ones * 2 * current_share, ones * 2 * (1 - current_share)], 0)


class DeepGenerativeReplay(Method):
    """DGR (Shin et al. 2017) as the paper runs it: an unconditional WGAN-GP and a solver.

    From task 2 on the critic's real side gets one batch of the previous generator's
    replays for every batch of real data (the paper, section 4.1), as a second
    Wasserstein pair with its own gradient penalty, the new generator's images for
    the same z on the fake side. At the end of each task the solver is trained on
    the task's real images plus replays labelled by the previous solver. Class c's
    images are the generated images that the solver labels c.

    DGR_replay_share weighs the replays against the new class in both: 'balanced'
    gives the new class 1/t, as van de Ven et al.'s class-incremental DGR does; 'half'
    (every run before the option) gives it 1/2, so an old class's share halves with
    every task. In the critic the real pair keeps weight 1 and the replay pair gets
    (1 - s) / s for a new-class share s; Adam does not see the overall scale.
    """
    name = 'dgr'
    label = 'DGR'
    flag = '--DGR'
    help = 'deep generative replay: unconditional GAN plus a solver (baseline)'
    critic_term_names = ('dgr_replay_critic',)
    conditional = False
    replay = 'unconditional'
    options = {'DGR_solver_steps': Option(f'solver updates at the end of each task (default {SOLVER_STEPS})',
                                          lambda settings: SOLVER_STEPS, positive_int, SOLVER_STEPS),
               'DGR_replay_share': Option("replays against the new class: 'balanced' gives the new class "
                                          "1/t, 'half' gives it 1/2 (default balanced)",
                                          lambda settings: 'balanced', str, 'half', REPLAY_SHARES)}

    def __init__(self, DGR_solver_steps, DGR_replay_share='balanced'):
        self.solver_steps, self.replay_share = DGR_solver_steps, DGR_replay_share

    def build_sampling_networks(self, network_settings):
        self.solver = model.build_solver(**network_settings)
        self.solver_label = tf.function(lambda images: tf.argmax(self.solver(images)[1], axis=-1, output_type=tf.int32))
        return {'solver': self.solver}

    def build(self, trainer):
        self.rng = trainer.rng
        self.old_solver = model.build_solver(**trainer.network_settings)
        self.old_solver.trainable = False
        self.optimizer = keras.optimizers.Adam(SOLVER_LEARNING_RATE)
        self.optimizer.build(self.solver.trainable_variables)
        self.train_on_real = trainer.compile(lambda spec: self._solver_update(trainer, spec, with_replay=False))
        self.train_with_replay = trainer.compile(lambda spec: self._solver_update(trainer, spec, with_replay=True))
        return {'old_solver': self.old_solver, 'solver_optimizer': self.optimizer}

    def begin_task(self, trainer, task):
        for old, new in zip(self.old_solver.weights, self.solver.weights):
            old.assign(new)

    def end_task(self, trainer, task):
        spec = trainer.spec_tensors(task)
        update = self.train_with_replay if task.spec.earlier_classes > 0 else self.train_on_real
        for _ in range(self.solver_steps):
            update(spec)

    def _current_share(self, earlier_classes):
        return current_class_share(self.replay_share, tf.cast(earlier_classes + 1, tf.float32))

    def _solver_update(self, trainer, spec, with_replay):
        images, labels = trainer.real_batch(spec)
        weights = tf.ones_like(labels, tf.float32)
        if with_replay:
            replays = trainer.models.old_generator(ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM])),
                                                   ops.replica_part(tf.zeros([BATCH_SIZE], tf.int32)))
            replay_labels = tf.argmax(self.old_solver(replays)[1], axis=-1, output_type=tf.int32)
            images, labels = tf.concat([images, replays], 0), tf.concat([labels, replay_labels], 0)
            weights = solver_sample_weights(self._current_share(spec.earlier_classes), tf.size(replay_labels))
        with tf.GradientTape() as tape:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, self.solver(images)[1])
            loss = ops.batch_mean(weights * losses)
        apply_gradients(self.optimizer, tape.gradient(loss, self.solver.trainable_variables),
                        self.solver.trainable_variables)
        return loss

    def critic_terms(self, models, inputs, replay):
        alpha = ops.replica_part(ops.sample_interpolation_weights(self.rng, BATCH_SIZE))
        pair = objective.critic_loss(models.critic, replay.images(models.old_generator), None,
                                     replay.images(models.generator), alpha, conditional=False)
        share = self._current_share(inputs.spec.earlier_classes)
        return {'dgr_replay_critic': (1 - share) / share * pair.total}

    def task_metrics(self, run_generator, task):
        """The solver's accuracy per class on the real held-out images of the seen classes:
        tells a solver failure from a generator failure."""
        data = run_generator.data
        per_class = {}
        for c in task.seen_classes:
            images = data.test_x[data.test_y == c].astype(np.float32) / 127.5 - 1.0
            labels = np.concatenate([self.solver_label(images[i:i + 500]).numpy() for i in range(0, len(images), 500)])
            per_class[str(c)] = float(np.mean(labels == c))
        return {'solver_accuracy_per_class': per_class,
                'solver_mean_accuracy': float(np.mean(list(per_class.values())))}

    def sampler(self, run_generator, task):
        return SolverSampler(run_generator.generate, self.solver_label, task.seen_classes, run_generator.config.seed)

    def grid_images(self, run_generator, task, fixed_noise):
        """Generated images grouped by the solver's label (the paper's Figure 3), drawn as the
        evaluation draws them until each class fills a grid. The fixed noise alone is too few:
        with the 'half' share an earlier class's share halves with every task, so after task
        10 the oldest classes' grids held 0 to 3 of its 100 images."""
        drawn = self.sampler(run_generator, task).make_all(len(fixed_noise))
        return {c: images.astype(np.float32) / 127.5 - 1.0 for c, images in drawn.items() if len(images)}
