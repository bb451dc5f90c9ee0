"""Hostile input, round two (issue 20), the run folder's part: the lock file, paths that cannot
be created, --overwrite near the user's data, full disks, entries of the wrong kind, a config.json
edited by hand, datasets with empty classes, and what --test and --resume say of a missing
checkpoint. Each case: a message naming the problem, exit code 2, nothing destroyed. The command
lines' part (abbreviations, signals, pipes, the cluster, reports) is in test_hostile_3.py."""
import errno
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import joint
import main
import run_folder
from evaluation import results
from helpers import TINY, copy_of, run_cli



def full_disk():
    return OSError(errno.ENOSPC, 'No space left on device')




def snapshot(folder):
    """{relative path: bytes} of every file under `folder`, links as their targets."""
    found = {}
    for root, folders, names in os.walk(folder):
        for name in names + [f for f in folders if os.path.islink(os.path.join(root, f))]:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = (os.readlink(path) if os.path.islink(path)
                                                    else open(path, 'rb').read())
    return found


def evaluation_argv(result, *extra):
    return ['--dataset', 'mnist_5k', '--test', '--result_path', str(result), *extra]


# ---------------------------------------------------------------- the lock file

def test_the_lock_never_follows_a_symbolic_link(tmp_path, capsys):
    notes = tmp_path / 'notes.txt'
    notes.write_text('my notes\n')
    result = tmp_path / 'R'
    result.mkdir()
    (result / 'training.lock').symlink_to(notes)
    code, err = run_cli(main.main, TINY + ['--result_path', str(result)], capsys)
    assert code == 2 and f'{result}/training.lock is a symbolic link' in err, err
    assert notes.read_text() == 'my notes\n' and os.listdir(result) == ['training.lock']


@pytest.mark.parametrize('kind', ['hard link', 'folder', 'text'])
def test_the_lock_file_is_never_truncated_unless_it_is_ours(tmp_path, capsys, kind):
    notes = tmp_path / 'notes.txt'
    notes.write_text('my notes\n')
    result = tmp_path / 'R'
    result.mkdir()
    lock = result / 'training.lock'
    if kind == 'hard link':
        os.link(notes, lock)
    elif kind == 'folder':
        lock.mkdir()
    else:
        lock.write_text('not a PID\n')
    before = snapshot(tmp_path)
    code, err = run_cli(main.main, TINY + ['--result_path', str(result)], capsys)
    why = {'hard link': 'has other names (hard links)', 'folder': 'is a folder', 'text': 'holds something other'}
    assert code == 2 and f'{lock} {why[kind]}' in err, err
    assert snapshot(tmp_path) == before


def test_the_lock_file_holds_only_the_holders_pid_however_often_it_is_taken(tmp_path):
    for _ in range(3):
        run_folder.RunLock(str(tmp_path)).acquire().file.close()
    assert (tmp_path / 'training.lock').read_text() == f'{os.getpid()}\n'
    assert run_folder.lock_holder(str(tmp_path / 'training.lock')) is None


# ---------------------------------------------------------------- a --result_path that cannot be made

def unmakeable(kind, tmp_path):
    if kind == 'under a file':
        (tmp_path / 'file').write_text('x')
        return tmp_path / 'file' / 'R', f'{tmp_path}/file is a file, not a folder'
    if kind == 'name too long':
        return tmp_path / ('r' * 300), 'File name too long'
    if kind == 'link loop':
        (tmp_path / 'a').symlink_to(tmp_path / 'b')
        (tmp_path / 'b').symlink_to(tmp_path / 'a')
        return tmp_path / 'a', 'symbolic link that leads nowhere'
    if kind == 'dangling link':
        (tmp_path / 'R').symlink_to(tmp_path / 'missing')
        return tmp_path / 'R', 'symbolic link that leads nowhere'
    return '/proc/x', '/proc/x cannot be created'


@pytest.mark.parametrize('kind', ['under a file', 'name too long', 'link loop', 'dangling link', 'in /proc'])
def test_a_result_path_that_cannot_be_created_is_named(tmp_path, capsys, kind):
    result, message = unmakeable(kind, tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(main.main, TINY + ['--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 2 and message in err, err
    assert snapshot(tmp_path) == before and not (tmp_path / 'missing').exists()


# ---------------------------------------------------------------- --overwrite and the user's files

def write_mnist_npz(path, missing_test_class=None):
    """A small MNIST file: 3 training and 2 test images of every class."""
    rng = np.random.default_rng(0)
    test_classes = [c for c in range(10) if c != missing_test_class]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=np.repeat(np.arange(10), 3),
             x_test=rng.integers(0, 256, (2 * len(test_classes), 28, 28), dtype=np.uint8),
             y_test=np.repeat(test_classes, 2))


@pytest.mark.parametrize('where', ['--data_dir inside', '--data_dir is the run folder', '--eval_classifier inside'])
def test_overwrite_never_deletes_a_path_the_command_line_names(tmp_path, capsys, trained, where):
    result = copy_of(trained, tmp_path)
    if where == '--eval_classifier inside':
        (result / 'mine.keras').write_bytes(b'my classifier')
        flags = TINY + ['--eval_classifier', str(result / 'mine.keras')]
    else:
        data_dir = result / 'mnist' if where == '--data_dir inside' else result
        write_mnist_npz(data_dir / 'mnist.npz')
        flags = ['--dataset', 'mnist', '--data_dir', str(data_dir), '--iters', '2', '--num_tasks', '1']
    before = snapshot(result)
    code, err = run_cli(main.main, flags + ['--result_path', str(result), '--overwrite'], capsys)
    assert code == 2 and '--overwrite would delete' in err and f'inside --result_path {result}' in err, err
    assert snapshot(result) == before


# ---------------------------------------------------------------- datasets with an empty class

def write_lsun(root, counts):
    for category, count in counts.items():
        (root / category).mkdir(parents=True)
        for index in range(count):
            Image.new('RGB', (16, 16), (10 * index, 50, 90)).save(root / category / f'{index}.png')


def test_an_lsun_category_without_a_test_image_is_refused(tmp_path, capsys):
    write_lsun(tmp_path / 'lsun', {'bedroom': 2, 'kitchen': 1, 'church_outdoor': 2, 'tower': 2})
    result = tmp_path / 'R'
    code, err = run_cli(main.main, ['--dataset', 'lsun', '--data_dir', str(tmp_path / 'lsun'), '--iters', '1',
                                    '--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 2 and "category 'kitchen'" in err and 'no held-out test image' in err, err
    assert not result.exists()


def test_a_class_without_test_images_is_refused(tmp_path, capsys):
    write_mnist_npz(tmp_path / 'mnist' / 'mnist.npz', missing_test_class=3)
    result = tmp_path / 'R'
    code, err = run_cli(main.main, ['--dataset', 'mnist', '--data_dir', str(tmp_path / 'mnist'), '--iters', '1',
                                    '--num_tasks', '1', '--result_path', str(result)], capsys)
    assert code == 2 and 'mnist: class 3 has no held-out test image' in err, err
    assert not result.exists()


def test_results_json_never_holds_nan(tmp_path):
    record = {'task': 1, 'seen_classes': [0], 'accuracy_per_class': {'0': float('nan')},
              'mean_accuracy': float('nan'), 'reverse_accuracy': float('inf'), 'classifier_fid': None,
              'inception_fid': None}
    results.write_results(str(tmp_path), {'dataset': 'lsun', 'method': 'sft', 'label': 'SFT'}, [record],
                          classifier={'source': 'trained', 'test_accuracy': float('nan')})

    def refuse(constant):
        raise ValueError(f'{constant} is not JSON')

    written = json.loads((tmp_path / 'results.json').read_text(), parse_constant=refuse)
    assert written['classifier']['test_accuracy'] is None and written['tasks'][0]['mean_accuracy'] is None


# ---------------------------------------------------------------- more tasks than classes

@pytest.mark.parametrize('entry, flags, message', [
    (main.main, ['--num_tasks', '11'], '--num_tasks 11: mnist_5k has 10 classes'),
    (main.main, ['--num_tasks', str(10 ** 23)], f'--num_tasks {10 ** 23}: mnist_5k has 10 classes'),
    (joint.main, ['--classes', '11'], '--classes 11: mnist_5k has 10 classes'),
], ids=['num_tasks 11', 'num_tasks 1e23', 'joint classes 11'])
def test_more_tasks_or_classes_than_the_dataset_has_are_refused(tmp_path, capsys, entry, flags, message):
    result = tmp_path / 'R'
    code, err = run_cli(entry, ['--dataset', 'mnist_5k', '--iters', '1', '--sample_every', '100', *flags,
                                '--result_path', str(result)], capsys)
    assert code == 2 and message in err, err
    assert not result.exists()


# ---------------------------------------------------------------- full disks

def full_disk_in(monkeypatch, kind):
    """The disk fills up while the run writes `kind`: a few bytes reach the file, then ENOSPC."""
    if kind == 'fixed_noise.npy':
        def save(file, array, *args, **kwargs):
            file.write(b'\x93NUMPY') if hasattr(file, 'write') else open(file, 'wb').write(b'\x93NUMPY')
            raise full_disk()
        monkeypatch.setattr(np, 'save', save)
    elif kind == 'config.json':
        real_dump = json.dump

        def dump(value, file, *args, **kwargs):
            if 'config.json' not in getattr(file, 'name', ''):
                return real_dump(value, file, *args, **kwargs)
            file.write('{"project": ')
            raise full_disk()
        monkeypatch.setattr(json, 'dump', dump)
    else:
        real_write = os.pwrite

        def write(descriptor, data, offset):
            if os.readlink(f'/proc/self/fd/{descriptor}').endswith('training.lock'):
                raise full_disk()
            return real_write(descriptor, data, offset)
        monkeypatch.setattr(os, 'pwrite', write)


@pytest.mark.parametrize('kind', ['fixed_noise.npy', 'config.json', 'training.lock'])
def test_a_full_disk_leaves_no_half_written_file(tmp_path, capsys, monkeypatch, kind):
    result = tmp_path / 'R'
    full_disk_in(monkeypatch, kind)
    code, err = run_cli(main.main, TINY + ['--result_path', str(result)], capsys)
    assert code == 2 and f'could not write {result}/{kind} (No space left on device)' in err, err
    left = os.listdir(result)
    assert not [name for name in left if name.endswith('.tmp')]
    assert kind == 'training.lock' or kind not in left


# ---------------------------------------------------------------- entries of the wrong kind

@pytest.fixture
def unfinished(trained, tmp_path):
    """A copy of the trained run as if stopped after task 1 (--resume trains task 2)."""
    result = copy_of(trained, tmp_path)
    shutil.rmtree(result / 'checkpoints' / 'latest')
    os.remove(result / 'checkpoints' / 'tasks' / 'task_2.index')
    return result


@pytest.mark.parametrize('entry', ['logs', 'samples', 'checkpoints/latest'])
def test_a_file_where_the_run_keeps_a_folder_stops_it_before_it_starts(unfinished, capsys, entry):
    path = unfinished / entry
    shutil.rmtree(path, ignore_errors=True)
    path.write_text('my file')
    before = snapshot(unfinished)
    code, err = run_cli(main.main, TINY + ['--result_path', str(unfinished), '--resume'], capsys)
    assert code == 2 and f'{path} is not a folder' in err, err
    assert snapshot(unfinished) == before


@pytest.mark.parametrize('entry', ['test', 'results.json', 'results.csv', 'mean_accuracy.png'])
def test_test_checks_where_it_writes_before_it_evaluates(trained, tmp_path, capsys, quick_test, entry):
    result = copy_of(trained, tmp_path)
    if entry == 'test':
        (result / 'test').write_text('my file')
    else:
        (result / entry).mkdir()
    before = snapshot(result)
    code, err = run_cli(main.main, evaluation_argv(result, *quick_test), capsys)
    kind = 'is not a folder' if entry == 'test' else 'is a folder'
    assert code == 2 and f'--test: {result / entry} {kind}' in err, err
    assert snapshot(result) == before


def test_test_on_a_full_disk_keeps_the_results_it_had(trained, tmp_path, capsys, monkeypatch, quick_test):
    result = copy_of(trained, tmp_path)
    code, err = run_cli(main.main, evaluation_argv(result, *quick_test), capsys)
    assert code == 0, err
    kept = (result / 'results.json').read_bytes()
    real_dump = json.dump

    def dump(value, file, *args, **kwargs):
        if 'results.json' in getattr(file, 'name', ''):
            file.write('{"dataset": ')
            raise full_disk()
        return real_dump(value, file, *args, **kwargs)

    monkeypatch.setattr(json, 'dump', dump)
    code, err = run_cli(main.main, evaluation_argv(result, *quick_test), capsys)
    assert code == 2 and f'could not write {result}/results.json (No space left on device)' in err, err
    assert (result / 'results.json').read_bytes() == kept
    assert not [name for name in os.listdir(result) if name.endswith('.tmp')]


def read_only_folder():
    """A folder no file can be created in, even by root (sysfs), else a skip."""
    try:
        with open('/sys/hostile_probe', 'w'):
            pass
    except OSError:
        return '/sys'
    os.remove('/sys/hostile_probe')
    pytest.skip('no read-only folder on this machine')


@pytest.mark.parametrize('kind', ['under a file', 'cache path a folder', 'read-only'])
def test_a_classifier_cache_that_cannot_be_kept_is_named_before_evaluating(trained, tmp_path, capsys, kind):
    result = copy_of(trained, tmp_path)
    folder = tmp_path / 'classifiers'
    if kind == 'under a file':
        (tmp_path / 'file').write_text('x')
        folder, message = tmp_path / 'file' / 'classifiers', f'{tmp_path}/file is not a folder'
    elif kind == 'cache path a folder':
        (folder / 'mnist_5k_classifier.keras').mkdir(parents=True)
        message = f'{folder}/mnist_5k_classifier.keras is a folder'
    else:
        folder = read_only_folder()
        message = f'cannot write in {folder}'
    before = snapshot(result)
    code, err = run_cli(main.main, evaluation_argv(result, '--eval_samples', '16', '--reverse_samples', '0',
                                                '--fid_samples', '0', '--classifier_dir', str(folder)), capsys)
    assert code == 2 and '--classifier_dir' in err and message in err, err
    assert snapshot(result) == before


# ---------------------------------------------------------------- config.json edited by hand

def edit_config(result, change):
    config = json.loads((result / 'config.json').read_text())
    change(config)
    (result / 'config.json').write_text(json.dumps(config))


EDITS = {
    'run null': (lambda c: c.update(run=None), '"run" is null'),
    'run a list': (lambda c: c.update(run=['sft']), '"run" is ["sft"]'),
    'format 2': (lambda c: c.update(format=2), 'written by a newer version of this project (format 2)'),
    'seed a string': (lambda c: c['args'].update(seed='0'), 'args.seed is "0", not a whole number'),
    'mode foo': (lambda c: c['args'].update(mode=c['args'].pop('method')) or c['args'].update(mode='foo'),
                 'args.mode is "foo": not a method this project knows'),
    'options on sft': (lambda c: c['args'].update(method_options={'RA_factor': 0.001}),
                       'args.method_options.RA_factor is not an option of sft'),
    'negative RA_factor': (lambda c: c['args'].update(method='ra', method_options={'RA_factor': -1}),
                           'args.method_options.RA_factor is -1: must be greater than 0'),
    'precision float16': (lambda c: c['args'].update(precision='float16'),
                          'args.precision is "float16": not a precision this project knows'),
}


@pytest.mark.parametrize('edit', sorted(EDITS))
def test_a_hand_edited_config_is_named_by_its_key(trained, tmp_path, capsys, quick_test, edit):
    result = copy_of(trained, tmp_path)
    change, message = EDITS[edit]
    edit_config(result, change)
    before = snapshot(result)
    resumes = edit.startswith(('run', 'format'))  # --resume reads "run"; --test reads "args"
    argv = TINY + ['--result_path', str(result), '--resume'] if resumes else evaluation_argv(result, *quick_test)
    code, err = run_cli(main.main, argv, capsys)
    assert code == 2 and message in err and 'Traceback' not in err, err
    if edit == 'format 2':
        code, err = run_cli(main.main, evaluation_argv(result, *quick_test), capsys)
        assert code == 2 and message in err, err
    assert snapshot(result) == before


# ---------------------------------------------------------------- a task checkpoint deleted

def test_a_deleted_task_checkpoint_is_called_missing_not_untrained(trained, tmp_path, capsys, quick_test):
    result = copy_of(trained, tmp_path)
    os.remove(result / 'checkpoints' / 'tasks' / 'task_1.index')
    code, _ = run_cli(main.main, evaluation_argv(result, *quick_test))
    out = capsys.readouterr().out
    assert code == 0 and 'skipped task 1: the run went past it, but the end-of-task checkpoint is missing' in out
    assert '--resume trains' not in out and 'only training the run again (--overwrite)' in out
    code, err = run_cli(main.main, TINY + ['--result_path', str(result), '--resume'], capsys)
    assert code == 0 and 'is finished' in err and 'task 1 is missing: --resume cannot write it again' in err
