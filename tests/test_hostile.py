"""The project's list of hostile inputs: damaged files, wrong files and contradictory flags that
must end in a clear message or a recovery, never a traceback. Add new cases here, one test each."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import main
import run_folder
import runs
from evaluation import classifier, evaluate, metrics
from helpers import (ROOT, checkpoint_values, constant_image_set, constant_images, evaluation_args,
                     mean_pixel_classifier, run_cli)


def quick_training(x, y, num_classes, epochs, seed, batch_size=64):
    """An untrained classifier: these tests are about files, not accuracy."""
    return classifier.build_classifier(x.shape[1:], num_classes, seed)


# ---------------------------------------------------------------- cached evaluation classifier

def flip_bytes(raw, start, count=8):
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    return raw


DAMAGE = {
    'bit flips in the weights': lambda raw: flip_bytes(raw, len(raw) // 2),
    'bit flips in the zip directory': lambda raw: flip_bytes(raw, len(raw) - 30),
    'cut short': lambda raw: raw[:len(raw) // 3],
    'empty': lambda raw: b'',
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_cached_classifier_is_retrained(damage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(classifier, 'train_classifier', quick_training)
    data = constant_image_set()
    folder = tmp_path / 'classifiers'
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'trained'
    path = folder / 'standin_classifier.keras'
    path.write_bytes(bytes(DAMAGE[damage](bytearray(path.read_bytes()))))
    capsys.readouterr()
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'trained'
    assert f'cannot read cached classifier {path}' in capsys.readouterr().out
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'cached'


# ---------------------------------------------------------------- --eval_classifier

def write_not_a_model(kind, folder):
    path = folder / {'text': 'notes.txt', 'random bytes': 'mine.keras', 'empty': 'empty.keras',
                     'weights only': 'mine.weights.h5'}[kind]
    if kind == 'text':
        path.write_text('class scores, trust me\n')
    elif kind == 'random bytes':
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == 'empty':
        path.write_bytes(b'')
    else:
        mean_pixel_classifier(3).model.save_weights(path)
    return path


@pytest.mark.parametrize('kind', ['text', 'random bytes', 'empty', 'weights only'])
def test_eval_classifier_that_is_not_a_keras_model(kind, tmp_path):
    path = write_not_a_model(kind, tmp_path)
    with pytest.raises(classifier.EvaluationError, match=f'^{re.escape(str(path))} is not a Keras model'):
        classifier.load_or_train_classifier(constant_image_set(), str(tmp_path / 'cache'), user_model_path=str(path))
    message = evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path)))
    assert message.startswith(f'--eval_classifier: {path} is not a Keras model')


def test_eval_classifier_for_other_images_names_the_file(tmp_path):
    inputs = classifier.keras.Input((28, 28, 1))
    model = classifier.keras.Model(inputs, classifier.layers.Dense(3)(classifier.layers.Flatten()(inputs)))
    path = tmp_path / 'mnist_sized.keras'
    model.save(path)
    assert evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path))) is None  # a Keras model
    with pytest.raises(classifier.EvaluationError,
                       match=re.escape(f'{path} takes inputs of shape (28, 28, 1), standin images are (8, 8, 1)')):
        classifier.load_or_train_classifier(constant_image_set(), str(tmp_path), user_model_path=str(path))


def test_check_evaluation_files_passes_a_keras_classifier_and_no_files(tmp_path):
    path = tmp_path / 'mine.keras'
    mean_pixel_classifier(3).model.save(path)
    assert evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path))) is None
    assert evaluate.check_evaluation_files(evaluation_args()) is None


# ---------------------------------------------------------------- --inception_weights

def test_inception_weights_that_are_not_weights_are_caught_early(tmp_path):
    junk = tmp_path / 'inception.h5'
    junk.write_bytes(b'not weights at all' * 100)
    other_network = tmp_path / 'classifier.weights.h5'
    classifier.build_classifier((8, 8, 1), 3).save_weights(other_network)
    for path in (junk, other_network):
        message = evaluate.check_evaluation_files(evaluation_args(inception_weights=str(path)))
        assert message.startswith(f'--inception_weights: {path} is not InceptionV3 no-top weights')


def test_inception_weights_check_builds_the_network_with_the_file():
    built_with = []
    evaluation = evaluation_args(inception_weights='inception.h5')
    assert evaluate.check_evaluation_files(evaluation, network_builder=built_with.append) is None
    assert built_with == ['inception.h5']


def test_inception_weights_without_fid_is_a_usage_error(tmp_path):
    weights = tmp_path / 'inception.h5'
    weights.write_bytes(b'x')
    flags = dict(inception_weights=str(weights), classifier_dir=str(tmp_path))
    message = evaluate.validate_evaluation_flags(evaluation_args(fid_samples=0, **flags))
    assert '--inception_weights' in message and '--fid_samples 0' in message
    assert evaluate.validate_evaluation_flags(evaluation_args(fid_samples=2, **flags)) is None


# ---------------------------------------------------------------- samplers

BROKEN_SAMPLERS = {
    'more than asked': lambda c, n: constant_images(c, n + 1),
    'floats': lambda c, n: constant_images(c, n) / 255.0,
    'no channel axis': lambda c, n: constant_images(c, n)[..., 0],
    'None': lambda c, n: None,
}


@pytest.mark.parametrize('sampler', sorted(BROKEN_SAMPLERS))
def test_sampler_with_broken_output_is_refused(sampler):
    with pytest.raises(ValueError, match=r'must return uint8 \(n, H, W, C\) with n <= 10'):
        metrics.generated_accuracy(BROKEN_SAMPLERS[sampler], [0], mean_pixel_classifier(3), 10)


# ---------------------------------------------------------------- the command line and the run folder

TINY = ['--dataset', 'mnist_5k', '--iters', '5', '--num_tasks', '2', '--sample_every', '100', '--ckpt_every', '2']


def test_overwrite_never_deletes_a_folder_that_is_not_a_run_of_ours(tmp_path, capsys):
    folder = tmp_path / 'X'
    (folder / 'src').mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps({'name': 'app'}))
    (folder / 'src' / 'app.py').write_text('hi')
    for extra in (['--overwrite'], ['--resume'], []):
        code, err = run_cli(main.main, TINY + ['--result_path', str(folder)] + extra, capsys)
        assert code == 2 and 'not written by this project' in err and '--overwrite' not in err
    assert (folder / 'src' / 'app.py').read_text() == 'hi'
    assert json.loads((folder / 'config.json').read_text()) == {'name': 'app'}


@pytest.mark.parametrize('argv, message', [
    (['--seed', '-1'], '--seed: must be between 0 and 2**32 - 1'),
    (['--RA', '--RA_factor', 'inf'], 'must be greater than 0 and finite'),
    (['--RA', '--RA_factor', 'nan'], 'must be greater than 0 and finite'),
    (['--EWC', '--EWC_lambda=-inf'], 'must be greater than 0 and finite'),
    (['--RA', '--RA_factor', 'lots'], "not a number: 'lots'"),
    (['--EWC', '--EWC_fisher_decay', 'half'], "not a number: 'half'"),
])
def test_impossible_numbers_are_usage_errors_and_leave_nothing(tmp_path, capsys, argv, message):
    result = tmp_path / 'never'
    code, err = run_cli(main.main, TINY + argv + ['--result_path', str(result)], capsys)
    assert code == 2 and message in err, err
    assert not result.exists()


def test_result_path_that_is_a_file_or_empty(tmp_path, capsys):
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('keep')
    code, err = run_cli(main.main, TINY + ['--result_path', str(a_file)], capsys)
    assert code == 2 and 'is a file, not a folder' in err and a_file.read_text() == 'keep'
    code, err = run_cli(main.main, TINY + ['--result_path', ''], capsys)
    assert code == 2 and '--result_path must not be empty' in err


@pytest.mark.parametrize('content', ['{"args": {', '{}', '[1, 2]'], ids=['corrupt', 'empty', 'a list'])
def test_test_with_a_damaged_config_is_a_message(tmp_path, capsys, content):
    (tmp_path / 'config.json').write_text(content)
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(tmp_path)], capsys)
    assert code == 2 and 'config.json' in err and 'Traceback' not in err


def test_a_non_finite_loss_stops_before_anything_is_written_from_it(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--RA', '--RA_factor', '1e30', '--result_path', str(result)], capsys)
    assert code == 1
    assert re.search(r'(\w+/\w+ is (nan|inf)|weights became non-finite).* task 2, iteration \d', err), err
    assert '--resume' in err
    assert not (result / 'checkpoints' / 'tasks' / 'task_2.index').exists()
    latest = tf.train.latest_checkpoint(str(result / 'checkpoints' / 'latest'))
    for name, value in checkpoint_values(latest).items():
        if value.dtype.kind == 'f':
            assert np.all(np.isfinite(value)), name
    assert not any('task_2_iter' in name for name in os.listdir(result / 'samples'))


def test_test_refuses_non_finite_weights(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    config, _ = runs.saved_run(str(result), 'mnist_5k')
    trainer = runs.make_trainer(config, runs.load_data(config))
    trainer.checkpoints.restore_task_end(1)
    trainer.models.generator.weights[0].assign(tf.fill(trainer.models.generator.weights[0].shape, np.nan))
    trainer.checkpoints.save_task_end(1)
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result)], capsys)
    assert code == 2 and 'NaN or infinite weights' in err and 'generator' in err


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    result = tmp_path / 'R'
    real_save = tf.train.CheckpointManager.save
    saves = []

    def save_until_the_disk_is_full(manager, *args, **kwargs):
        saves.append(1)
        if len(saves) > 2:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(manager, *args, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save_until_the_disk_is_full)
    code, err = run_cli(main.main, TINY + ['--result_path', str(result)], capsys)
    assert code == 2 and 'Traceback' not in err
    assert f"could not write {result / 'checkpoints' / 'latest'} (No space left on device)" in err
    assert 'add --resume to continue' in err
    monkeypatch.setattr(tf.train.CheckpointManager, 'save', real_save)
    code, err = run_cli(main.main, TINY + ['--result_path', str(result), '--resume'], capsys)
    assert code == 0 and 'resuming at task 1, iteration 4' in err


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    result = tmp_path / 'R'
    argv = [sys.executable, os.path.join(ROOT, 'main.py'), '--dataset', 'mnist_5k', '--iters', '400',
            '--num_tasks', '1', '--ckpt_every', '2', '--sample_every', '1000', '--result_path', str(result)]
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler
    # for it: give the child the default back, as a terminal's foreground job has.
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    index = result / 'checkpoints' / 'latest' / 'checkpoint'
    deadline = time.monotonic() + 300
    while not index.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert 'Traceback' not in err and 'interrupted in task 1' in err and 'add --resume' in err


def start_main(argv):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_one_training_per_run_folder_and_a_killed_holder_blocks_no_one(tmp_path, capsys):
    result = tmp_path / 'R'
    argv = ['--dataset', 'mnist_5k', '--iters', '2000', '--num_tasks', '2', '--ckpt_every', '1000',
            '--sample_every', '5000', '--result_path', str(result)]
    first = start_main(argv)
    deadline = time.monotonic() + 300
    while not (result / 'config.json').exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        for extra in (['--resume'], ['--overwrite']):
            code, err = run_cli(main.main, argv + extra, capsys)
            assert code == 2 and f'being trained by another process (PID {first.pid})' in err, err
        assert (result / 'config.json').exists()
    finally:
        first.kill()
        first.wait()
    assert run_folder.lock_holder(str(result / run_folder.LOCK_FILE)) is None
    run_folder.RunLock(str(result)).acquire().file.close()


def test_test_names_the_tasks_it_skips_while_training_runs(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    config = json.loads((result / 'config.json').read_text())
    config['tasks'] = [runs.task_record(task) for task in runs.sequential_tasks(list(range(0, 4001, 400)), 3)]
    (result / 'config.json').write_text(json.dumps(config))  # a 3-task run stopped after task 1
    lock = run_folder.RunLock(str(result)).acquire()
    argv = ['--dataset', 'mnist_5k', '--test', '--result_path', str(result), '--eval_samples', '64',
            '--reverse_samples', '0', '--fid_samples', '0']
    tested = start_main(argv)
    out, err = tested.communicate(timeout=600)
    assert tested.returncode == 0, err
    assert f'skipped tasks 2, 3: no end-of-task checkpoint yet (training is still running (PID {os.getpid()}))' in out
    lock.file.close()
    main.main(argv)
    assert 'skipped tasks 2, 3: no end-of-task checkpoint yet (the run stopped before them' in capsys.readouterr().out


def test_resume_without_latest_continues_after_the_newest_task_and_says_so(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '2', '--result_path', str(result)], capsys)
    assert code == 0, err
    task_1 = checkpoint_values(str(result / 'checkpoints' / 'tasks' / 'task_1'))
    os.remove(result / 'checkpoints' / 'latest' / 'checkpoint')
    code, err = run_cli(main.main, TINY + ['--num_tasks', '2', '--result_path', str(result), '--resume'], capsys)
    assert code == 0, err
    assert 'continuing after task 2 from its end-of-task checkpoint' in err and 'finished' in err
    import shutil
    shutil.rmtree(result / 'checkpoints' / 'latest')
    os.remove(result / 'checkpoints' / 'tasks' / 'task_2.index')
    code, err = run_cli(main.main, TINY + ['--num_tasks', '2', '--result_path', str(result), '--resume'], capsys)
    assert code == 0 and 'continuing after task 1' in err and 'resuming at task 2, iteration 0' in err
    assert checkpoint_values(str(result / 'checkpoints' / 'tasks' / 'task_1')).keys() == task_1.keys()
    for name, value in checkpoint_values(str(result / 'checkpoints' / 'tasks' / 'task_1')).items():
        np.testing.assert_array_equal(value, task_1[name])  # task 1 is not written again


def test_resume_with_nothing_to_resume_from_refuses(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    import shutil
    shutil.rmtree(result / 'checkpoints')
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result), '--resume'], capsys)
    assert code == 2 and 'holds no checkpoint' in err and '--overwrite' in err
    assert (result / 'config.json').exists()


@pytest.mark.parametrize('damage', ['.index', '.data-00000-of-00001'])
def test_damaged_checkpoint_files_are_named(tmp_path, capsys, damage):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    latest = tf.train.latest_checkpoint(str(result / 'checkpoints' / 'latest'))
    for prefix in (latest, str(result / 'checkpoints' / 'tasks' / 'task_1')):
        path = prefix + damage
        raw = open(path, 'rb').read()
        open(path, 'wb').write(raw[:len(raw) // 2])
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result), '--resume'], capsys)
    assert code == 2 and f'checkpoint {latest} is damaged or incomplete' in err and 'Traceback' not in err
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result)], capsys)
    assert code == 2 and 'task_1 is damaged or incomplete' in err


def test_truncated_fixed_noise_is_named(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    noise = result / 'fixed_noise.npy'
    noise.write_bytes(noise.read_bytes()[:300])
    code, err = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', str(result)], capsys)
    assert code == 2 and f'{noise} is damaged' in err and 'delete it' in err


def test_resume_removes_folders_of_interrupted_checkpoint_writes(tmp_path, capsys):
    result = tmp_path / 'R'
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 0, err
    leftover = result / 'checkpoints' / 'latest' / 'ckpt-9_temp'
    leftover.mkdir()
    (leftover / 'part-00000-of-00001.data-00000-of-00001').write_bytes(b'half')
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result), '--resume'], capsys)
    assert code == 0 and f'removed {leftover}' in err and not leftover.exists()
