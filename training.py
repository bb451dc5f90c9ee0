"""The compiled WGAN-GP training step, its checkpointed state and the task loop.

Shared by main.py (sequential tasks, with a replay strategy) and joint.py (one
task holding every class). One tf.function call runs the critic steps and the
generator step of one generator iteration; per-task values enter as int32
tensors, so moving to the next task never retraces.
"""
import os
import sys
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

import model
import ops
import utils
from callbacks import CheckpointWriter, GridWriter, NonFiniteLoss, ProgressReporter, ScalarLogger
from data import group_by_class
from distribution import make_distribution
from sampling import BATCH_SIZE, MixedBatchSampler, generate_in_batches, trains_mixed_batches

CRITIC_STEPS = 5
GRADIENT_PENALTY_WEIGHT = 10.0
LEARNING_RATE = 1e-4
ADAM_BETAS = (0.0, 0.9)
GRID_SIZE = 100
PRECISIONS = ('float32', 'mixed_bfloat16')  # Keras policies: compute dtype; weights stay float32


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
    """What a strategy gets from task 2 on: noise and labels of the earlier classes,
    one equal, consecutive group per class, and class_scale (see strategies.py).
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


def with_every_weight(objects):
    """Checkpoint items, each Keras model's weights added by list.

    A Keras 3 model shows tf.train.Checkpoint only the layers it holds as attributes,
    not those in lists (our norms and convolutions). A trained network's list-held
    weights are still saved through its optimiser; a frozen copy (the old generator,
    DGR's old solver) has none, and would come back from a checkpoint half re-initialised.
    """
    items = dict(objects)
    for name, value in objects.items():
        if isinstance(value, keras.Model):
            items[f'{name}_weights'] = list(value.weights)
    return items


def apply_gradients(optimizer, gradients, variables):
    """Skips variables a loss does not reach (the critic's class head under DGR), which
    Keras would otherwise warn about on every step."""
    optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])


def sum_terms(terms):
    return tf.add_n([tf.constant(0.0), *terms.values()])


class Trainer:
    """Models, optimisers, random state, the compiled step and the task transitions of one run."""

    def __init__(self, config, data, strategy, settings):
        # First: logical CPU devices for --devices must be set up before TensorFlow's runtime.
        self.distribution = make_distribution(config.distribute, config.devices)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self.config, self.data, self.strategy = config, data, strategy
        self.rng = self.distribution.random_generator(config.seed)
        # The loop's counters stay plain variables (read as Python ints), outside the scope.
        self.task_index = tf.Variable(0, dtype=tf.int64)   # tasks finished
        self.iteration = tf.Variable(0, dtype=tf.int64)    # iterations done in the current task
        with self.distribution.scope():
            self._build(data, strategy, settings)
        self.checkpoints = utils.RunCheckpoints(config.result_path, self.checkpoint)
        self.train_step = self.compile(self._train_step)
        self.generate = tf.function(self.models.generator.call)

    def _build(self, data, strategy, settings):
        """Networks, optimisers and variables: under the distribution's scope, so that
        tf.distribute mirrors them on every replica."""
        self.split_replay_batch = settings.split_replay_batch
        self.network_settings = dict(architecture=settings.architecture, num_classes=data.num_classes,
                                     image_shape=data.image_shape)
        # The policy is read when layers are made: only the GAN gets it, not the evaluation classifier.
        keras.mixed_precision.set_global_policy(self.config.precision)
        generators = [model.build_generator(**self.network_settings, conditional=strategy.conditional)
                      for _ in range(2)]
        self.models = Models(generators[0], model.build_critic(**self.network_settings), generators[1])
        keras.mixed_precision.set_global_policy('float32')
        self.models.old_generator.trainable = False
        self.generator_optimizer, self.critic_optimizer = make_adam(), make_adam()
        self.generator_optimizer.build(self.models.generator.trainable_variables)
        self.critic_optimizer.build(self.models.critic.trainable_variables)
        pool_images, pool_labels, _ = group_by_class(data.train_x, data.train_y, data.num_classes)
        # Eager tensors are captured by reference: batches are drawn in-graph from memory.
        self.pool_images = tf.constant(pool_images)
        self.pool_labels = tf.constant(pool_labels, tf.int32)
        strategy_state = strategy.build(self)
        self.checkpoint = tf.train.Checkpoint(**with_every_weight(dict(
            generator=self.models.generator, critic=self.models.critic,
            old_generator=self.models.old_generator, generator_optimizer=self.generator_optimizer,
            critic_optimizer=self.critic_optimizer, rng=self.rng, task_index=self.task_index,
            iteration=self.iteration, **{f'strategy_{name}': value for name, value in strategy_state.items()})))

    def compile(self, step):
        """step compiled to run where the run trains; under tf.distribute on every replica,
        with each output summed over them (a replica returns its share)."""
        return self.distribution.compile(step)

    @staticmethod
    def spec_tensors(task):
        """The task's TaskSpec as int32 tensors: the step is traced once for every task."""
        return TaskSpec(*[tf.constant(value, tf.int32) for value in task.spec])

    # --- compiled: CRITIC_STEPS critic updates, then one generator update ---
    def _train_step(self, spec):
        for _ in range(CRITIC_STEPS):
            critic_metrics = self._critic_update(spec)
        return {**critic_metrics, **self._generator_update(spec)}

    def real_batch(self, spec):
        # Draws are global batches; each replica keeps its part (unchanged on one device).
        index = ops.replica_part(self.rng.uniform([BATCH_SIZE], spec.real_start, spec.real_end, dtype=tf.int32))
        images = tf.cast(tf.gather(self.pool_images, index), tf.float32) / 127.5 - 1.0
        return images, tf.gather(self.pool_labels, index)

    def fake_inputs(self, spec):
        labels = self.rng.uniform([BATCH_SIZE], spec.fake_label_low, spec.fake_label_high, dtype=tf.int32)
        return ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM])), ops.replica_part(labels)

    def replay_batch(self, earlier_classes):
        """Noise and labels for the earlier classes, as the strategy's replay asks."""
        if self.strategy.replay == 'unconditional':
            z = ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM]))
            return Replay(z, ops.replica_part(tf.zeros([BATCH_SIZE], tf.int32)), None, tf.constant(1.0))
        per_class = BATCH_SIZE // earlier_classes if self.split_replay_batch else BATCH_SIZE
        labels = tf.repeat(tf.range(earlier_classes), per_class)
        z = ops.replica_part(self.rng.normal([tf.size(labels), model.Z_DIM]), groups=earlier_classes)
        scale = tf.cast(earlier_classes if self.split_replay_batch else 1, tf.float32)
        return Replay(z, ops.replica_part(labels, groups=earlier_classes), earlier_classes, scale)

    def replay_terms(self, spec, side):
        """The strategy's terms for one side ('critic' or 'generator') on a fresh replay
        batch, or zeros in the first task."""
        names = getattr(self.strategy, f'{side}_term_names')
        terms = getattr(self.strategy, f'{side}_terms')
        if not names:
            return {}

        def with_replay():
            # Checked here, at tracing: a wrong name fails at the first step, not inside tf.cond.
            # At least one class: under tf.distribute this branch also runs in the first task.
            earlier_classes = tf.maximum(spec.earlier_classes, 1)
            return self.strategy.check_terms(terms(self.models, self.replay_batch(earlier_classes)), names, side)

        return self.distribution.cond(spec.earlier_classes > 0, with_replay,
                                      lambda: {name: tf.constant(0.0) for name in names})

    def _auxiliary_loss(self, logits, labels):
        """The AC-GAN term; an unconditional method (DGR) has none."""
        return ops.classification_loss(logits, labels) if self.strategy.conditional else tf.constant(0.0)

    def _critic_update(self, spec):
        critic = self.models.critic
        real_images, real_labels = self.real_batch(spec)
        fake_images = self.models.generator(*self.fake_inputs(spec))
        alpha = ops.replica_part(ops.sample_interpolation_weights(self.rng, BATCH_SIZE))
        with tf.GradientTape() as tape:
            (real_scores, real_logits), (fake_scores, _) = model.critic_pass(critic, real_images, fake_images)
            wasserstein = ops.critic_wasserstein_loss(real_scores, fake_scores)
            penalty = ops.gradient_penalty(lambda x: critic(x)[0], real_images, fake_images, alpha)
            classification = self._auxiliary_loss(real_logits, real_labels)
            replay = self.replay_terms(spec, 'critic')
            loss = wasserstein + GRADIENT_PENALTY_WEIGHT * penalty + classification + sum_terms(replay)
        apply_gradients(self.critic_optimizer, tape.gradient(loss, critic.trainable_variables),
                        critic.trainable_variables)
        return {'critic/loss': loss, 'critic/wasserstein_estimate': -wasserstein,
                'critic/gradient_penalty': penalty, 'critic/ac_loss': classification,
                **{f'critic/{name}': value for name, value in replay.items()}}

    def _generator_update(self, spec):
        generator = self.models.generator
        z, fake_labels = self.fake_inputs(spec)
        with tf.GradientTape() as tape:
            fake_scores, fake_logits = self.models.critic(generator(z, fake_labels))
            adversarial = ops.generator_wasserstein_loss(fake_scores)
            classification = self._auxiliary_loss(fake_logits, fake_labels)
            replay = self.replay_terms(spec, 'generator')
            loss = adversarial + classification + sum_terms(replay)
        apply_gradients(self.generator_optimizer, tape.gradient(loss, generator.trainable_variables),
                        generator.trainable_variables)
        return {'generator/loss': loss, 'generator/ac_loss': classification,
                **{f'generator/{name}': value for name, value in replay.items()}}

    # --- task transitions ---
    def begin_task(self, task=None):
        """Old G := G and fresh Adam; the critic keeps its weights; then the strategy's
        own transition. Idempotent, so a resume that lands exactly on a task boundary
        may redo it."""
        for old, new in zip(self.models.old_generator.weights, self.models.generator.weights):
            old.assign(new)
        reset_optimizer(self.generator_optimizer)
        reset_optimizer(self.critic_optimizer)
        self.strategy.begin_task(self, task)

    def end_task(self, task):
        self.strategy.end_task(self, task)

    # --- sampling and grids ---
    def sample_images(self, class_id, count):
        """uint8 images of one class, generated in single-class batches (batch-norm statistics)."""
        rng = np.random.default_rng([self.config.seed, class_id, count])
        labels = np.full(-(-count // BATCH_SIZE) * BATCH_SIZE, class_id, np.int32)
        return generate_in_batches(self.generate, labels, rng)[:count]

    def default_sampler(self, task):
        """A sequential task's batches each held one class (the current one, or one
        replayed class); joint training mixed them."""
        if trains_mixed_batches(task):
            return MixedBatchSampler(self.generate, task.seen_classes, self.config.seed)
        return self.sample_images

    def class_grid_images(self, task, fixed_noise):
        """{class: images} from the fixed noise, in the task's batch make-up."""
        classes = task.seen_classes
        if trains_mixed_batches(task):
            labels = np.repeat(np.asarray(classes, np.int32), len(fixed_noise))
            images = self.generate(np.tile(fixed_noise, (len(classes), 1)), labels).numpy()
            return dict(zip(classes, np.split(images, len(classes))))
        return {c: self.generate(fixed_noise, np.full(len(fixed_noise), c, np.int32)).numpy() for c in classes}

    def save_class_grids(self, task, fixed_noise, path_of):
        for class_id, images in self.strategy.grid_images(self, task, fixed_noise).items():
            utils.save_grid(utils.to_uint8(images), os.path.join(self.config.result_path, path_of(class_id)))

    def save_real_grids(self, classes):
        for class_id in classes:
            images = self.data.train_x[self.data.train_y == class_id][:GRID_SIZE]
            utils.save_grid(images, os.path.join(self.config.result_path, 'samples', f'real_class_{class_id}.png'))

    def fixed_noise(self):
        return utils.load_or_create_fixed_noise(self.config.result_path, self.config.seed, GRID_SIZE, model.Z_DIM)

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
                print(f'{config.result_path} is finished: all {len(tasks)} tasks are trained; nothing to do',
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

