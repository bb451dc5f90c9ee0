"""The periodic work of Trainer.fit: TensorBoard scalars, sample grids, checkpoints and
progress, each a small Callback; and the NaN/infinity check of the weights that guards
every checkpoint write.

Callbacks reach the run only through the trainer handed to their hooks, so this module
does not import trainer.py (which imports it).
"""
import os

import tensorflow as tf

import utils


class NonFiniteLoss(Exception):
    """A loss term became NaN or infinite; the message names it, the task and the iteration."""


def non_finite_networks(trainer):
    """Names of the networks (and optimiser states) holding a NaN or infinite value.
    Adam's second moment can overflow while the weights are still finite."""
    parts = {'generator': trainer.models.generator.weights, 'critic': trainer.models.critic.weights,
             'generator optimizer': trainer.generator_optimizer.variables,
             'critic optimizer': trainer.critic_optimizer.variables}
    return [name for name, variables in parts.items()
            if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables if tf.as_dtype(v.dtype).is_floating)]


def require_finite_weights(trainer, task, iteration):
    """A finite loss can still come with an update that overflowed the weights."""
    bad = non_finite_networks(trainer)
    if bad:
        raise NonFiniteLoss(f'the {" and ".join(bad)} weights became non-finite by task {task.number}, '
                            f'iteration {iteration}')


class Callback:
    """Hooks of Trainer.fit; position counts tasks in this run (1-based)."""

    def on_task_begin(self, trainer, position, task_count, task):
        pass

    def on_iteration_end(self, trainer, position, task, done, metrics):
        pass

    def on_task_end(self, trainer, position, task):
        pass

    def on_train_end(self, trainer):
        pass


class ScalarLogger(Callback):
    """TensorBoard scalars every `every` iterations, under the methods' term names."""

    def __init__(self, result_path, every, iters):
        self.log = utils.ScalarLog(os.path.join(result_path, 'logs'))
        self.every, self.iters = every, iters

    def on_iteration_end(self, trainer, position, task, done, metrics):
        if done % self.every == 0:
            self.log.write(metrics, step=(position - 1) * self.iters + done)

    def on_train_end(self, trainer):
        self.log.close()


class GridWriter(Callback):
    """Real grids of a task's new classes, and sample grids every `every` iterations and at its end."""

    def __init__(self, fixed_noise, every, iters):
        self.fixed_noise, self.every, self.iters = fixed_noise, every, iters

    def on_task_begin(self, trainer, position, task_count, task):
        trainer.save_real_grids(task.new_classes)

    def on_iteration_end(self, trainer, position, task, done, metrics):
        if done % self.every == 0 or done == self.iters:
            trainer.run_generator.save_class_grids(
                task, self.fixed_noise, lambda c: f'samples/task_{task.number}_iter_{done}_class_{c}.png')


class CheckpointWriter(Callback):
    """The resumable checkpoint every `every` iterations; at a task's end, its own
    checkpoint and the resumable one (which then points at the next task)."""

    def __init__(self, every, iters):
        self.every, self.iters = every, iters

    def on_iteration_end(self, trainer, position, task, done, metrics):
        if done % self.every == 0 and done < self.iters:
            require_finite_weights(trainer, task, done)
            trainer.iteration.assign(done)
            trainer.checkpoints.save_latest()

    def on_task_end(self, trainer, position, task):
        require_finite_weights(trainer, task, self.iters)
        trainer.checkpoints.save_task_end(task.number)
        trainer.checkpoints.save_latest()


class ProgressReporter(Callback):
    def __init__(self, iters):
        self.iters = iters

    def on_task_begin(self, trainer, position, task_count, task):
        self.progress = utils.Progress(self.iters, f'task {position}/{task_count}')

    def on_iteration_end(self, trainer, position, task, done, metrics):
        self.progress.update(done, f"| critic loss {metrics['critic/loss']:.3f}")
