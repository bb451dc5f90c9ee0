"""The compiled WGAN-GP training step, its checkpointed state and the task loop.

Shared by main.py (sequential tasks, with a replay method) and joint.py (one
task holding every class). One tf.function call runs the critic steps and the
generator step of one generator iteration; per-task values enter as int32
tensors, so the step is traced at most twice in a run: for the first task, which has
nothing to replay, and once for all later tasks.
"""
import os
import sys
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

import model
import ops
import run_folder
import utils
from data import group_by_class
from training import objective
from training.callbacks import CheckpointWriter, GridWriter, NonFiniteLoss, ProgressReporter, ScalarLogger
from training.distribution import make_distribution, written_out
from training.objective import StepInputs
from training.run_generator import RunCheckpoints, RunGenerator, method_state, network_settings, with_every_weight
from training.sampling import BATCH_SIZE

CRITIC_STEPS = 5
LEARNING_RATE = 1e-4
ADAM_BETAS = (0.0, 0.9)


class TaskSpec(NamedTuple):
    """Per-task inputs of the compiled step."""
    real_start: int       # real images come from the class-sorted pool [real_start, real_end)
    real_end: int
    fake_label_low: int   # fake labels are uniform in [low, high)
    fake_label_high: int
    earlier_classes: int  # the old generator replays classes 0 .. earlier_classes - 1


class Task(NamedTuple):
    number: int           # 1-based, as in file names
    spec: TaskSpec
    seen_classes: list
    new_classes: list


class Models(NamedTuple):
    generator: object
    critic: object
    old_generator: object


class Replay(NamedTuple):
    """What a method gets from task 2 on: noise and labels of the earlier classes,
    one equal, consecutive group per class, and class_scale (see mergan.py).
    An unconditional replay (DGR) is one batch with groups=None and labels unused."""
    z: object
    labels: object
    groups: object
    class_scale: object

    def images(self, generator):
        """The generator's images for this batch, each class normalised as a batch of
        its own, as the reference code's per-class generator calls were. Strategies ask
        only for what they use: JTR's generator step never runs the old generator."""
        return generator(self.z, self.labels, groups=self.groups)


def make_adam():
    return keras.optimizers.Adam(LEARNING_RATE, beta_1=ADAM_BETAS[0], beta_2=ADAM_BETAS[1], epsilon=1e-8)


def reset_optimizer(optimizer):
    """Fresh Adam state (moments and step count) for a new task; the learning rate stays."""
    for variable in optimizer.variables:
        if not variable.path.endswith('learning_rate'):
            variable.assign(tf.zeros_like(variable))


def apply_gradients(optimizer, gradients, variables):
    """Skips variables a loss does not reach (the critic's class head under DGR), which
    Keras would otherwise warn about on every step."""
    optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])


def sum_terms(terms):
    return tf.add_n([tf.constant(0.0), *terms.values()])


class Trainer:
    """Models, optimisers, random state, the compiled step and the task transitions of one run.
    Its run_generator is what evaluation restores: the generator and the method's sampling networks."""

    def __init__(self, config, data, method, settings):
        # First: logical CPU devices for --devices must be set up before TensorFlow's runtime.
        self.distribution = make_distribution(config.distribute, config.devices)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self.config, self.data, self.method = config, data, method
        self.rng = self.distribution.random_generator(config.seed)
        # The loop's counters stay plain variables (read as Python ints), outside the scope.
        self.task_index = tf.Variable(0, dtype=tf.int64)   # tasks finished
        self.iteration = tf.Variable(0, dtype=tf.int64)    # iterations done in the current task
        with self.distribution.scope():
            self._build(data, method, settings)
        self.checkpoints = RunCheckpoints(config.result_path, self.checkpoint)
        self.compiled_step = self.compile(self._train_step)
        self.generate = self.run_generator.generate

    def _build(self, data, method, settings):
        """Networks, optimisers and variables: under the distribution's scope, so that
        tf.distribute mirrors them on every replica. The order of creation is the order
        of the seeded initial weights."""
        self.split_replay_batch = settings.split_replay_batch
        self.network_settings = network_settings(settings.architecture, data)
        # Only the GAN computes in the run's precision, not the evaluation classifier or a solver.
        with model.precision_policy(self.config.precision):
            generators = [model.build_generator(**self.network_settings, conditional=method.conditional)
                          for _ in range(2)]
            self.models = Models(generators[0], model.build_critic(**self.network_settings), generators[1])
        self.models.old_generator.trainable = False
        self.generator_optimizer, self.critic_optimizer = make_adam(), make_adam()
        self.generator_optimizer.build(self.models.generator.trainable_variables)
        self.critic_optimizer.build(self.models.critic.trainable_variables)
        pool_images, pool_labels, _ = group_by_class(data.train_x, data.train_y, data.num_classes)
        # Eager tensors are captured by reference: batches are drawn in-graph from memory.
        self.pool_images = tf.constant(pool_images)
        self.pool_labels = tf.constant(pool_labels, tf.int32)
        self.run_generator = RunGenerator(self.models.generator, method,
                                          method.build_sampling_networks(self.network_settings), self.config, data)
        # the method's own state, for the checkpoint (sampling networks are the run generator's)
        self.method_state = method.build(self)
        self.checkpoint = tf.train.Checkpoint(**with_every_weight(dict(
            **self.run_generator.checkpoint_items(), critic=self.models.critic,
            old_generator=self.models.old_generator, generator_optimizer=self.generator_optimizer,
            critic_optimizer=self.critic_optimizer, rng=self.rng, task_index=self.task_index,
            iteration=self.iteration, **method_state(self.method_state))))

    def compile(self, step):
        """step compiled to run where the run trains; under tf.distribute on every replica,
        with each output summed over them (a replica returns its share)."""
        return self.distribution.compile(step)

    @staticmethod
    def spec_tensors(task):
        """The task's TaskSpec as int32 tensors: tasks share the step's traces."""
        return TaskSpec(*[tf.constant(value, tf.int32) for value in task.spec])

    def train_step(self, spec):
        """One generator iteration of the task `spec` (spec_tensors); its metrics.

        Whether the task replays is decided here, in Python, not by tf.cond in the graph:
        with the replay terms inside a cond, the same DGR or rehearsal step from the same
        state gave different weights in 4 to 7 of 9 repetitions (the critic's updates then
        calls of one traced function), and none in 10 without the cond."""
        return self.compiled_step(spec, self.replays(spec))

    def replays(self, spec):
        """Whether the step of task `spec` has replay terms: never for a method without any
        (SFT, joint training), whose step is then traced once for all tasks."""
        has_terms = bool(self.method.critic_term_names or self.method.generator_term_names)
        return has_terms and int(spec.earlier_classes) > 0

    # --- compiled: CRITIC_STEPS critic updates, then one generator update ---
    def _train_step(self, spec, replaying, repeat=None):
        critic_metrics = (repeat or self.distribution.repeat)(CRITIC_STEPS,
                                                               lambda: self._critic_update(spec, replaying))
        return {**critic_metrics, **self._generator_update(spec, replaying)}

    def written_out_step_graph(self, spec):
        """The step's graph with its CRITIC_STEPS critic updates written out, whatever the
        distribution's repeat does, for TensorFlow's FLOP profiler, which counts only the
        ops of the graph itself, not those of functions it calls (bench.py)."""
        replaying = self.replays(spec)
        step = tf.function(lambda spec: self._train_step(spec, replaying, repeat=written_out), autograph=False)
        return step.get_concrete_function(spec).graph

    def real_batch(self, spec):
        # Draws are global batches; each replica keeps its part (unchanged on one device).
        index = ops.replica_part(self.rng.uniform([BATCH_SIZE], spec.real_start, spec.real_end, dtype=tf.int32))
        images = tf.cast(tf.gather(self.pool_images, index), tf.float32) / 127.5 - 1.0
        return images, tf.gather(self.pool_labels, index)

    def fake_inputs(self, spec):
        labels = self.rng.uniform([BATCH_SIZE], spec.fake_label_low, spec.fake_label_high, dtype=tf.int32)
        return ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM])), ops.replica_part(labels)

    def replay_batch(self, earlier_classes):
        """Noise and labels for the earlier classes, as the method's replay asks."""
        if self.method.replay == 'unconditional':
            z = ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM]))
            return Replay(z, ops.replica_part(tf.zeros([BATCH_SIZE], tf.int32)), None, tf.constant(1.0))
        per_class = BATCH_SIZE // earlier_classes if self.split_replay_batch else BATCH_SIZE
        labels = tf.repeat(tf.range(earlier_classes), per_class)
        z = ops.replica_part(self.rng.normal([tf.size(labels), model.Z_DIM]), groups=earlier_classes)
        scale = tf.cast(earlier_classes if self.split_replay_batch else 1, tf.float32)
        return Replay(z, ops.replica_part(labels, groups=earlier_classes), earlier_classes, scale)

    def replay_terms(self, inputs, side, replaying=True):
        """The method's terms for one side ('critic' or 'generator') on the step's inputs and
        a fresh replay batch; zeros when the task has nothing to replay."""
        names = getattr(self.method, f'{side}_term_names')
        if not replaying:
            return {name: tf.constant(0.0) for name in names}
        if not names:
            return {}
        replay = self.replay_batch(inputs.spec.earlier_classes)
        # Checked at tracing: a wrong name fails before task 1 trains (fit traces this first).
        return self.method.check_terms(getattr(self.method, f'{side}_terms')(self.models, inputs, replay), names, side)

    def _critic_update(self, spec, replaying):
        critic = self.models.critic
        real_images, real_labels = self.real_batch(spec)
        z, fake_labels = self.fake_inputs(spec)
        fake_images = self.models.generator(z, fake_labels)
        alpha = ops.replica_part(ops.sample_interpolation_weights(self.rng, BATCH_SIZE))
        inputs = StepInputs(spec, real_images, real_labels, z, fake_labels, fake_images)
        with tf.GradientTape() as tape:
            gan = objective.critic_loss(critic, real_images, real_labels, fake_images, alpha,
                                        conditional=self.method.conditional)
            replay = self.replay_terms(inputs, 'critic', replaying)
            loss = gan.total + sum_terms(replay)
        apply_gradients(self.critic_optimizer, tape.gradient(loss, critic.trainable_variables),
                        critic.trainable_variables)
        return {'critic/loss': loss, 'critic/wasserstein_estimate': -gan.wasserstein,
                'critic/gradient_penalty': gan.gradient_penalty, 'critic/ac_loss': gan.classification,
                **{f'critic/{name}': value for name, value in replay.items()}}

    def _generator_update(self, spec, replaying):
        generator = self.models.generator
        z, fake_labels = self.fake_inputs(spec)
        with tf.GradientTape() as tape:
            fake_images = generator(z, fake_labels)
            fake_scores, fake_logits = self.models.critic(fake_images)
            gan = objective.generator_loss(fake_scores, fake_logits, fake_labels, conditional=self.method.conditional)
            inputs = StepInputs(spec, None, None, z, fake_labels, fake_images)
            replay = self.replay_terms(inputs, 'generator', replaying)
            loss = gan.total + sum_terms(replay)
        apply_gradients(self.generator_optimizer, tape.gradient(loss, generator.trainable_variables),
                        generator.trainable_variables)
        return {'generator/loss': loss, 'generator/ac_loss': gan.classification,
                **{f'generator/{name}': value for name, value in replay.items()}}

    # --- task transitions ---
    def begin_task(self, task=None):
        """Old G := G and fresh Adam; the critic keeps its weights; then the method's
        own transition. Idempotent, so a resume that lands exactly on a task boundary
        may redo it."""
        for old, new in zip(self.models.old_generator.weights, self.models.generator.weights):
            old.assign(new)
        reset_optimizer(self.generator_optimizer)
        reset_optimizer(self.critic_optimizer)
        self.method.begin_task(self, task)

    def end_task(self, task):
        self.method.end_task(self, task)

    # --- grids ---
    def save_real_grids(self, classes):
        for class_id in classes:
            images = self.data.train_x[self.data.train_y == class_id][:run_folder.GRID_SIZE]
            utils.save_grid(images, os.path.join(self.config.result_path, 'samples', f'real_class_{class_id}.png'))

    def fixed_noise(self):
        return run_folder.load_or_create_fixed_noise(self.config.result_path, self.config.seed, model.Z_DIM)

    def restore_for_resume(self, tasks):
        """The latest checkpoint, else the newest end-of-task one; says which, and refuses
        (UsageError) when there is nothing to resume from."""
        for path in self.checkpoints.remove_unfinished_writes():
            print(f'removed {path}, left by an interrupted checkpoint write', file=sys.stderr)
        if self.checkpoints.restore_latest():
            return
        numbers = [task.number for task in tasks]
        ends = [n for n in self.checkpoints.task_ends() if n in numbers]
        if not ends:
            raise utils.UsageError(f'--resume: {self.config.result_path} holds no checkpoint (the run stopped '
                                   'before its first one); start it again with --overwrite')
        newest = ends[-1]
        self.checkpoints.restore_task_end(newest)
        self.task_index.assign(numbers.index(newest) + 1)
        self.iteration.assign(0)
        later = [n for n in numbers[numbers.index(newest) + 1:] if n in ends]
        print(f'no checkpoint in {self.checkpoints.latest.directory}: continuing after task {newest} from its '
              'end-of-task checkpoint' + (f'; the checkpoints of tasks {later} will be written again, since '
                                          'they cannot be continued from' if later else ''), file=sys.stderr)

    # --- the loop ---
    def fit(self, tasks, callbacks):
        """Train the tasks not finished yet; callbacks do the periodic work.

        A non-finite loss stops the run before anything is written from it: the
        last checkpoint stays as it was, and resumable.
        """
        finished = int(self.task_index)
        replaying = [spec for spec in map(self.spec_tensors, tasks[finished:]) if self.replays(spec)]
        if replaying:  # traced now, so that a method's wrong replay terms fail before task 1 trains
            self.compiled_step.get_concrete_function(replaying[0], True)
        # Positions, not task numbers: joint.py's one task is numbered by its class count.
        for position, task in enumerate(tasks[finished:], finished + 1):
            if int(self.iteration) == 0:
                self.begin_task(task)
            for callback in callbacks:
                callback.on_task_begin(self, position, len(tasks), task)
            spec = self.spec_tensors(task)
            for done in range(int(self.iteration) + 1, self.config.iters + 1):
                metrics = {name: float(value) for name, value in self.train_step(spec).items()}
                check_finite(metrics, task, done)
                if done == self.config.iters:
                    self.end_task(task)
                for callback in callbacks:
                    callback.on_iteration_end(self, position, task, done, metrics)
            self.task_index.assign(position)
            self.iteration.assign(0)
            for callback in callbacks:
                callback.on_task_end(self, position, task)
        for callback in callbacks:
            callback.on_train_end(self)

    def train(self, tasks, resume):
        """The run's loop with its usual callbacks: scalars, grids, checkpoints, progress."""
        config = self.config
        if resume:
            self.restore_for_resume(tasks)
            if int(self.task_index) >= len(tasks):
                gone = [task.number for task in tasks if task.number not in self.checkpoints.task_ends()]
                print(f'{config.result_path} is finished: all {len(tasks)} tasks are trained; nothing to do'
                      + (f'. The end-of-task checkpoint of task{"s" * (len(gone) > 1)} {", ".join(map(str, gone))} '
                         'is missing: --resume cannot write it again, only training the run again (--overwrite) does'
                         if gone else ''),
                      file=sys.stderr)
                return
            print(f'resuming at task {int(self.task_index) + 1}, iteration {int(self.iteration)}', file=sys.stderr)
        self.fit(tasks, [ScalarLogger(config.result_path, config.log_every, config.iters),
                         GridWriter(self.fixed_noise(), config.sample_every, config.iters),
                         CheckpointWriter(config.ckpt_every, config.iters),
                         ProgressReporter(config.iters)])


def check_finite(metrics, task, iteration):
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
        raise NonFiniteLoss(f'{bad[0]} is {metrics[bad[0]]} at task {task.number}, iteration {iteration}'
                            + (f' (also {", ".join(bad[1:])})' if len(bad) > 1 else ''))

