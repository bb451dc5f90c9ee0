"""--distribute: the mirrored step computes what the single-device step computes, and
bad setups are usage errors.

TensorFlow's logical CPU devices must be set up before its runtime starts, so the
comparison runs in a child process: this file run as a script (see the bottom).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

# Run as a script, this file has only tests/ on its path until __main__ adds the root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# EWC's and DGR's end-of-task work (Fisher batches, solver steps) shortened to 2.
SHORTER = {'ewc': ['--EWC_fisher_batches', '2'], 'dgr': ['--DGR_solver_steps', '2']}
STEPS_PER_TASK = 2


def registered_methods():
    """Every method of the registry: a new one is checked under tf.distribute too."""
    from training import methods
    return tuple(methods.METHODS)


CONTROL = 'ra with per-replica statistics'


def compare_in_child(modes, per_replica_statistics=False):
    """{mode: how the mirrored run differs from the single-device run (see differences)}, and
    with per_replica_statistics also CONTROL: RA mirrored with that mistake against RA on one
    device."""
    argv = [sys.executable, os.path.abspath(__file__), *modes]
    if per_replica_statistics:
        argv.append('--per_replica_statistics')
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_training(found):
    """Float differences only: the first iteration's losses agree to float precision, later
    ones (after Adam has amplified them) nearly; weights too, as a share of what two steps
    changed (EWC's measured 5e-6); random state, iterations and the replicas' copies exactly."""
    assert found['replicas'] == 2 and found['copies'] > 0 and not found['unequal_copies']
    assert not found['unequal_counters'] and found['counters'] >= 3
    assert found['first_metrics'] < 1e-5
    assert found['metrics'] < 5e-4
    assert found['weights'] < 2e-5


@pytest.mark.slow
def test_mirrored_step_on_two_devices_matches_one_device_in_every_method_and_catches_per_replica_statistics():
    """Every method of the registry, mirrored on two devices against one device; then the
    control: batch norm on each replica's half of the batch is what the comparison must
    catch (the other terms are per sample or summed). One child does both, so that RA's
    one-device run serves as the control's reference too."""
    modes = registered_methods()
    found = compare_in_child(modes, per_replica_statistics=True)
    failed = {}
    for mode in modes:
        try:
            assert_same_training(found[mode])
        except AssertionError:
            failed[mode] = found[mode]
    assert not failed
    control = found[CONTROL]
    # The mistake is far past the bound at the first step (measured 4e-3 against 1e-5), and
    # moves the weights (2e-6 of what training changed, against 3e-9 for a right step).
    assert control['first_metrics'] > 1e-4 and control['weights'] > 1e-7, control
    with pytest.raises(AssertionError):
        assert_same_training(control)


def test_repeat_runs_the_update_count_times():
    import tensorflow as tf

    from training import distribution
    counter, traces = tf.Variable(0), []

    def update():
        traces.append(1)
        counter.assign_add(1)
        return {'seen': counter.read_value()}

    for repeat, traced in ((distribution.SingleDevice().repeat, 1), (distribution.written_out, 5)):
        counter.assign(0)
        traces.clear()
        outputs = tf.function(lambda: repeat(5, update), autograph=False)()
        assert (int(counter), int(outputs['seen']), len(traces)) == (5, 5, traced)


def test_replica_helpers_change_nothing_on_one_device():
    import tensorflow as tf

    import ops
    x = tf.reshape(tf.range(24, dtype=tf.float32), [6, 2, 2, 1])
    assert ops.replica_count() == 1
    assert ops.replica_part(x) is x and ops.replica_share(x) is x and ops.replica_sum([x])[0] is x
    assert float(ops.batch_mean(tf.constant([1.0, 2.0, 6.0]))) == 3.0


def test_replica_helpers_on_two_replicas():
    """Numbers pinned in a child with two logical CPU devices: each replica's part of a
    batch of 3 groups of 21 (10 and 11 of each group), the global mean of unequal parts, and
    statistics over the global batch and over each global group."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), '--helpers'], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found['parts'] == [[*range(0, 10), *range(21, 31), *range(42, 52)],
                              [*range(10, 21), *range(31, 42), *range(52, 63)]]
    assert found['plain_parts'] == [list(range(0, 3)), list(range(3, 7))]
    assert found['batch_mean'] == pytest.approx(3.0) and found['shares'] == pytest.approx([9 / 7, 12 / 7])
    assert found['share'] == [0.5, 0.5] and found['replicas'] == [2, 2]
    assert found['standardize_gap'] < 1e-5 and found['group_gap'] < 1e-5


def helpers_child():
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import ops
    from training import distribution
    strategy = distribution.make_distribution('mirrored', 2).strategy
    x = tf.random.stateless_normal([63, 4, 4, 3], seed=[5, 6]) * 3.0 + 1.0

    def replica():
        values = ops.replica_part(tf.constant([1.0, 2.0, 6.0, 3.0, 2.0, 4.0, 3.0]))  # 3 and 4 values
        return {'parts': ops.replica_part(tf.range(63), groups=3), 'plain_parts': ops.replica_part(tf.range(7)),
                'share': ops.replica_share(tf.constant(1.0)), 'replicas': tf.constant(ops.replica_count()),
                'batch_mean': ops.batch_mean(values), 'standardized': ops.batch_standardize(ops.replica_part(x)),
                'grouped': ops.batch_standardize(ops.replica_part(x, groups=3), groups=3)}

    out = strategy.run(tf.function(replica))
    local = {name: [value.numpy() for value in strategy.experimental_local_results(value)]
             for name, value in out.items()}
    standardized = np.concatenate(local['standardized'])  # the replicas' parts in order
    by_group = np.concatenate([part.reshape(3, -1, 4, 4, 3) for part in local['grouped']], axis=1)
    print(json.dumps({
        'parts': [part.tolist() for part in local['parts']],
        'plain_parts': [part.tolist() for part in local['plain_parts']],
        'share': [float(v) for v in local['share']], 'replicas': [int(v) for v in local['replicas']],
        'shares': [float(v) for v in local['batch_mean']], 'batch_mean': float(sum(local['batch_mean'])),
        'standardize_gap': float(np.max(np.abs(standardized - ops.batch_standardize(x).numpy()))),
        'group_gap': float(np.max(np.abs(by_group.reshape(63, 4, 4, 3)
                                         - ops.batch_standardize(x, groups=3).numpy())))}))


# --- bad setups ----------------------------------------------------------------------------------



@pytest.mark.parametrize('flags, tf_config, message', [
    (['--distribute', 'multi_worker'], None, 'needs the TF_CONFIG environment variable'),
    (['--distribute', 'multi_worker'], '{"cluster": {"worker": ["localhost:1"]', 'TF_CONFIG is not valid JSON'),
    (['--distribute', 'multi_worker'], '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", '
                                       '"index": 3}}', 'task index 3'),
    (['--distribute', 'mirrored', '--devices', '0'], None, 'must be at least 1'),
    (['--devices', '2'], None, '--devices needs --distribute mirrored'),
], ids=['no-tf-config', 'tf-config-not-json', 'tf-config-bad-index', 'devices-0', 'devices-without-mirrored'])
def test_bad_distribution_setups_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, flags, tf_config, message):
    import main
    monkeypatch.delenv('TF_CONFIG', raising=False)
    if tf_config is not None:
        monkeypatch.setenv('TF_CONFIG', tf_config)
    result = tmp_path / 'never'
    with pytest.raises(SystemExit) as stop:
        main.main(['--dataset', 'mnist_5k', '--iters', '1', '--result_path', str(result), *flags])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error, error
    assert not result.exists()


def test_distribution_is_not_part_of_the_run_identity(tmp_path):
    import run_config
    from data import load_dataset
    data = load_dataset('mnist_5k', None)
    one = run_config.default_config('mnist_5k', tmp_path)
    two = run_config.default_config('mnist_5k', tmp_path, flags=['--distribute', 'mirrored', '--devices', '2'])
    assert (two.distribute, two.devices) == ('mirrored', 2) and (one.distribute, one.devices) == ('none', None)
    assert one.identity(data) == two.identity(data)


@pytest.mark.slow
def test_a_run_started_on_one_device_resumes_mirrored_and_is_tested_on_one(tmp_path):
    """--resume may change the distribution: the weights are the same."""
    from helpers import SMALL_BATCH_MAIN, wait_for_checkpoint  # here: this file also runs as a child script
    result = tmp_path / 'run'
    argv = [sys.executable, SMALL_BATCH_MAIN, '--dataset', 'mnist_5k', '--RA', '--num_tasks', '2',
            '--iters', '4', '--ckpt_every', '2', '--sample_every', '100', '--result_path', str(result)]
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(first, result, 'ckpt-1', timeout=600)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert json.loads((result / 'config.json').read_text())['distribution']['distribute'] == 'none'
    resumed = subprocess.run(argv + ['--resume', '--distribute', 'mirrored', '--devices', '2'], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0 and 'resuming at task 1, iteration 2' in resumed.stderr, resumed.stderr[-3000:]
    config = json.loads((result / 'config.json').read_text())
    assert config['distribution'] == {'distribute': 'mirrored', 'replicas': 2, 'workers': 1}
    assert config['args']['distribute'] == 'none'  # the flags the run was started with
    values = checkpoint_file_values(str(result / 'checkpoints' / 'tasks' / 'task_2'))
    assert all(np.all(np.isfinite(value)) for value in values.values() if value.dtype.kind == 'f')
    assert (result / 'samples' / 'task_2_iter_4_class_1.png').exists() and os.listdir(result / 'logs')
    from helpers import mean_pixel_classifier
    stand_in = str(tmp_path / 'mean_pixel.keras')  # evaluation's own classifier is not what is tested here
    mean_pixel_classifier(10).model.save(stand_in)
    tested = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), '--dataset', 'mnist_5k', '--test',
                             '--result_path', str(result), '--eval_classifier', stand_in, '--eval_samples', '64',
                             '--reverse_samples', '0', '--fid_samples', '0'],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert len(json.loads((result / 'results.json').read_text())['tasks']) == 2


# --- multi_worker: two local worker processes ------------------------------------------------------

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(('localhost', 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_job(result, extra=()):
    """The chief (worker 0) and worker 1 of a two-process cluster on localhost (batch 16)."""
    from helpers import SMALL_BATCH_MAIN
    workers = [f'localhost:{port}' for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({'cluster': {'worker': workers},
                                                     'task': {'type': 'worker', 'index': index}}))
        argv = [sys.executable, SMALL_BATCH_MAIN, '--dataset', 'mnist_5k', '--RA', '--num_tasks', '2',
                '--iters', '6', '--ckpt_every', '3', '--sample_every', '100', '--distribute', 'multi_worker',
                '--result_path', str(result), *extra]
        processes.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    return processes


def finish(processes):
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def checkpoint_file_values(prefix):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if 'OBJECT_GRAPH' not in name}


@pytest.mark.slow
def test_multi_worker_run_killed_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    """SIGKILL of the non-chief worker mid-task, then of the chief, the job started
    again with --resume: it ends with the uninterrupted job's weights, on both workers."""
    straight = finish(start_job(tmp_path / 'straight'))
    chief, worker = start_job(tmp_path / 'interrupted')
    from helpers import wait_for_checkpoint  # here: this file also runs as a child script
    wait_for_checkpoint(chief, tmp_path / 'interrupted', 'ckpt-1', timeout=600)
    # The chief would wait for its lost peer until the collective times out: stop it too.
    for process in (worker, chief):
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert not (tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_1.index').exists()
    resumed = finish(start_job(tmp_path / 'interrupted', ['--resume']))
    fingerprints = [out.strip().splitlines()[-1].split('weights ')[-1].strip(')') for out in straight + resumed]
    assert len(set(fingerprints)) == 1, (straight, resumed)
    config = json.loads((tmp_path / 'interrupted' / 'config.json').read_text())
    assert config['distribution'] == {'distribute': 'multi_worker', 'replicas': 2, 'workers': 2}
    expected = checkpoint_file_values(str(tmp_path / 'straight' / 'checkpoints' / 'tasks' / 'task_2'))
    actual = checkpoint_file_values(str(tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_2'))
    assert expected.keys() == actual.keys() and len(expected) > 20
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, err_msg=name)


# --- the child: both trainers in one process with two logical CPU devices ---------------------------

def child(modes, per_replica_statistics):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import ops
    from data import load_dataset
    from training import trainer as training
    # Adam with the paper's epsilon (1e-8) makes every gradient element a step of about the
    # learning rate, so float noise in gradients that are 0 in exact arithmetic (biases before
    # batch norm) becomes whole steps. With epsilon 1 a step is proportional to the gradient,
    # and weights differ only as much as the gradients do.
    training.make_adam = lambda: keras.optimizers.Adam(training.LEARNING_RATE, beta_1=training.ADAM_BETAS[0],
                                                       beta_2=training.ADAM_BETAS[1], epsilon=1.0)
    # One critic update a step, not five: each replaying trainer traces and optimises a graph
    # with every update written out under tf.distribute, the most of this test's time.
    training.CRITIC_STEPS = 1
    data, scratch = load_dataset('mnist_5k', None), tempfile.mkdtemp()
    found = {}
    for mode in modes:
        one = train_mode(mode, 'none', data, scratch)
        found[mode] = differences(one, train_mode(mode, 'mirrored', data, scratch))
        if mode == 'ra' and per_replica_statistics:
            right, ops.cross_replica_standardize = ops.cross_replica_standardize, per_replica_standardize
            found[CONTROL] = differences(one, train_mode(mode, 'mirrored', data, scratch))
            ops.cross_replica_standardize = right
    print(json.dumps(found))


def train_mode(mode, distribute, data, scratch):
    """Two tasks of `mode` from the same seed: (initial values, metrics, trained values, replicas)."""
    import run_config
    import runs
    from helpers import method_flags
    flags = (method_flags(mode) + SHORTER.get(mode, []) + ['--distribute', distribute]
             + (['--devices', '2'] if distribute != 'none' else []))
    config = run_config.default_config('mnist_5k', scratch, joint=mode == 'joint', flags=flags, iters=STEPS_PER_TASK,
                                       classes=3 if mode == 'joint' else None)
    trainer = runs.make_trainer(config, data)
    initial = trainer_values(trainer)
    metrics = train_two_tasks(trainer, runs.tasks_of(config, data)[:2])
    return initial, metrics, trainer_values(trainer), trainer.distribution.replicas


def differences(trained_one, trained_two):
    """How the mirrored run (two) differs from the single-device run (one)."""
    import numpy as np
    (initial, metrics_one, one, _), (initial_two, metrics_two, two, replicas) = trained_one, trained_two
    copies = [k for k in two if '/replica_' in k]
    unequal_copies = [k for k in copies if not np.array_equal(two[k], two[k.rsplit('/', 1)[0]])]
    two = {k: value for k, value in two.items() if '/replica_' not in k}
    assert one.keys() == two.keys() and all(np.array_equal(initial[k], initial_two[k]) for k in initial)
    step_gaps = [max(abs(a - b) / max(abs(a), 1.0) for a, b in zip(step_one, step_two))
                 for step_one, step_two in zip(metrics_one, metrics_two)]
    # Weights, Fisher, solver: what differs as a share of what training changed. Adam's
    # moments are left out: those of biases before batch norm are float noise.
    moved = [k for k, value in one.items() if value.dtype.kind == 'f' and 'optimizer' not in k
             and 'rng' not in k and np.any(value != initial[k])]
    difference = np.sqrt(sum(np.sum(np.square(two[k] - one[k]), dtype=np.float64) for k in moved))
    change = np.sqrt(sum(np.sum(np.square(one[k] - initial[k]), dtype=np.float64) for k in moved))
    counters = [k for k, value in one.items() if value.dtype.kind in 'iu']  # random state, iterations
    return {'first_metrics': step_gaps[0], 'metrics': max(step_gaps), 'weights': float(difference / change),
            'moved': len(moved), 'unequal_counters': [k for k in counters if not np.array_equal(one[k], two[k])],
            'counters': len(counters), 'replicas': replicas, 'copies': len(copies), 'unequal_copies': unequal_copies}


def train_two_tasks(trainer, tasks):
    """Every metric of every step of the last task, which replays the earlier one. The
    first task takes no step: its step is SFT's, which the second task of SFT compares, and
    tracing it once more per method would double the cost of this test. (Joint training has
    one task.)"""
    *earlier, second = tasks
    for first in earlier:
        trainer.begin_task(first)
        trainer.end_task(first)
    trainer.begin_task(second)
    metrics = []
    for _ in range(STEPS_PER_TASK):
        values = trainer.train_step(trainer.spec_tensors(second))
        metrics.append([float(values[name]) for name in sorted(values)])
    trainer.end_task(second)
    return metrics


def trainer_values(trainer):
    """{name: value} of the networks, optimisers, random state and the method's state; each
    replica's copy under tf.distribute (name/replica_N), which must all be equal."""
    import keras
    import numpy as np
    import tensorflow as tf

    def variables(state):  # a network, an optimiser, a variable or a list of them
        if isinstance(state, (list, tuple)):
            return [v for item in state for v in variables(item)]
        return list(getattr(state, 'weights', None) or getattr(state, 'variables', None) or [state])

    method_state = {**trainer.run_generator.sampling_networks, **trainer.method_state}
    groups = {'generator': trainer.models.generator.weights, 'critic': trainer.models.critic.weights,
              'old_generator': trainer.models.old_generator.weights,
              'generator_optimizer': trainer.generator_optimizer.variables,
              'critic_optimizer': trainer.critic_optimizer.variables, 'rng': [trainer.rng.state],
              **{name: variables(state) for name, state in method_state.items()}}
    assert all(isinstance(v, (tf.Variable, keras.Variable)) for group in groups.values() for v in group)
    values = {}
    for group, variables in groups.items():
        for index, variable in enumerate(variables):
            if isinstance(variable, keras.Variable):
                variable = variable.value  # its tf.Variable (mirrored under tf.distribute)
            copies = getattr(variable, 'values', None) or (variable,)
            for replica, copy in enumerate(copies):
                values[f'{group}/{index}' + (f'/replica_{replica}' if replica else '')] = np.array(copy.numpy())
    return values


def per_replica_standardize(x, groups=None, epsilon=1e-5):
    """The mistake the comparison must catch: statistics of this replica's part only."""
    import tensorflow as tf

    import ops
    shape = tf.shape(x)
    grouped = tf.reshape(x, [1 if groups is None else groups, -1, *x.shape[1:]])
    return tf.reshape(ops.standardize(grouped, axes=[1, 2, 3], epsilon=epsilon), shape)


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    arguments = sys.argv[1:]
    if '--helpers' in arguments:
        sys.exit(helpers_child())
    child([a for a in arguments if not a.startswith('--')], '--per_replica_statistics' in arguments)
