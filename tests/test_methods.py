"""The method contract and the registry."""
import json

import pytest
import tensorflow as tf

import run_folder
from helpers import make_trainer, spec_tensors, tasks_for
from training import dgr, ewc, method_base, methods


class MisnamedTerms(method_base.Method):
    generator_term_names = ('declared',)

    def generator_terms(self, models, inputs, replay):
        return {'returned': tf.constant(1.0)}


def test_terms_other_than_the_declared_ones_fail_before_the_first_task_trains(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path, method_object=MisnamedTerms())
    with pytest.raises(TypeError, match=r"MisnamedTerms.generator_terms returned \['returned'\].*'declared'"):
        trainer.fit(tasks_for(mnist_5k, 2), [])
    assert int(trainer.generator_optimizer.iterations) == 0


class InputProbe(method_base.Method):
    """Terms that read the step's draws: constants of the weights, so training is unchanged."""
    critic_term_names = ('real_label', 'fake_label', 'fakes_are_g_of_z')
    generator_term_names = ('no_real_batch', 'fake_label')

    def critic_terms(self, models, inputs, replay):
        remade = models.generator(inputs.z, inputs.fake_labels)
        return {'real_label': tf.reduce_mean(tf.cast(inputs.real_labels, tf.float32)),
                'fake_label': tf.reduce_mean(tf.cast(inputs.fake_labels, tf.float32)),
                'fakes_are_g_of_z': tf.reduce_max(tf.abs(tf.stop_gradient(remade - inputs.fake_images)))}

    def generator_terms(self, models, inputs, replay):
        return {'no_real_batch': tf.constant(float(inputs.real_images is None and inputs.real_labels is None)),
                'fake_label': tf.reduce_mean(tf.cast(inputs.fake_labels, tf.float32))}


def test_terms_get_the_step_draws_of_the_current_task(mnist_5k, tmp_path):
    trainer = make_trainer(mnist_5k, 'sft', tmp_path, method_object=InputProbe())
    metrics = trainer.train_step(spec_tensors(tasks_for(mnist_5k, 3)[2]))  # task 3: class 2
    assert float(metrics['critic/real_label']) == 2.0 and float(metrics['critic/fake_label']) == 2.0
    assert float(metrics['critic/fakes_are_g_of_z']) == 0.0  # the fakes the critic saw, made from z
    assert float(metrics['generator/no_real_batch']) == 1.0 and float(metrics['generator/fake_label']) == 2.0


def test_every_registered_method_has_a_flag_or_is_the_baseline():
    assert set(methods.METHODS) >= {'sft', 'ra', 'jtr', 'ewc', 'dgr', 'joint'}
    assert [cls.flag for cls in methods.selectable()][:4] == ['--RA', '--JTR', '--EWC', '--DGR']
    flags = [cls.flag for cls in methods.selectable()]
    labels = [cls.label for cls in methods.METHODS.values()]
    assert len(set(flags)) == len(flags) and len(set(labels)) == len(labels)  # each names one method
    assert [name for name, cls in methods.METHODS.items() if not cls.flag] == ['sft', 'joint']
    assert all(name == cls.name for name, cls in methods.METHODS.items())


def test_a_run_saved_before_an_option_existed_resumes_and_tests_with_the_value_it_used(tmp_path):
    assert methods.method_for('dgr', {}).solver_steps == dgr.SOLVER_STEPS == 500
    assert methods.method_for('ewc', {'EWC_lambda': 1e5}).fisher_batches == ewc.FISHER_BATCHES == 50
    (tmp_path / 'config.json').write_text(json.dumps({**run_folder.RUN_MARKER, 'run': {'mode': 'dgr'}}))
    identity = {'method': 'dgr', 'DGR_solver_steps': 500}
    older = dgr.DeepGenerativeReplay.older_run_options()
    claim = run_folder.claim_result_path(str(tmp_path), identity, True, False, older)
    assert claim == 'resume'
    with pytest.raises(run_folder.UsageError, match='DGR_solver_steps: saved 500, now 20'):
        run_folder.claim_result_path(str(tmp_path), {**identity, 'DGR_solver_steps': 20}, True, False, older)
    with pytest.raises(run_folder.UsageError, match='DGR_solver_steps: saved None, now 500'):
        run_folder.claim_result_path(str(tmp_path), identity, True, False)
