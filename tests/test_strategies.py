"""The strategy contract and the two baselines, EWC and DGR, on known inputs."""
import json
import types

import numpy as np
import pytest
import tensorflow as tf

import keras
import ops
import sampling
import strategies
import training
import utils
from test_training import make_trainer, spec_tensors, tasks_for, weights_of
from data import load_dataset


@pytest.fixture(scope='module')
def mnist_5k():
    return load_dataset('mnist_5k', None)


# --- the contract ---------------------------------------------------------------------------

class MisnamedTerms(strategies.Strategy):
    generator_term_names = ('declared',)

    def generator_terms(self, models, replay):
        return {'returned': tf.constant(1.0)}


def test_terms_other_than_the_declared_ones_fail_at_the_first_step(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path, strategy=MisnamedTerms())
    with pytest.raises(TypeError, match=r"MisnamedTerms.generator_terms returned \['returned'\].*'declared'"):
        trainer.train_step(spec_tensors(tasks_for(mnist_5k, 1)[0]))


def test_every_registered_method_has_a_flag_or_is_the_baseline():
    assert set(strategies.STRATEGIES) == {'sft', 'ra', 'jtr', 'ewc', 'dgr'}
    assert [cls.flag for cls in strategies.SELECTABLE] == ['--RA', '--JTR', '--EWC', '--DGR']


def test_a_run_saved_before_an_option_existed_resumes_and_tests_with_the_value_it_used(tmp_path):
    dgr = strategies.DeepGenerativeReplay
    assert strategies.strategy_for('dgr', {}).solver_steps == strategies.SOLVER_STEPS == 500
    assert strategies.strategy_for('ewc', {'EWC_lambda': 1e5}).fisher_batches == strategies.FISHER_BATCHES == 50
    (tmp_path / 'config.json').write_text(json.dumps({**utils.RUN_MARKER, 'run': {'mode': 'dgr'}}))
    identity = {'mode': 'dgr', 'DGR_solver_steps': 500}
    claim = utils.claim_result_path(str(tmp_path), identity, True, False, dgr.older_run_options())
    assert claim == 'resume'
    with pytest.raises(utils.UsageError, match='DGR_solver_steps: saved 500, now 20'):
        utils.claim_result_path(str(tmp_path), {**identity, 'DGR_solver_steps': 20}, True, False,
                                dgr.older_run_options())
    with pytest.raises(utils.UsageError, match='DGR_solver_steps: saved None, now 500'):
        utils.claim_result_path(str(tmp_path), identity, True, False)


# --- EWC ------------------------------------------------------------------------------------

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
        self.models = training.Models(TinyGenerator(self.z_dim, self.pixels),
                                      TinyCritic(self.pixels, self.classes), None)
        self.rng = tf.random.Generator.from_seed(7)

    def fake_inputs(self, spec):
        return self.rng.normal([self.batch, self.z_dim]), tf.fill([self.batch], spec.fake_label_low)

    spec_tensors = staticmethod(training.Trainer.spec_tensors)

    def compile(self, step):  # one device
        return tf.function(step)


def numpy_squared_gradient(kernel, a, b, z, label):
    """d/dW of -mean(x a) + mean cross-entropy(x B, label), x = z W, squared."""
    x = z @ kernel
    logits = x @ b
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    onehot = np.eye(b.shape[1])[np.full(len(z), label)]
    d_x = (-a[None, :] + (softmax - onehot) @ b.T) / len(z)
    return (z.T @ d_x) ** 2


def test_fisher_of_a_tiny_generator_matches_numpy():
    trainer = TinyTrainer()
    ewc = strategies.ElasticWeightConsolidation(EWC_lambda=1e9, EWC_fisher_batches=3)
    ewc.build(trainer)
    task = tasks_for_labels(label=1)
    replica = tf.random.Generator.from_seed(7)  # the same noise, drawn again
    kernel = trainer.models.generator.kernel.numpy().astype(np.float64)
    expected = np.mean([numpy_squared_gradient(kernel, trainer.models.critic.a, trainer.models.critic.b,
                                               replica.normal([4, 3]).numpy().astype(np.float64), 1)
                        for _ in range(3)], axis=0)
    ewc.end_task(trainer, task)
    assert expected.max() > 0
    np.testing.assert_allclose(ewc.fisher[0].numpy(), expected, rtol=1e-4)
    ewc.end_task(trainer, task)  # a second task adds its own Fisher
    assert np.all(ewc.fisher[0].numpy() > expected)


def tasks_for_labels(label):
    spec = training.TaskSpec(real_start=0, real_end=1, fake_label_low=label, fake_label_high=label + 1,
                             earlier_classes=label)
    return training.Task(number=label + 1, spec=spec, seen_classes=list(range(label + 1)), new_classes=[label])


def test_ewc_penalty_is_zero_in_task_1_and_at_the_anchor_and_its_formula_after(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'ewc', tmp_path)
    task1, task2 = tasks_for(mnist_5k, 2)
    trainer.begin_task(task1)
    assert float(trainer.train_step(spec_tensors(task1))['generator/ewc_penalty']) == 0.0
    trainer.end_task(task1)
    fisher = [f.numpy().copy() for f in trainer.strategy.fisher]
    assert sum(float(f.sum()) for f in fisher) > 0
    trainer.begin_task(task2)
    anchor = weights_of(trainer.models.generator)
    # theta = theta*: computed before the first update of the task, the penalty is exactly 0
    assert float(trainer.train_step(spec_tensors(task2))['generator/ewc_penalty']) == 0.0
    theta = weights_of(trainer.models.generator)
    expected = 0.5 * 1e9 * sum(float(np.sum(f.astype(np.float64) * (t - a) ** 2))
                               for f, t, a in zip(fisher, theta, anchor))
    assert expected > 0
    penalty = strategies.ElasticWeightConsolidation(EWC_lambda=1e9, EWC_fisher_batches=1)
    penalty.fisher = trainer.strategy.fisher
    value = penalty.generator_terms(trainer.models, replay=None)['ewc_penalty']
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


# --- DGR ------------------------------------------------------------------------------------

def test_dgr_generator_is_unconditional_and_has_no_auxiliary_terms(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path)
    z = tf.random.stateless_normal([64, 128], seed=[1, 1])
    same_z_other_labels = [trainer.models.generator(z, tf.fill([64], c)).numpy() for c in (0, 7)]
    np.testing.assert_array_equal(*same_z_other_labels)
    metrics = trainer.train_step(spec_tensors(tasks_for(mnist_5k, 1)[0]))
    assert float(metrics['critic/ac_loss']) == 0.0 and float(metrics['generator/ac_loss']) == 0.0
    assert float(metrics['critic/dgr_replay_critic']) == 0.0  # nothing to replay in task 1


def test_dgr_replays_reach_the_critic_real_side_from_task_2(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path)
    models, dgr = trainer.models, trainer.strategy
    models.old_generator.weights[0].assign(models.generator.weights[0] + 0.05)
    replay = trainer.replay_batch(tf.constant(2))
    assert replay.groups is None and replay.z.shape == (64, 128)  # one full unconditional batch
    dgr.rng = tf.random.Generator.from_seed(11)
    alpha = ops.sample_interpolation_weights(tf.random.Generator.from_seed(11), 64)
    replays, fakes = models.old_generator(replay.z, replay.labels), models.generator(replay.z, replay.labels)
    penalty = ops.gradient_penalty(lambda x: models.critic(x)[0], replays, fakes, alpha)
    expected = (models.critic(fakes)[0].numpy().mean() - models.critic(replays)[0].numpy().mean()
                + 10.0 * float(penalty))
    value = dgr.critic_terms(models, replay)['dgr_replay_critic']
    np.testing.assert_allclose(float(value), expected, rtol=1e-4, atol=1e-5)
    metrics = trainer.train_step(spec_tensors(tasks_for(mnist_5k, 2)[1]))
    assert float(metrics['critic/dgr_replay_critic']) != 0.0


def test_dgr_solver_learns_the_real_class_then_keeps_replayed_ones(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'dgr', tmp_path, strategy=strategies.DeepGenerativeReplay(DGR_solver_steps=20))
    task1, task2 = tasks_for(mnist_5k, 2)
    trainer.begin_task(task1)
    trainer.end_task(task1)
    real_0, _ = trainer.real_batch(spec_tensors(task1))
    assert set(trainer.strategy.label(real_0).numpy().tolist()) == {0}
    trainer.begin_task(task2)
    for old, new in zip(trainer.strategy.old_solver.weights, trainer.strategy.solver.weights):
        np.testing.assert_array_equal(old.numpy(), new.numpy())  # the previous solver labels replays
    old_solver_before = weights_of(trainer.strategy.old_solver)
    trainer.end_task(task2)
    for before, after in zip(old_solver_before, weights_of(trainer.strategy.old_solver)):
        np.testing.assert_array_equal(before, after)


class StripeGenerator:
    """Unconditional stand-in: image value = first noise coordinate; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, z, labels):
        self.calls += 1
        z = np.asarray(z)
        return tf.constant(np.broadcast_to(np.tanh(z[:, :1, None, None]), (len(z), 2, 2, 1)), tf.float32)


def sign_solver(images):
    """Labels 1 where the image is bright, else 0; never 2."""
    return tf.cast(tf.reduce_mean(images, axis=[1, 2, 3]) > 0, tf.int32)


def test_solver_labels_drive_the_dgr_sampler_and_a_class_never_made_comes_back_empty():
    generator = StripeGenerator()
    sampler = sampling.SolverSampler(generator, sign_solver, classes=[0, 1, 2], seed=0)
    ones, zeros, twos = sampler(1, 30), sampler(0, 30), sampler(2, 30)
    assert ones.shape == (30, 2, 2, 1) and np.all(ones > 127) and np.all(zeros <= 127)
    assert twos.shape == (0, 2, 2, 1)
    # class 2 never appears: drawing stops at the cap, 5x the 90 images asked for
    assert generator.calls == -(-sampling.SAMPLER_DRAW_FACTOR * 90 // 64)
    assert set(sampler.class_shares) == {0, 1} and abs(sum(sampler.class_shares.values()) - 1) < 1e-9


def test_dgr_grids_draw_until_a_rare_class_fills_its_grid_and_leave_out_a_class_never_made():
    """Class 1 is rare (first noise coordinate above 1.5: about 7% of images), class 2 never made."""
    dgr = strategies.DeepGenerativeReplay(DGR_solver_steps=1)
    dgr.label = lambda images: tf.cast(tf.reduce_mean(images, axis=[1, 2, 3]) > np.tanh(1.5), tf.int32)
    trainer = types.SimpleNamespace(generate=StripeGenerator(), config=types.SimpleNamespace(seed=0))
    task = types.SimpleNamespace(seen_classes=[0, 1, 2])
    fixed_noise = np.random.default_rng(1).standard_normal((100, 4)).astype(np.float32)
    in_fixed_noise = int(np.sum(fixed_noise[:, 0] > 1.5))
    grids = dgr.grid_images(trainer, task, fixed_noise)
    assert set(grids) == {0, 1}
    assert grids[0].shape == (100, 2, 2, 1) and np.all(grids[0] <= np.tanh(1.5) + 1e-2)
    # the fixed noise alone held a few images of class 1; drawing more fills its grid
    assert in_fixed_noise < 10 and grids[1].shape == (100, 2, 2, 1)
    assert np.all(grids[1] > np.tanh(1.5) - 1e-2) and grids[1].max() <= 1.0
