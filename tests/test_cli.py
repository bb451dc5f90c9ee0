"""main.py and joint.py end to end on mnist_5k, flags, result folders, kill and resume."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import joint
import main
import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--dataset', 'mnist_5k', '--iters', '3', '--sample_every', '2', '--ckpt_every', '2', '--log_every', '1']
FAST_TEST = ['--eval_samples', '64', '--reverse_samples', '64', '--reverse_epochs', '1', '--fid_samples', '64']


@pytest.fixture(scope='module')
def classifier_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('classifiers'))


def run_cli(entry, argv, capsys=None):
    """Runs a CLI in-process; returns (exit code, stderr)."""
    try:
        entry(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    return code, capsys.readouterr().err if capsys else ''


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if 'OBJECT_GRAPH' not in name}


@pytest.mark.slow
@pytest.mark.parametrize('mode_flags', [[], ['--RA'], ['--JTR']], ids=['sft', 'ra', 'jtr'])
def test_sequential_run_writes_config_grids_checkpoints_and_test_results(tmp_path, capsys, classifier_dir, mode_flags):
    result = tmp_path / 'run'
    code, err = run_cli(main.main, FAST + mode_flags + ['--num_tasks', '3', '--result_path', str(result)], capsys)
    assert code == 0, err
    config = json.loads((result / 'config.json').read_text())
    assert config['run']['mode'] == {'': 'sft', '--RA': 'ra', '--JTR': 'jtr'}[''.join(mode_flags)]
    assert config['args']['iters'] == 3 and config['data']['train_per_class'] == [400] * 10
    assert config['run'].get('RA_factor') == (1e-3 if mode_flags == ['--RA'] else None)
    assert 'tensorflow' in config['versions']
    assert np.load(result / 'fixed_noise.npy').shape == (100, 128)
    for task in (1, 2, 3):
        assert (result / 'checkpoints' / 'tasks' / f'task_{task}.index').exists()
        for class_id in range(task):
            assert (result / 'samples' / f'task_{task}_iter_3_class_{class_id}.png').exists()
        assert (result / 'samples' / f'task_{task}_iter_2_class_{task - 1}.png').exists()
        assert (result / 'samples' / f'real_class_{task - 1}.png').exists()
    assert not (result / 'samples' / 'task_1_iter_3_class_1.png').exists()
    assert os.listdir(result / 'logs')

    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result),
                                    '--classifier_dir', classifier_dir] + FAST_TEST, capsys)
    assert code == 0, err
    grids = sorted(os.listdir(result / 'test'))
    assert grids == sorted(f'task_{t}_class_{c}.png' for t in (1, 2, 3) for c in range(t))
    results = json.loads((result / 'results.json').read_text())
    assert [r['seen_classes'] for r in results['tasks']] == [[0], [0, 1], [0, 1, 2]]


@pytest.mark.slow
def test_joint_run_and_test(tmp_path, capsys, classifier_dir):
    result = tmp_path / 'joint'
    code, err = run_cli(joint.main, FAST + ['--classes', '4', '--result_path', str(result)], capsys)
    assert code == 0, err
    assert 'task 1/1 3/3 |' in err  # one task, though it is numbered 4 in file names
    config = json.loads((result / 'config.json').read_text())
    assert config['run']['mode'] == 'joint' and config['tasks'][0]['spec'] == dict(real_start=0, real_end=1600, fake_label_low=0, fake_label_high=4, earlier_classes=0)
    assert (result / 'checkpoints' / 'tasks' / 'task_4.index').exists()
    assert sorted(os.listdir(result / 'samples')) == sorted(
        [f'task_4_iter_{i}_class_{c}.png' for i in (2, 3) for c in range(4)]
        + [f'real_class_{c}.png' for c in range(4)])
    code, err = run_cli(joint.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result),
                                    '--classifier_dir', classifier_dir, '--export_samples', '5'] + FAST_TEST, capsys)
    assert code == 0, err
    exported = np.load(result / 'test' / 'samples_task_4.npz')
    assert exported['x'].shape == (20, 32, 32, 1) and exported['x'].dtype == np.uint8
    assert json.loads((result / 'results.json').read_text())['tasks'][0]['seen_classes'] == [0, 1, 2, 3]


def test_joint_default_iterations_are_ten_tasks_worth():
    config = runs.parse_request(runs.joint_parser(), ['--dataset', 'mnist'], joint=True).config
    assert config.iters == 40001 and config.result_path == os.path.join('results', 'mnist_joint')
    config = runs.parse_request(runs.sequential_parser(), ['--dataset', 'svhn', '--RA']).config
    assert (config.iters, config.method_options, config.data_dir) == (8001, {'RA_factor': 1e-2}, 'dataset/svhn')


@pytest.mark.parametrize('argv, message', [
    (['--dataset', 'cifar'], "invalid choice: 'cifar'"),
    (['--dataset', 'mnist_5k', '--RA', '--RA_factor', '0'], 'must be greater than 0'),
    (['--dataset', 'mnist_5k', '--RA', '--RA_factor=-1e-3'], 'must be greater than 0'),
    (['--dataset', 'mnist_5k', '--iters', '0'], 'must be at least 1'),
    (['--dataset', 'mnist_5k', '--RA', '--JTR'], 'choose one method'),
    (['--dataset', 'mnist_5k', '--RA_factor', '1e-3'], '--RA_factor needs --RA'),
    (['--dataset', 'mnist_5k', '--resume', '--overwrite'], 'exclude each other'),
])
def test_bad_flags_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    result = tmp_path / 'never'
    code, err = run_cli(main.main, argv + ['--result_path', str(result)], capsys)
    assert code == 2 and message in err
    assert not result.exists()


def test_missing_mnist_files_exit_2_with_offline_hint(tmp_path, capsys, monkeypatch):
    import idx_files

    def offline(url, timeout):
        raise OSError('network unreachable')
    monkeypatch.setattr(idx_files, '_fetch', offline)
    result = tmp_path / 'never'
    code, err = run_cli(main.main, ['--dataset', 'mnist', '--data_dir', str(tmp_path / 'empty'),
                                    '--result_path', str(result)], capsys)
    assert code == 2 and 'mnist_5k' in err and str(tmp_path / 'empty') in err
    assert not result.exists()


def test_occupied_result_path_is_refused_and_kept(tmp_path, capsys):
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'thesis.tex').write_text('precious')
    for extra in ([], ['--overwrite'], ['--resume']):
        code, err = run_cli(main.main, FAST + ['--result_path', str(foreign)] + extra, capsys)
        assert code == 2 and 'not empty' in err
    assert (foreign / 'thesis.tex').read_text() == 'precious'

    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps({'project': 'mergan-tf2', 'format': 1, 'run': {'dataset': 'mnist_5k', 'mode': 'ra', 'iters': 3}}))
    code, err = run_cli(main.main, FAST + ['--result_path', str(run)], capsys)
    assert code == 2 and '--resume' in err and '--overwrite' in err
    code, err = run_cli(main.main, FAST + ['--result_path', str(run), '--resume'], capsys)
    assert code == 2 and 'different run' in err and 'mode' in err
    assert json.loads((run / 'config.json').read_text())['run']['mode'] == 'ra'


def test_test_without_checkpoints_fails_clearly(tmp_path, capsys):
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(tmp_path / 'none')], capsys)
    assert code == 2 and 'holds no run' in err
    result = tmp_path / 'untrained'
    result.mkdir()
    config = {'args': dataclasses.asdict(runs.default_config('mnist_5k', result)), 'run': {},
              'tasks': [runs.task_record(runs.sequential_tasks([0, 400], 1)[0])]}
    (result / 'config.json').write_text(json.dumps(config))
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result)], capsys)
    assert code == 2 and 'no end-of-task checkpoint' in err


def start_training(result, method, extra=()):
    argv = [sys.executable, os.path.join(ROOT, 'main.py'), '--dataset', 'mnist_5k', method, '--num_tasks', '2',
            '--iters', '8', '--ckpt_every', '3', '--sample_every', '100', '--deterministic',
            '--result_path', str(result), *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process, result, name, timeout=300):
    """Until checkpoints/latest names checkpoint `name` (ckpt-N counts saves, task ends included)."""
    index = result / 'checkpoints' / 'latest' / 'checkpoint'
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if index.exists() and f'"{name}"' in index.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f'no {name} while running: {process.stderr.read()[-3000:]}')


@pytest.mark.parametrize('flags, onednn', [(['--deterministic'], False), ([], None)])
def test_deterministic_runs_load_tensorflow_without_onednn(flags, onednn):
    """oneDNN's kernels are outside op determinism, and TensorFlow reads the switch only as it loads."""
    probe = ("import os, sys; sys.argv = ['main.py', *sys.argv[1:]]; import main; "
             "from tensorflow.python.util import _pywrap_util_port as port; "
             "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled())")
    env = {name: value for name, value in os.environ.items() if name != 'TF_ENABLE_ONEDNN_OPTS'}
    done = subprocess.run([sys.executable, '-c', probe, *flags], cwd=ROOT, env=env, capture_output=True, text=True)
    setting, enabled = done.stdout.split()
    if onednn is False:
        assert (setting, enabled) == ('0', 'False')
    else:
        assert setting == 'None'  # TensorFlow's own default, whatever this CPU makes of it


# RA is killed at its first checkpoint; EWC and DGR in task 2, so that what they keep
# from task 1 (Fisher and anchor; solver, old generator and old solver) must come back.
# Their end-of-task work is shortened by their own flags.
@pytest.mark.slow
@pytest.mark.parametrize('method, kill_at', [('--RA', 'ckpt-1'), ('--EWC', 'ckpt-4'), ('--DGR', 'ckpt-4')])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, method, kill_at):
    """A real SIGKILL mid-task, then --resume, must match an uninterrupted run."""
    shortened = {'--RA': [], '--EWC': ['--EWC_fisher_batches', '5'], '--DGR': ['--DGR_solver_steps', '100']}[method]
    straight = start_training(tmp_path / 'straight', method, shortened)
    interrupted = start_training(tmp_path / 'interrupted', method, shortened)
    wait_for_checkpoint(interrupted, tmp_path / 'interrupted', kill_at)
    os.kill(interrupted.pid, signal.SIGKILL)
    interrupted.wait()
    assert not (tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_2.index').exists()
    resumed = start_training(tmp_path / 'interrupted', method, shortened + ['--resume'])
    _, resumed_err = resumed.communicate(timeout=600)
    _, straight_err = straight.communicate(timeout=600)
    assert resumed.returncode == 0, resumed_err
    assert straight.returncode == 0, straight_err
    assert 'resuming at task' in resumed_err
    expected = checkpoint_values(str(tmp_path / 'straight' / 'checkpoints' / 'tasks' / 'task_2'))
    actual = checkpoint_values(str(tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_2'))
    assert expected.keys() == actual.keys() and len(expected) > 20
    if method != '--RA':
        assert any(name.startswith('strategy_') for name in expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('method, options', [('--EWC', {'EWC_fisher_batches': 4}),
                                             ('--DGR', {'DGR_solver_steps': 20})])
def test_baselines_train_three_tasks_resume_and_test(tmp_path, capsys, classifier_dir, method, options):
    result = tmp_path / 'run'
    flags = [text for name, value in options.items() for text in (f'--{name}', str(value))]
    argv = FAST + [method, *flags, '--num_tasks', '3', '--result_path', str(result)]
    code, err = run_cli(main.main, argv, capsys)
    assert code == 0, err
    code, err = run_cli(main.main, argv + ['--resume'], capsys)
    assert code == 0 and 'finished: all 3 tasks are trained' in err and 'resuming' not in err
    code, err = run_cli(main.main, [arg for arg in argv if arg not in flags] + ['--resume'], capsys)
    assert code == 2 and f'{next(iter(options))}: saved' in err  # the default is a different run
    config = json.loads((result / 'config.json').read_text())
    assert config['run']['mode'] == method.lstrip('-').lower()
    assert options.items() <= config['args']['method_options'].items()
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result),
                                    '--classifier_dir', classifier_dir] + FAST_TEST, capsys)
    assert code == 0, err
    results = json.loads((result / 'results.json').read_text())
    assert results['mode'] == method.lstrip('-').lower()
    assert [r['seen_classes'] for r in results['tasks']] == [[0], [0, 1], [0, 1, 2]]
    if method == '--DGR':
        assert all('generated_class_share' in r for r in results['tasks'])


@pytest.mark.parametrize('argv, message', [
    (['--EWC', '--RA'], 'choose one method: --RA or --EWC'),
    (['--DGR', '--JTR'], 'choose one method: --JTR or --DGR'),
    (['--EWC', '--EWC_lambda', '0'], 'must be greater than 0'),
    (['--EWC', '--EWC_lambda=-1'], 'must be greater than 0'),
    (['--EWC', '--EWC_lambda', 'inf'], 'must be greater than 0 and finite'),
    (['--EWC_lambda', '1e9'], '--EWC_lambda needs --EWC'),
    (['--EWC', '--EWC_fisher_batches', '0'], 'must be at least 1'),
    (['--DGR', '--DGR_solver_steps', '2.5'], "invalid positive_int value: '2.5'"),
    (['--RA', '--DGR_solver_steps', '10'], '--DGR_solver_steps needs --DGR'),
])
def test_impossible_baseline_flags_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    result = tmp_path / 'never'
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', *argv, '--result_path', str(result)], capsys)
    assert code == 2 and message in err, err
    assert not result.exists()


@pytest.mark.slow
def test_lsun_resnet_pair_trains_two_iterations_on_a_tiny_folder(tmp_path, capsys, monkeypatch):
    """The 64x64 ResNet pair end to end. A batch of 8 instead of 64 keeps it
    affordable on a CPU; the code path is the same."""
    import training
    import sampling
    monkeypatch.setattr(training, 'BATCH_SIZE', 8)
    monkeypatch.setattr(sampling, 'BATCH_SIZE', 8)
    from PIL import Image
    from data import LSUN_CATEGORIES
    rng = np.random.default_rng(0)
    for category in LSUN_CATEGORIES:
        (tmp_path / 'lsun' / category).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / 'lsun' / category / f'{index}.png')
    result = tmp_path / 'run'
    code, err = run_cli(main.main, ['--dataset', 'lsun', '--data_dir', str(tmp_path / 'lsun'), '--iters', '2',
                                    '--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    config = json.loads((result / 'config.json').read_text())
    assert config['settings']['architecture'] == 'resnet64' and config['data']['train_per_class'] == [2, 2, 2, 2]
    values = checkpoint_values(str(result / 'checkpoints' / 'tasks' / 'task_1'))
    assert any('generator' in name for name in values) and any('critic' in name for name in values)
    from PIL import Image as PILImage
    grid = np.array(PILImage.open(result / 'samples' / 'task_1_iter_2_class_0.png'))
    assert grid.shape == (640, 640, 3)  # 10x10 RGB images of 64x64
