"""Continual-learning methods, one class each, on the hooks of `Strategy`.

A strategy declares its flag, its options and the names of the loss terms it adds;
the trainer calls its hooks at named moments and never asks which method it runs:

    build(trainer)            what it keeps beside the GAN; returned objects are checkpointed
    begin_task / end_task     act at the start and the end of a task (eager)
    critic_terms(models, replay), generator_terms(models, replay)
                              extra loss terms from task 2 on, traced into the compiled step
    sampler(trainer, task)    generate(class_id, count) -> uint8 images, for evaluation
    grid_images(...)          images per class for the sample grids

Adding a method means one class here, registered in STRATEGIES, and its tests.
"""
from typing import NamedTuple

import numpy as np
import tensorflow as tf

import model
import ops
import sampling
from training import BATCH_SIZE, GRADIENT_PENALTY_WEIGHT, apply_gradients
from utils import UsageError, positive_float, positive_int


class Option(NamedTuple):
    """A method's own number flag (e.g. --RA_factor): must be finite and above 0."""
    help: str
    default: object              # dataset_settings -> the value when the flag is not given
    type: object = positive_float
    in_older_runs: object = None  # for an option added later: the value runs saved before it had


class Strategy:
    """Sequential fine tuning is the base: no extra terms, no extra state."""
    name = 'sft'
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
            parser.add_argument(f'--{name}', type=option.type, help=option.help)

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

    def build(self, trainer):
        """Make what the method needs beside the GAN; returns {name: trackable} to checkpoint."""
        return {}

    def begin_task(self, trainer, task):
        """After the trainer's own transition (old G := G, fresh Adam). Must be idempotent."""

    def end_task(self, trainer, task):
        """After the task's last iteration, before its checkpoint is written."""

    def critic_terms(self, models, replay):
        return {}

    def generator_terms(self, models, replay):
        return {}

    def sampler(self, trainer, task):
        """generate(class_id, count) with the batch make-up the task trained on: batch-norm
        statistics depend on which classes share a batch."""
        return trainer.default_sampler(task)

    def grid_images(self, trainer, task, fixed_noise):
        """{class: float images in [-1, 1]} for one grid per seen class from the fixed noise."""
        return trainer.class_grid_images(task, fixed_noise)

    def check_terms(self, terms, names, side):
        """The contract: a strategy returns exactly the terms it declares."""
        if set(terms) != set(names):
            raise TypeError(f'{type(self).__name__}.{side}_terms returned {sorted(terms)}, '
                            f'but the class declares {side}_term_names = {tuple(names)}')
        return terms


class SequentialFineTuning(Strategy):
    """SFT: no replay at all (the forgetting baseline, and the strategy of joint training)."""


# A replay batch (training.Replay) holds noise and labels of the earlier classes and
# class_scale: t when one batch is split among t classes (MNIST, SVHN), else 1, which
# turns the reference code's per-class sums into one batched computation.

class ReplayAlignment(Strategy):
    """RA: new and old generator must agree pixel-wise on earlier classes for the
    same z (the paper's Eq. 8); the critic only sees the current class."""
    name = 'ra'
    flag = '--RA'
    help = 'MeRGAN replay alignment'
    generator_term_names = ('replay_alignment',)
    options = {'RA_factor': Option("weight of the alignment loss (default: the paper's, per dataset)",
                                   lambda settings: settings.ra_factor)}

    def __init__(self, RA_factor):
        self.factor = RA_factor

    def generator_terms(self, models, replay):
        loss = ops.replay_alignment_loss(replay.images(models.generator), replay.images(models.old_generator))
        return {'replay_alignment': self.factor * loss / replay.class_scale}


class JointTrainingWithReplay(Strategy):
    """JTR: the old generator's replays stand in for real data of earlier classes.

    The paper describes training on the union of current real data and replays.
    We follow the reference code, which produced the paper's numbers: replays get
    their own WGAN and AC terms, new-G fakes for the same z and class as the fake
    side, no gradient penalty on them, summed over classes (x class_scale).
    """
    name = 'jtr'
    flag = '--JTR'
    help = 'MeRGAN joint training with replay'
    critic_term_names = ('jtr_critic',)
    generator_term_names = ('jtr_generator',)

    def critic_terms(self, models, replay):
        (old_scores, old_logits), (new_scores, _) = model.critic_pass(
            models.critic, replay.images(models.old_generator), replay.images(models.generator))
        loss = (ops.critic_wasserstein_loss(old_scores, new_scores)
                + ops.classification_loss(old_logits, replay.labels))
        return {'jtr_critic': replay.class_scale * loss}

    def generator_terms(self, models, replay):
        new_scores, new_logits = models.critic(replay.images(models.generator))
        loss = ops.generator_wasserstein_loss(new_scores) + ops.classification_loss(new_logits, replay.labels)
        return {'jtr_generator': replay.class_scale * loss}


# --- EWC ---------------------------------------------------------------------------------

FISHER_BATCHES = 50  # default batches of 64 per task for the empirical Fisher


class ElasticWeightConsolidation(Strategy):
    """EWC on the generator (the paper's Eq. 9, after Seff et al. 2017).

    penalty = lambda / 2 * sum_i F_i (theta_i - theta*_i)^2, where theta* is the
    generator at the end of the previous task (the frozen old generator) and F the
    diagonal empirical Fisher, summed over the earlier tasks. F is estimated per
    batch, not per sample: batch norm on batch statistics couples a batch's samples,
    so a single sample has no gradient of its own. At the end of task t, F gains the
    mean over EWC_fisher_batches batches of the squared gradient of the generator's
    training loss (Wasserstein + AC) on that task's class.
    """
    name = 'ewc'
    flag = '--EWC'
    help = 'elastic weight consolidation on the generator (baseline)'
    generator_term_names = ('ewc_penalty',)
    options = {'EWC_lambda': Option("EWC strength (default: the paper's 1e9)", lambda settings: 1e9),
               'EWC_fisher_batches': Option(f'batches of {BATCH_SIZE} for the Fisher estimate at the end of '
                                            f'each task (default {FISHER_BATCHES})',
                                            lambda settings: FISHER_BATCHES, positive_int, FISHER_BATCHES)}

    def __init__(self, EWC_lambda, EWC_fisher_batches):
        self.strength, self.fisher_batches = EWC_lambda, EWC_fisher_batches

    def build(self, trainer):
        self.fisher = [tf.Variable(tf.zeros_like(w), trainable=False) for w in trainer.models.generator.weights]
        self.squared_gradients = trainer.compile(lambda spec: batch_squared_gradients(trainer, spec))
        return {'fisher': self.fisher}

    def end_task(self, trainer, task):
        total = [tf.zeros_like(f) for f in self.fisher]
        for _ in range(self.fisher_batches):
            total = [t + g for t, g in zip(total, self.squared_gradients(trainer.spec_tensors(task)))]
        for fisher, summed in zip(self.fisher, total):
            fisher.assign_add(summed / self.fisher_batches)

    def generator_terms(self, models, replay):
        penalty = ops.ewc_penalty(models.generator.weights, models.old_generator.weights, self.fisher,
                                  self.strength)
        return {'ewc_penalty': penalty}


def batch_squared_gradients(trainer, spec):
    """Squared gradient of the generator's training loss on one batch of the task's fakes."""
    generator = trainer.models.generator
    z, labels = trainer.fake_inputs(spec)
    with tf.GradientTape() as tape:
        scores, logits = trainer.models.critic(generator(z, labels))
        loss = ops.generator_wasserstein_loss(scores) + ops.classification_loss(logits, labels)
    gradients = tape.gradient(loss, generator.weights)
    # class rows of conditional batch norm get sparse gradients; unused rows are zero
    gradients = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(w)
                 for g, w in zip(gradients, generator.weights)]
    # Under tf.distribute the batch's gradient is the sum of the replicas' shares; square it whole.
    return [ops.replica_share(tf.square(g)) for g in ops.replica_sum(gradients)]


# --- DGR ---------------------------------------------------------------------------------

SOLVER_STEPS = 500          # default solver updates at the end of each task
SOLVER_LEARNING_RATE = 1e-3


class DeepGenerativeReplay(Strategy):
    """DGR (Shin et al. 2017) as the paper runs it: an unconditional WGAN-GP and a solver.

    From task 2 on the critic's real side gets one batch of the previous generator's
    replays for every batch of real data (the paper, section 4.1), as a second
    Wasserstein pair with its own gradient penalty, the new generator's images for
    the same z on the fake side. At the end of each task the solver is trained on
    the task's real images plus replays labelled by the previous solver. Class c's
    images are the generated images that the solver labels c.
    """
    name = 'dgr'
    flag = '--DGR'
    help = 'deep generative replay: unconditional GAN plus a solver (baseline)'
    critic_term_names = ('dgr_replay_critic',)
    conditional = False
    replay = 'unconditional'
    options = {'DGR_solver_steps': Option(f'solver updates at the end of each task (default {SOLVER_STEPS})',
                                          lambda settings: SOLVER_STEPS, positive_int, SOLVER_STEPS)}

    def __init__(self, DGR_solver_steps):
        self.solver_steps = DGR_solver_steps

    def build(self, trainer):
        import keras
        build = trainer.network_settings
        self.rng = trainer.rng
        self.solver = model.build_solver(**build)
        self.old_solver = model.build_solver(**build)
        self.old_solver.trainable = False
        self.optimizer = keras.optimizers.Adam(SOLVER_LEARNING_RATE)
        self.optimizer.build(self.solver.trainable_variables)
        self.train_on_real = trainer.compile(lambda spec: self._solver_update(trainer, spec, with_replay=False))
        self.train_with_replay = trainer.compile(lambda spec: self._solver_update(trainer, spec, with_replay=True))
        self.label = tf.function(lambda images: tf.argmax(self.solver(images)[1], axis=-1, output_type=tf.int32))
        return {'solver': self.solver, 'old_solver': self.old_solver, 'solver_optimizer': self.optimizer}

    def begin_task(self, trainer, task):
        for old, new in zip(self.old_solver.weights, self.solver.weights):
            old.assign(new)

    def end_task(self, trainer, task):
        spec = trainer.spec_tensors(task)
        update = self.train_with_replay if task.spec.earlier_classes > 0 else self.train_on_real
        for _ in range(self.solver_steps):
            update(spec)

    def _solver_update(self, trainer, spec, with_replay):
        images, labels = trainer.real_batch(spec)
        if with_replay:
            replays = trainer.models.old_generator(ops.replica_part(self.rng.normal([BATCH_SIZE, model.Z_DIM])),
                                                   ops.replica_part(tf.zeros([BATCH_SIZE], tf.int32)))
            replay_labels = tf.argmax(self.old_solver(replays)[1], axis=-1, output_type=tf.int32)
            images, labels = tf.concat([images, replays], 0), tf.concat([labels, replay_labels], 0)
        with tf.GradientTape() as tape:
            loss = ops.classification_loss(self.solver(images)[1], labels)
        apply_gradients(self.optimizer, tape.gradient(loss, self.solver.trainable_variables),
                        self.solver.trainable_variables)
        return loss

    def critic_terms(self, models, replay):
        replays, fakes = replay.images(models.old_generator), replay.images(models.generator)
        (replay_scores, _), (fake_scores, _) = model.critic_pass(models.critic, replays, fakes)
        alpha = ops.replica_part(ops.sample_interpolation_weights(self.rng, BATCH_SIZE))
        penalty = ops.gradient_penalty(lambda x: models.critic(x)[0], replays, fakes, alpha)
        return {'dgr_replay_critic': ops.critic_wasserstein_loss(replay_scores, fake_scores)
                + GRADIENT_PENALTY_WEIGHT * penalty}

    def sampler(self, trainer, task):
        return sampling.SolverSampler(trainer.generate, self.label, task.seen_classes, trainer.config.seed)

    def grid_images(self, trainer, task, fixed_noise):
        """Generated images grouped by the solver's label (the paper's Figure 3), drawn as the
        evaluation draws them until each class fills a grid. The fixed noise alone is too few:
        an earlier class's share halves with every task, so after task 10 most of its 100
        images went to the newest classes and the oldest classes' grids held 0 to 3 images."""
        drawn = self.sampler(trainer, task).make_all(len(fixed_noise))
        return {c: images.astype(np.float32) / 127.5 - 1.0 for c, images in drawn.items() if len(images)}


# --- the registry --------------------------------------------------------------------------

STRATEGIES = {cls.name: cls for cls in (SequentialFineTuning, ReplayAlignment, JointTrainingWithReplay,
                                        ElasticWeightConsolidation, DeepGenerativeReplay)}
SELECTABLE = [cls for cls in STRATEGIES.values() if cls.flag]


def add_method_flags(parser):
    group = parser.add_argument_group('method (default: sequential fine tuning, SFT)')
    for cls in SELECTABLE:
        group.add_argument(cls.flag, action='store_true', help=cls.help)
        cls.add_option_flags(group)


def method_from_args(args, dataset_settings):
    """(mode, options) from parsed flags; raises UsageError for impossible combinations."""
    chosen = [cls for cls in SELECTABLE if getattr(args, cls.flag.lstrip('-'))]
    if len(chosen) > 1:
        raise UsageError('choose one method: ' + ' or '.join(cls.flag for cls in chosen))
    for cls in SELECTABLE:
        for name in cls.options:
            if getattr(args, name) is not None and cls not in chosen:
                raise UsageError(f'--{name} needs {cls.flag}')
    method = chosen[0] if chosen else SequentialFineTuning
    return method.name, method.options_from_args(args, dataset_settings)


def strategy_class(mode):
    """Joint training is one task of SFT."""
    return SequentialFineTuning if mode == 'joint' else STRATEGIES[mode]


def strategy_for(mode, options):
    """The strategy of a run, also of one saved before some of its options existed."""
    cls = strategy_class(mode)
    return cls(**{**cls.older_run_options(), **options})
