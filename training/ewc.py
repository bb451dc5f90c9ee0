"""EWC on the generator, the paper's first baseline (its Eq. 9)."""
import tensorflow as tf

import ops
from training import objective
from training.method_base import Method, Option
from training.trainer import BATCH_SIZE
from utils import positive_int, unit_float


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
