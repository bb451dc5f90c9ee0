"""EWC on the generator: its Fisher variants against numpy on a tiny generator, and its penalty."""
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

import keras
from helpers import ROOT, make_trainer, spec_tensors, tasks_for, weights_of
from training import ewc, objective
from training.trainer import Models, Task, TaskSpec, Trainer


class TinyGenerator(keras.Model):
    """x = z W, as a 1x1 image of P channels; labels unused."""

    def __init__(self, z_dim, pixels):
        super().__init__()
        self.kernel = self.add_weight(shape=(z_dim, pixels), initializer=keras.initializers.RandomNormal(seed=1))

    def call(self, z, labels, groups=None):
        return tf.reshape(tf.matmul(z, self.kernel), [-1, 1, 1, self.kernel.shape[1]])


class TinyCritic:
    """score = x a, logits = x B, with fixed a and B."""

    def __init__(self, pixels, classes):
        rng = np.random.default_rng(2)
        self.a = rng.normal(size=pixels).astype(np.float32)
        self.b = rng.normal(size=(pixels, classes)).astype(np.float32)

    def __call__(self, images):
        x = tf.reshape(images, [tf.shape(images)[0], -1])
        return tf.linalg.matvec(x, self.a), tf.matmul(x, self.b)


class TinyTrainer:
    """What EWC's Fisher needs of a trainer: models, fake inputs, task specs, compilation."""
    batch, z_dim, pixels, classes = 4, 3, 5, 2

    def __init__(self):
        self.models = Models(TinyGenerator(self.z_dim, self.pixels),
                                      TinyCritic(self.pixels, self.classes), None)
        self.rng = tf.random.Generator.from_seed(7)

    def fake_inputs(self, spec):
        return self.rng.normal([self.batch, self.z_dim]), tf.fill([self.batch], spec.fake_label_low)

    spec_tensors = staticmethod(Trainer.spec_tensors)

    def compile(self, step):  # one device
        return tf.function(step)


def numpy_sample_loss_gradients(kernel, a, b, z, label):
    """Row i: d/dx_i of -x_i a + cross-entropy(x_i B, label), x_i = z_i W."""
    logits = z @ kernel @ b
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    onehot = np.eye(b.shape[1])[np.full(len(z), label)]
    return -a[None, :] + (softmax - onehot) @ b.T


def numpy_squared_gradient(kernel, a, b, z, label):
    """d/dW of -mean(x a) + mean cross-entropy(x B, label), x = z W, squared."""
    return (z.T @ numpy_sample_loss_gradients(kernel, a, b, z, label) / len(z)) ** 2


def numpy_per_sample_squared_gradient(kernel, a, b, z, label):
    """Mean over samples of (d/dW of -x_i a + cross-entropy(x_i B, label))^2, x_i = z_i W."""
    d_x = numpy_sample_loss_gradients(kernel, a, b, z, label)
    return np.mean([np.outer(z_i, d_i) ** 2 for z_i, d_i in zip(z, d_x)], axis=0)


@pytest.mark.parametrize('estimate, numpy_estimate', [('batch', numpy_squared_gradient),
                                                      ('sample', numpy_per_sample_squared_gradient)])


@pytest.mark.parametrize('decay', [1.0, 0.5, 0.0])
def test_every_fisher_variant_of_a_tiny_generator_matches_numpy(estimate, numpy_estimate, decay):
    """F after two tasks: decay * F_1 + F_2, each F_t the mean of 3 batches' estimates."""
    trainer = TinyTrainer()
    method = ewc.ElasticWeightConsolidation(EWC_lambda=1e9, EWC_fisher_batches=3, EWC_fisher_decay=decay,
                                            EWC_fisher_estimate=estimate)
    method.build(trainer)
    replica = tf.random.Generator.from_seed(7)  # the same noise, drawn again
    kernel = trainer.models.generator.kernel.numpy().astype(np.float64)
    critic = trainer.models.critic

    def numpy_fisher(label):
        return np.mean([numpy_estimate(kernel, critic.a, critic.b, replica.normal([4, 3]).numpy().astype(np.float64),
                                       label) for _ in range(3)], axis=0)

    first, second = numpy_fisher(1), numpy_fisher(0)
    method.end_task(trainer, tasks_for_labels(label=1))
    np.testing.assert_allclose(method.fisher[0].numpy(), first, rtol=1e-4)
    method.end_task(trainer, tasks_for_labels(label=0))
    np.testing.assert_allclose(method.fisher[0].numpy(), decay * first + second, rtol=1e-4)


def test_per_sample_fisher_is_at_least_the_per_batch_one_on_the_same_noise():
    """Jensen: the mean of squares is at least the square of the mean."""
    fishers = {}
    for estimate in ewc.FISHER_ESTIMATES:
        trainer = TinyTrainer()
        method = ewc.ElasticWeightConsolidation(EWC_lambda=1.0, EWC_fisher_batches=2, EWC_fisher_estimate=estimate)
        method.build(trainer)
        method.end_task(trainer, tasks_for_labels(label=1))
        fishers[estimate] = method.fisher[0].numpy()
    assert np.all(fishers['sample'] >= fishers['batch'] - 1e-7) and fishers['sample'].sum() > fishers['batch'].sum()


@pytest.mark.parametrize('estimate', ewc.FISHER_ESTIMATES)
def test_the_fisher_follows_a_change_to_the_generator_loss(monkeypatch, estimate):
    """The Fisher is of the objective's generator loss: doubled, every squared gradient is 4x."""
    def fisher():
        trainer = TinyTrainer()
        method = ewc.ElasticWeightConsolidation(EWC_lambda=1.0, EWC_fisher_batches=2, EWC_fisher_estimate=estimate)
        method.build(trainer)
        method.end_task(trainer, tasks_for_labels(label=1))
        return method.fisher[0].numpy()

    before = fisher()
    loss = objective.generator_loss
    monkeypatch.setattr(objective, 'generator_loss', lambda *args, **kwargs: loss(*args, **kwargs)._replace(
        total=2 * loss(*args, **kwargs).total))
    np.testing.assert_allclose(fisher(), 4 * before, rtol=1e-5)


def tasks_for_labels(label):
    spec = TaskSpec(real_start=0, real_end=1, fake_label_low=label, fake_label_high=label + 1,
                             earlier_classes=label)
    return Task(number=label + 1, spec=spec, seen_classes=list(range(label + 1)), new_classes=[label])


def test_ewc_penalty_is_zero_in_task_1_and_at_the_anchor_and_its_formula_after(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'ewc', tmp_path)
    task1, task2 = tasks_for(mnist_5k, 2)
    trainer.begin_task(task1)
    assert float(trainer.train_step(spec_tensors(task1))['generator/ewc_penalty']) == 0.0
    trainer.end_task(task1)
    fisher = [f.numpy().copy() for f in trainer.method.fisher]
    assert sum(float(f.sum()) for f in fisher) > 0
    trainer.begin_task(task2)
    anchor = weights_of(trainer.models.generator)
    # theta = theta*: computed before the first update of the task, the penalty is exactly 0
    assert float(trainer.train_step(spec_tensors(task2))['generator/ewc_penalty']) == 0.0
    theta = weights_of(trainer.models.generator)
    expected = 0.5 * 1e9 * sum(float(np.sum(f.astype(np.float64) * (t - a) ** 2))
                               for f, t, a in zip(fisher, theta, anchor))
    assert expected > 0
    penalty = ewc.ElasticWeightConsolidation(EWC_lambda=1e9, EWC_fisher_batches=1)
    penalty.fisher = trainer.method.fisher
    value = penalty.generator_terms(trainer.models, None, None)['ewc_penalty']
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


def test_fisher_scale_measures_the_move_between_the_task_checkpoints_and_a_fisher_of_them(trained):
    """reproduction/fisher_scale.py (findings.md's scale of lambda): d is the generator's move
    from the end of task 1 to the end of task 2 as the checkpoint files hold it, and F is
    a mean of squares with the penalty 0.5 sum F d^2 it reports."""
    spec = importlib.util.spec_from_file_location('fisher_scale', os.path.join(ROOT, 'reproduction', 'fisher_scale.py'))
    fisher_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fisher_scale)
    fisher, drift, half_sum = fisher_scale.measure(str(trained), batches=2)
    readers = [tf.train.load_checkpoint(str(trained / 'checkpoints' / 'tasks' / f'task_{t}')) for t in (1, 2)]
    count = len([k for k in readers[0].get_variable_to_shape_map() if k.startswith('generator_weights/')])
    weights = [[reader.get_tensor(f'generator_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE').astype(np.float64)
                for i in range(count)] for reader in readers]
    moved = [after - before for before, after in zip(*weights)]
    np.testing.assert_array_equal(drift, np.concatenate([m.ravel() for m in moved]))
    assert fisher.shape == drift.shape and np.all(fisher >= 0) and fisher.sum() > 0 and np.any(drift)
    assert half_sum == pytest.approx(0.5 * np.sum(fisher * drift ** 2))
