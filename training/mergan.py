"""MeRGAN's two ways of replaying the previous generator (the paper, section 3): replay
alignment (RA) and joint training with replay (JTR).

A replay batch (trainer.Replay) holds noise and labels of the earlier classes and
class_scale: t when one batch is split among t classes (MNIST, SVHN), else 1, which
turns the reference code's per-class sums into one batched computation.
"""
import ops
from training import objective
from training.method_base import Method, Option


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
