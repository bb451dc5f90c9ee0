"""Continual-learning methods, one class each, on the hooks of `Method`.

A method declares its flag, its label in tables, its options and the names of the loss
terms it adds; the trainer calls its hooks at named moments and never asks which method
it runs:

    build_sampling_networks(settings)   networks it draws images with beside the generator
                                        (DGR's solver): checkpointed with the generator and
                                        restored with it by evaluation
    build(trainer)                      what else it keeps for training; checkpointed
    begin_task / end_task               act at the start and the end of a task (eager)
    critic_terms(models, inputs, replay), generator_terms(models, inputs, replay)
                                        extra loss terms from task 2 on, traced into the
                                        compiled step; inputs are the step's draws
                                        (objective.StepInputs), replay a batch of the
                                        earlier classes (trainer.Replay)
    sampler(run_generator, task)        generate(class_id, count) -> uint8 images (evaluation)
    grid_images(run_generator, task, fixed_noise)   images per class for the sample grids
    task_metrics(run_generator, task)   numbers of its own for the task's results.json record

Adding a method means one class here, registered in METHODS, and its tests: the command
lines, the reports and figures, the benchmark and the protocol read the registry.
"""
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

import model
import ops
from training import objective
from training.sampling import SolverSampler
from training.trainer import BATCH_SIZE, apply_gradients
from utils import UsageError, positive_float, positive_int, unit_float


class Option(NamedTuple):
    """A method's own flag (e.g. --RA_factor): by default a number, finite and above 0."""
    help: str
    default: object              # dataset_settings -> the value when the flag is not given
    type: object = positive_float
    in_older_runs: object = None  # for an option added later: the value runs saved before it had
    choices: tuple = None        # the values allowed, for a flag that names a choice


class Method:
    """Sequential fine tuning is the base: no extra terms, no extra state."""
    name = 'sft'                 # in config.json and results.json
    label = 'SFT'                # in tables and figures
    flag = None                  # the command-line switch selecting the method
    help = ''
    options = {}                 # flag name (also the keyword of __init__) -> Option
    critic_term_names = ()
    generator_term_names = ()
    conditional = True           # False: unconditional G and no auxiliary-classifier terms
    replay = 'per_class'         # replay batch: 'per_class' (labels of earlier classes) or 'unconditional'

    @classmethod
    def add_option_flags(cls, parser):
        """Flags of the method's own options (defaults None: 'not given')."""
        for name, option in cls.options.items():
            parser.add_argument(f'--{name}', type=option.type, choices=option.choices, help=option.help)

    @classmethod
    def older_run_options(cls):
        """Options absent from a run saved before they existed, and the values it used."""
        return {name: option.in_older_runs for name, option in cls.options.items()
                if option.in_older_runs is not None}

    @classmethod
    def options_from_args(cls, args, dataset_settings):
        """The method's options as a JSON-able dict, from parsed flags."""
        return {name: option.default(dataset_settings) if getattr(args, name) is None else getattr(args, name)
                for name, option in cls.options.items()}

    def build_sampling_networks(self, network_settings):
        """{name: network} that sampling needs beside the generator; restored with it."""
        return {}

    def build(self, trainer):
        """Make what the method needs for training; returns {name: trackable} to checkpoint."""
        return {}

    def begin_task(self, trainer, task):
        """After the trainer's own transition (old G := G, fresh Adam). Must be idempotent."""

    def end_task(self, trainer, task):
        """After the task's last iteration, before its checkpoint is written."""

    def critic_terms(self, models, inputs, replay):
        return {}

    def generator_terms(self, models, inputs, replay):
        return {}

    def sampler(self, run_generator, task):
        """generate(class_id, count) with the batch make-up the task trained on: batch-norm
        statistics depend on which classes share a batch."""
        return run_generator.default_sampler(task)

    def grid_images(self, run_generator, task, fixed_noise):
        """{class: float images in [-1, 1]} for one grid per seen class from the fixed noise."""
        return run_generator.class_grid_images(task, fixed_noise)

    def task_metrics(self, run_generator, task):
        """Numbers of the method's own for the task's results.json record (--test)."""
        return {}

    def check_terms(self, terms, names, side):
        """The contract: a method returns exactly the terms it declares."""
        if set(terms) != set(names):
            raise TypeError(f'{type(self).__name__}.{side}_terms returned {sorted(terms)}, '
                            f'but the class declares {side}_term_names = {tuple(names)}')
        return terms


class SequentialFineTuning(Method):
    """SFT: no replay at all (the forgetting baseline)."""


class JointTraining(SequentialFineTuning):
    """The upper bound: one task of every class, trained as SFT trains (joint.py)."""
    name = 'joint'
    label = 'Joint'


# A replay batch (trainer.Replay) holds noise and labels of the earlier classes and
# class_scale: t when one batch is split among t classes (MNIST, SVHN), else 1, which
# turns the reference code's per-class sums into one batched computation.

class ReplayAlignment(Method):
    """RA: new and old generator must agree pixel-wise on earlier classes for the
    same z (the paper's Eq. 8); the critic only sees the current class."""
    name = 'ra'
    label = 'MeRGAN-RA'
    flag = '--RA'
    help = 'MeRGAN replay alignment'
    generator_term_names = ('replay_alignment',)
    options = {'RA_factor': Option("weight of the alignment loss (default: the paper's, per dataset)",
                                   lambda settings: settings.ra_factor)}

    def __init__(self, RA_factor):
        self.factor = RA_factor

    def generator_terms(self, models, inputs, replay):
        loss = ops.replay_alignment_loss(replay.images(models.generator), replay.images(models.old_generator))
        return {'replay_alignment': self.factor * loss / replay.class_scale}


class JointTrainingWithReplay(Method):
    """JTR: the old generator's replays stand in for real data of earlier classes.

    The paper describes training on the union of current real data and replays.
    We follow the reference code, which produced the paper's numbers: replays get
    their own WGAN and AC terms, new-G fakes for the same z and class as the fake
    side, no gradient penalty on them, summed over classes (x class_scale).
    """
    name = 'jtr'
    label = 'MeRGAN-JTR'
    flag = '--JTR'
    help = 'MeRGAN joint training with replay'
    critic_term_names = ('jtr_critic',)
    generator_term_names = ('jtr_generator',)

    def replayed_images(self, models, replay):
        """What stands in for real images of the earlier classes: the old generator's."""
        return replay.images(models.old_generator)

    def critic_terms(self, models, inputs, replay):
        loss = objective.critic_loss(models.critic, self.replayed_images(models, replay), replay.labels,
                                     replay.images(models.generator))
        return {self.critic_term_names[0]: replay.class_scale * loss.total}

    def generator_terms(self, models, inputs, replay):
        scores, logits = models.critic(replay.images(models.generator))
        loss = objective.generator_loss(scores, logits, replay.labels)
        return {self.generator_term_names[0]: replay.class_scale * loss.total}


# --- EWC ---------------------------------------------------------------------------------

FISHER_BATCHES = 50  # default batches of 64 per task for the empirical Fisher
FISHER_ESTIMATES = ('batch', 'sample')


class ElasticWeightConsolidation(Method):
    """EWC on the generator (the paper's Eq. 9, after Seff et al. 2017).

    penalty = lambda / 2 * sum_i F_i (theta_i - theta*_i)^2, where theta* is the
    generator at the end of the previous task (the frozen old generator) and F the
    diagonal empirical Fisher of the generator's training loss (objective.generator_loss)
    on the finished tasks' classes. Eq. 9 leaves two readings open, so both are options:

    - which tasks F covers: after task t, F := EWC_fisher_decay * F + F_t. Decay 1
      sums over the earlier tasks (the default, and every run before the option);
      0 keeps the last task's only; in between is online EWC (Schwarz et al. 2018).
    - how F_t is estimated, as the mean over EWC_fisher_batches batches of:
      'batch', the squared gradient of the batch's mean loss; or 'sample', the mean
      of each sample's squared gradient. Batch norm normalises with the batch's
      statistics in both, so a sample's gradient also flows through its batch-mates.
    """
    name = 'ewc'
    label = 'EWC'
    flag = '--EWC'
    help = 'elastic weight consolidation on the generator (baseline)'
    generator_term_names = ('ewc_penalty',)
    options = {'EWC_lambda': Option("EWC strength (default: the paper's 1e9)", lambda settings: 1e9),
               'EWC_fisher_batches': Option(f'batches of {BATCH_SIZE} for the Fisher estimate at the end of '
                                            f'each task (default {FISHER_BATCHES})',
                                            lambda settings: FISHER_BATCHES, positive_int, FISHER_BATCHES),
               'EWC_fisher_decay': Option("after each task F := decay * F + the task's Fisher: 1 sums over "
                                          'the tasks, 0 keeps the last one, between is online EWC (default 1)',
                                          lambda settings: 1.0, unit_float, 1.0),
               'EWC_fisher_estimate': Option("'batch': squared gradient of each batch's loss; 'sample': mean "
                                             "of each sample's squared gradient (default batch)",
                                             lambda settings: 'batch', str, 'batch', FISHER_ESTIMATES)}

    def __init__(self, EWC_lambda, EWC_fisher_batches, EWC_fisher_decay=1.0, EWC_fisher_estimate='batch'):
        self.strength, self.fisher_batches = EWC_lambda, EWC_fisher_batches
        self.decay, self.per_sample = EWC_fisher_decay, EWC_fisher_estimate == 'sample'

    def build(self, trainer):
        self.fisher = [tf.Variable(tf.zeros_like(w), trainable=False) for w in trainer.models.generator.weights]
        self.squared_gradients = trainer.compile(
            lambda spec: fisher_squared_gradients(trainer, spec, self.per_sample))
        return {'fisher': self.fisher}

    def end_task(self, trainer, task):
        total = [tf.zeros_like(f) for f in self.fisher]
        for _ in range(self.fisher_batches):
            total = [t + g for t, g in zip(total, self.squared_gradients(trainer.spec_tensors(task)))]
        for fisher, summed in zip(self.fisher, total):
            fisher.assign(self.decay * fisher + summed / self.fisher_batches)

    def generator_terms(self, models, inputs, replay):
        penalty = ops.ewc_penalty(models.generator.weights, models.old_generator.weights, self.fisher,
                                  self.strength)
        return {'ewc_penalty': penalty}


def fisher_squared_gradients(trainer, spec, per_sample):
    """One batch's contribution to the Fisher: the squared gradient of the generator's
    training loss on the task's fakes, of the batch's mean or (per_sample) of each sample's."""
    generator = trainer.models.generator
    z, labels = trainer.fake_inputs(spec)
    with tf.GradientTape() as tape:
        scores, logits = trainer.models.critic(generator(z, labels))
        loss = objective.generator_loss(scores, logits, labels, reduce=tf.identity if per_sample else ops.batch_mean)
    # class rows of conditional batch norm get no gradient from other classes: zeros, not None
    if per_sample:
        jacobians = tape.jacobian(loss.total, generator.weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # this replica's samples over the global batch; the compiled step sums the replicas' shares
        samples = ops.replica_sum(tf.cast(tf.shape(loss.total)[0], tf.float32))
        return [tf.reduce_sum(tf.square(j), axis=0) / samples for j in jacobians]
    gradients = tape.gradient(loss.total, generator.weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    gradients = [tf.convert_to_tensor(g) for g in gradients]
    # Under tf.distribute the batch's gradient is the sum of the replicas' shares; square it whole.
    return [ops.replica_share(tf.square(g)) for g in ops.replica_sum(gradients)]


# --- DGR ---------------------------------------------------------------------------------

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


# --- rehearsal ---------------------------------------------------------------------------

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


# --- the registry --------------------------------------------------------------------------

METHODS = {cls.name: cls for cls in (SequentialFineTuning, ReplayAlignment, JointTrainingWithReplay,
                                     ElasticWeightConsolidation, DeepGenerativeReplay, Rehearsal, JointTraining)}


def selectable():
    """The methods main.py offers by flag, in registry order."""
    return [cls for cls in METHODS.values() if cls.flag]


def add_method_flags(parser):
    group = parser.add_argument_group('method (default: sequential fine tuning, SFT)')
    for cls in selectable():
        group.add_argument(cls.flag, action='store_true', help=cls.help)
        cls.add_option_flags(group)


def method_from_args(args, dataset_settings):
    """(method name, options) from parsed flags; raises UsageError for impossible combinations."""
    chosen = [cls for cls in selectable() if getattr(args, cls.flag.lstrip('-'))]
    if len(chosen) > 1:
        raise UsageError('choose one method: ' + ' or '.join(cls.flag for cls in chosen))
    for cls in selectable():
        for name in cls.options:
            if getattr(args, name) is not None and cls not in chosen:
                raise UsageError(f'--{name} needs {cls.flag}')
    method = chosen[0] if chosen else SequentialFineTuning
    return method.name, method.options_from_args(args, dataset_settings)


def method_for(name, options):
    """The method of a run, also of one saved before some of its options existed."""
    cls = METHODS[name]
    return cls(**{**cls.older_run_options(), **options})
