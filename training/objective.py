"""The GAN objective, in one place: the WGAN-GP critic loss and the generator loss, each with
the AC-GAN classification term (the paper's Eqs. 2-5). The compiled step, JTR, EWC's Fisher
and DGR's replay pair all call these; change the objective here and every one follows.

StepInputs is what one step drew, handed to a method's terms, as TF-GAN's stages hand a
small tuple to the next.
"""
from typing import NamedTuple

import tensorflow as tf

import model
import ops

GRADIENT_PENALTY_WEIGHT = 10.0  # lambda of WGAN-GP (Gulrajani et al.), the paper's


class StepInputs(NamedTuple):
    """One step's draws. spec: the task's TaskSpec tensors. The critic's real batch
    (real_images, real_labels) is None on the generator side, which draws none."""
    spec: object
    real_images: object
    real_labels: object
    z: object
    fake_labels: object
    fake_images: object


class CriticLoss(NamedTuple):
    total: object
    wasserstein: object        # E[D(fake)] - E[D(real)]
    gradient_penalty: object   # 0 when no interpolation weights were given
    classification: object     # 0 for an unconditional critic


class GeneratorLoss(NamedTuple):
    total: object
    classification: object


def critic_loss(critic, real_images, real_labels, fake_images, alpha=None, conditional=True):
    """E[D(fake)] - E[D(real)] + 10 GP + CE(class head on real, real labels).

    alpha: WGAN-GP's interpolation weights; None leaves the penalty out (JTR's replay pair,
    as in the reference code). conditional False leaves the class term out (DGR)."""
    (real_scores, real_logits), (fake_scores, _) = model.critic_pass(critic, real_images, fake_images)
    wasserstein = ops.critic_wasserstein_loss(real_scores, fake_scores)
    penalty, total = tf.constant(0.0), wasserstein
    if alpha is not None:
        penalty = ops.gradient_penalty(lambda x: critic(x)[0], real_images, fake_images, alpha)
        total = total + GRADIENT_PENALTY_WEIGHT * penalty
    classification = ops.classification_loss(real_logits, real_labels) if conditional else tf.constant(0.0)
    return CriticLoss(total + classification, wasserstein, penalty, classification)


def generator_loss(fake_scores, fake_logits, fake_labels, conditional=True, reduce=ops.batch_mean):
    """-E[D(G(z, c))] + CE(class head on the fakes, c). reduce=tf.identity gives each
    sample's loss instead of the batch's mean (EWC's per-sample Fisher)."""
    total = -reduce(fake_scores)
    classification = tf.constant(0.0)
    if conditional:
        classification = reduce(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=fake_labels,
                                                                              logits=fake_logits))
        total = total + classification
    return GeneratorLoss(total, classification)
