"""Hostile input, round two (issue 20), the command lines' part: abbreviated flags, Ctrl-C and
SIGTERM wherever they land, a closed stdout, a multi_worker peer that never starts or a port in
use, and the summary and report tools on folders and files of the wrong kind. Signals and pipes
need a child process; the rest runs in-process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import main
import quiet
import report
import reproduce
import run_config
from files import write_files
from helpers import ROOT, TINY, copy_of, run_cli
from training import distribution



def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), 'rb').read()
            for root, _, names in os.walk(folder) for name in names}


# ---------------------------------------------------------------- abbreviations

def bench_main(argv):
    import bench
    bench.parse_args(argv)


@pytest.mark.parametrize('entry, argv, word', [
    (main.main, TINY + ['--determ'], '--determ'),
    (main.main, TINY + ['--RA', '--RA_fac', '1'], '--RA_fac'),
    (report.main, ['somewhere', '--mark'], '--mark'),
    (reproduce.main, ['summarise', 'a', 'b', '--command', 'x', '--wall', '5'], '--wall'),
    (reproduce.main, ['readme', '--wri', 'README.md'], '--wri'),
    (bench_main, ['--quic'], '--quic'),
], ids=['main.py --determ', 'main.py --RA_fac', 'report.py', 'reproduce.py summarise', 'reproduce.py readme',
        'bench.py'])
def test_no_command_line_takes_an_abbreviated_flag(tmp_path, capsys, entry, argv, word):
    code, err = run_cli(entry, argv + ['--result_path', str(tmp_path / 'R')] if entry is main.main else argv, capsys)
    assert code == 2 and f'unrecognized arguments: {word}' in err, err
    assert not (tmp_path / 'R').exists()


@pytest.mark.parametrize('spelling', [['--deterministic'], ['--determ'], ['--deterministic=1'],
                                      ['--deterministic', '--deterministic'], ['--result_path=--deterministic'],
                                      []])
def test_determinism_is_decided_before_tensorflow_as_the_parser_decides(spelling):
    argv = ['--dataset', 'mnist_5k', *spelling]
    try:
        parsed = run_config.sequential_parser().parse_args(argv).deterministic
    except SystemExit:
        return  # refused: nothing runs, deterministic or not
    assert quiet.deterministic_requested(['main.py', *argv]) == parsed


# ---------------------------------------------------------------- Ctrl-C and SIGTERM wherever they land

DRIVER = '''
import importlib, os, runpy, signal, sys, time
sys.path.insert(0, {root!r})
sys.argv = {argv!r}
SIGNAL = getattr(signal, {signal_name!r})
{setup}
runpy.run_path({script!r}, run_name='__main__')
'''
AT_IMPORT = '''
class Interrupt:  # the signal arrives as TensorFlow starts to load
    def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow':
            os.kill(os.getpid(), SIGNAL)
            time.sleep(5)
sys.meta_path.insert(0, Interrupt())
'''
AFTER_CALL = '''
import quiet
owner, name = {owner!r}, {name!r}
holder = importlib.import_module(owner.split(':')[0])
if ':' in owner:
    holder = getattr(holder, owner.split(':')[1])
real = getattr(holder, name)
def hooked(*args, **kwargs):  # the signal arrives right after this call
    value = real(*args, **kwargs)
    os.kill(os.getpid(), SIGNAL)
    time.sleep(5)
    return value
setattr(holder, name, hooked)
'''


def signalled(argv, signal_name, where=None, script='main.py'):
    """`script` run as a program in a child, `signal_name` sent to itself at import (where None)
    or right after `where` ('module.function' or 'module:Class.method') returns."""
    if where is None:
        setup = AT_IMPORT
    else:
        owner, name = where.rsplit('.', 1)
        setup = AFTER_CALL.format(owner=owner, name=name)
    code = DRIVER.format(root=ROOT, argv=[script, *argv], signal_name=signal_name, setup=setup,
                         script=os.path.join(ROOT, script))
    # A background job starts with SIGINT ignored; a terminal's foreground job has the default.
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))




@pytest.mark.parametrize('signal_name, code, word', [('SIGINT', 130, 'interrupted'),
                                                      ('SIGTERM', 143, 'stopped by SIGTERM')])
def test_a_signal_while_tensorflow_loads_is_one_line(tmp_path, signal_name, code, word):
    done = signalled(TINY + ['--result_path', str(tmp_path / 'R')], signal_name)
    assert done.returncode == code and 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [f'{word} (main.py)'] and not (tmp_path / 'R').exists()


@pytest.mark.parametrize('signal_name, code, word', [('SIGINT', 130, 'interrupted'),
                                                      ('SIGTERM', 143, 'stopped by SIGTERM')])
def test_a_signal_while_the_models_are_built_says_how_to_go_on(tmp_path, signal_name, code, word):
    done = signalled(TINY + ['--result_path', str(tmp_path / 'R')], signal_name, 'model.build_critic')
    assert done.returncode == code and 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (f'{word} before training began. No checkpoint was written '
                                                    'yet: add --overwrite to the same command to start over.')


def test_sigterm_during_training_is_like_ctrl_c(tmp_path):
    done = signalled(TINY + ['--result_path', str(tmp_path / 'R')], 'SIGTERM',
                     'training.run_generator:RunCheckpoints.save_latest')
    assert done.returncode == 143 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('stopped by SIGTERM in task 1. The last checkpoint') and 'add --resume' in last


@pytest.mark.parametrize('signal_name, code, word', [('SIGINT', 130, 'interrupted'),
                                                      ('SIGTERM', 143, 'stopped by SIGTERM')])
def test_a_signal_during_test_is_one_line(trained, tmp_path, quick_test, signal_name, code, word):
    result = copy_of(trained, tmp_path)
    done = signalled(['--dataset', 'mnist_5k', '--test', '--result_path', str(result), *quick_test], signal_name,
                     'evaluation.metrics.generated_accuracy_and_counts')
    assert done.returncode == code and 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f'{word} during --test')


# ---------------------------------------------------------------- a closed stdout

def with_stdout_closed(argv, unbuffered=False):
    """A command whose stdout reader has gone before it prints (`| head -n0`)."""
    read, write = os.pipe()
    os.close(read)
    env = {name: value for name, value in os.environ.items() if name != 'PYTHONUNBUFFERED'}
    if unbuffered:
        env['PYTHONUNBUFFERED'] = '1'
    try:
        return subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=600, env=env)
    finally:
        os.close(write)


@pytest.mark.parametrize('unbuffered', [False, True], ids=['buffered', 'unbuffered'])
def test_test_into_a_closed_pipe_keeps_its_results_and_ends_quietly(trained, tmp_path, quick_test, unbuffered):
    result = copy_of(trained, tmp_path)
    done = with_stdout_closed(['main.py', '--dataset', 'mnist_5k', '--test', '--result_path', str(result),
                               *quick_test], unbuffered)
    for word in ('Traceback', 'BrokenPipe', 'Exception ignored'):
        assert word not in done.stderr, done.stderr[-3000:]
    tasks = json.loads((result / 'results.json').read_text())['tasks']
    if unbuffered:  # stopped at its first summary, written before it
        assert done.returncode == 141 and [record['task'] for record in tasks] == [1]
    else:  # found at the last flush: the work is done
        assert done.returncode == 0 and [record['task'] for record in tasks] == [1, 2]


def test_report_into_a_closed_pipe_ends_quietly(tmp_path):
    run = make_tested_run(tmp_path / 'run')
    done = with_stdout_closed(['report.py', run, '--markdown', '--out', str(tmp_path / 'chart.png')])
    assert done.returncode == 0 and 'Traceback' not in done.stderr and 'Exception ignored' not in done.stderr, \
        done.stderr


# ---------------------------------------------------------------- multi_worker start-up

def free_port():
    with socket.socket() as sock:
        sock.bind(('localhost', 0))
        return sock.getsockname()[1]


def start_chief(result, ports, extra=()):
    """Worker 0 of a two-worker cluster whose worker 1 is never started."""
    tf_config = {'cluster': {'worker': [f'localhost:{port}' for port in ports]}, 'task': {'type': 'worker', 'index': 0}}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *TINY, '--distribute', 'multi_worker',
                             '--result_path', str(result), *extra], cwd=ROOT, env=dict(os.environ, TF_CONFIG=json.dumps(
                                 tf_config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process, timeout=300):
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f'still running after {timeout} s: {err[-3000:]}')


def test_a_peer_that_never_starts_ends_in_a_message(tmp_path):
    ports = [free_port(), free_port()]
    _, err = finish(start_chief(tmp_path / 'R', ports, ['--cluster_timeout', '2']))
    assert f'localhost:{ports[1]} did not answer within 2 s (--cluster_timeout)' in err, err[-3000:]
    assert 'Traceback' not in err and not (tmp_path / 'R').exists()


def test_a_port_in_use_ends_in_a_message_before_anything_is_written(tmp_path):
    with socket.socket() as taken:
        taken.bind(('localhost', 0))
        taken.listen()
        port = taken.getsockname()[1]
        chief = start_chief(tmp_path / 'R', [port, free_port()], ['--cluster_timeout', '60'])
        _, err = finish(chief)
    assert chief.returncode == 2 and f'port {port} of this task (localhost:{port} in TF_CONFIG) cannot be used' in err, \
        err[-3000:]
    assert 'Traceback' not in err and not (tmp_path / 'R').exists()


@pytest.mark.parametrize('signal_name, code, word', [('SIGINT', 130, 'interrupted'),
                                                      ('SIGTERM', 143, 'stopped by SIGTERM')])
def test_a_signal_ends_the_wait_for_a_peer(tmp_path, signal_name, code, word):
    chief = start_chief(tmp_path / 'R', [free_port(), free_port()], ['--cluster_timeout', '600'])
    deadline = time.monotonic() + 300
    lines = []
    while time.monotonic() < deadline and chief.poll() is None:
        lines.append(chief.stderr.readline())
        if 'waiting up to' in lines[-1]:
            break
    chief.send_signal(getattr(signal, signal_name))
    _, err = finish(chief, timeout=120)
    assert chief.returncode == code and 'Traceback' not in err, ''.join(lines) + err
    assert err.strip().splitlines()[-1] == f'{word} while waiting for the other tasks: nothing was written.'
    assert not (tmp_path / 'R').exists()


@pytest.mark.slow
def test_a_task_lost_while_training_ends_its_peers_in_one_line(tmp_path):
    """SIGTERM to worker 1 after the chief's first checkpoint: it stops as Ctrl-C would, and the
    chief, whose collective operations fail, says so in one line instead of TensorFlow's page."""
    ports = [free_port(), free_port()]
    processes = [start_chief(tmp_path / 'R', ports, ['--iters', '60', '--ckpt_every', '3'])]
    tf_config = {'cluster': {'worker': [f'localhost:{port}' for port in ports]}, 'task': {'type': 'worker', 'index': 1}}
    processes.append(subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *TINY, '--iters', '60',
                                       '--ckpt_every', '3', '--distribute', 'multi_worker', '--result_path',
                                       str(tmp_path / 'R')], cwd=ROOT, env=dict(os.environ, TF_CONFIG=json.dumps(
                                           tf_config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    checkpoint = tmp_path / 'R' / 'checkpoints' / 'latest' / 'checkpoint'
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)
    (_, chief_err), (_, worker_err) = [finish(process, timeout=300) for process in processes]
    assert processes[1].returncode == 143 and 'Traceback' not in worker_err, worker_err[-3000:]
    assert worker_err.strip().splitlines()[-1].startswith('stopped by SIGTERM in task 1: start every task again')
    assert processes[0].returncode == 1 and 'Traceback' not in chief_err, chief_err[-3000:]
    assert chief_err.strip().splitlines()[-1].startswith(
        'error: training stopped: another task of the cluster stopped or cannot be reached')


@pytest.mark.parametrize('flags, message', [
    (['--cluster_timeout', '5'], '--cluster_timeout needs --distribute multi_worker'),
    (['--distribute', 'multi_worker', '--cluster_timeout', '0'], 'must be greater than 0'),
])
def test_impossible_cluster_timeouts_are_refused(tmp_path, capsys, flags, message):
    code, err = run_cli(main.main, TINY + flags + ['--result_path', str(tmp_path / 'R')], capsys)
    assert code == 2 and message in err and not (tmp_path / 'R').exists()


def test_a_tf_config_address_without_a_port_is_refused():
    problem = distribution.tf_config_problem(json.dumps({'cluster': {'worker': ['localhost', 'localhost:2']},
                                                         'task': {'type': 'worker', 'index': 1}}))
    assert problem == "TF_CONFIG address 'localhost' is not host:port with a port from 1 to 65535"


# ---------------------------------------------------------------- reproduce.py summarise

def make_tested_run(folder, grids=True):
    """A tested two-task run as main.py leaves it: a run's config.json, results, a test grid, checkpoints."""
    records = [{'task': t, 'seen_classes': list(range(t)), 'accuracy_per_class': {str(c): 0.9 for c in range(t)},
                'mean_accuracy': 0.9, 'reverse_accuracy': None, 'classifier_fid': None, 'inception_fid': None}
               for t in (1, 2)]
    files = {'config.json': json.dumps({'project': 'mergan-tf2', 'format': 1, 'run': {'method': 'sft'}}),
             'results.json': json.dumps({'dataset': 'mnist_5k', 'method': 'sft', 'label': 'SFT', 'run': {},
                                         'tasks': records}),
             'results.csv': 'task,class,accuracy\n1,0,0.900000\n', 'fixed_noise.npy': 'noise',
             'checkpoints/tasks/task_2.index': 'checkpoint', 'test/samples_task_2.npz': 'npz'}
    write_files(folder, files)
    if grids:
        Image.fromarray(np.full((320, 320), 7, np.uint8)).save(os.path.join(folder, 'test', 'task_2_class_1.png'))
    return str(folder)


def summarise(source, dest, capsys):
    code = reproduce.main(['summarise', str(source), str(dest), '--command', 'python main.py'])
    return code, capsys.readouterr().err


def test_summarise_never_writes_into_a_run_folder(tmp_path, capsys):
    source, other = make_tested_run(tmp_path / 'sft'), make_tested_run(tmp_path / 'joint')
    before = snapshot(tmp_path)
    code, err = summarise(source, other, capsys)
    assert code == 2 and f'{other} is a run folder' in err and 'nothing was written' in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('where', ['the same folder', 'inside the run', 'around the run', 'a link to the run'])
def test_summarise_never_writes_into_its_own_source(tmp_path, capsys, where):
    source = make_tested_run(tmp_path / 'group' / 'run')
    dest = {'the same folder': source, 'inside the run': os.path.join(source, 'summary'),
            'around the run': str(tmp_path / 'group'), 'a link to the run': str(tmp_path / 'link')}[where]
    os.symlink(source, tmp_path / 'link')
    before = snapshot(tmp_path)
    code, err = summarise(source, dest, capsys)
    assert code == 2 and 'are the same folder or one holds the other' in err, err
    assert snapshot(tmp_path) == before and not os.path.exists(os.path.join(source, 'summary'))


@pytest.mark.parametrize('kind', ['other files', 'a file', 'under a file'])
def test_summarise_into_a_destination_of_the_wrong_kind(tmp_path, capsys, kind):
    source = make_tested_run(tmp_path / 'run')
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'todo.txt').write_text('mine')
    (tmp_path / 'file').write_text('mine')
    dest, message = {'other files': (tmp_path / 'notes', 'holds what a summary does not write (todo.txt)'),
                     'a file': (tmp_path / 'file', f'{tmp_path}/file is a file'),
                     'under a file': (tmp_path / 'file' / 'summary', f'{tmp_path}/file is a file')}[kind]
    before = snapshot(tmp_path)
    code, err = summarise(source, dest, capsys)
    assert code == 2 and message in err, err
    assert snapshot(tmp_path) == before


def test_summarise_replaces_an_earlier_summary(tmp_path, capsys):
    source, dest = make_tested_run(tmp_path / 'run'), tmp_path / 'summary'
    assert summarise(source, dest, capsys)[0] == 0
    assert summarise(source, dest, capsys)[0] == 0
    assert sorted(snapshot(dest)) == ['command.txt', 'config.json', 'results.csv', 'results.json',
                                      'test/task_2_class_1.png']


# ---------------------------------------------------------------- report.py and reproduce.py on wrong input

def with_results(folder, change):
    path = os.path.join(make_tested_run(folder), 'results.json')
    results = json.loads(open(path).read())
    change(results)
    with open(path, 'w') as f:
        json.dump(results, f)
    return str(folder)


WRONG_FIELDS = {
    'tasks 5': (lambda r: r.update(tasks=5), '"tasks" is 5, not a list'),
    'method a list': (lambda r: r.update(method=['sft']), '"method" is ["sft"], not a string'),
    'mean_accuracy null': (lambda r: r['tasks'][1].update(mean_accuracy=None),
                           '"tasks[1].mean_accuracy" is null, not a number'),
    'mean_accuracy text': (lambda r: r['tasks'][0].update(mean_accuracy='0.5'),
                           '"tasks[0].mean_accuracy" is "0.5", not a number'),
    'seen_classes text': (lambda r: r['tasks'][0].update(seen_classes='0'),
                          '"tasks[0].seen_classes" is "0", not a list of whole numbers'),
    'run a list': (lambda r: r.update(run=['sft']), '"run" is ["sft"], not an object'),
}


@pytest.mark.parametrize('field', sorted(WRONG_FIELDS))
def test_report_and_reproduce_name_a_field_of_the_wrong_type(tmp_path, capsys, field):
    change, message = WRONG_FIELDS[field]
    run = with_results(tmp_path / 'reproduction' / 'mnist_5k_3' / 'sft', change)
    code = report.main([run, '--out', str(tmp_path / 'chart.png')])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    code = reproduce.main(['report', '--reproduction_dir', str(tmp_path / 'reproduction')])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize('flag, name, message', [
    ('--out', 'missing/chart.png', 'missing does not exist'),
    ('--out', 'chart.txt', 'the file name must end in .png or .pdf or .svg'),
    ('--accuracy_plot', 'a_folder', 'the file name must end in'),
    ('--figure3', 'figure3.pdf', 'the file name must end in .png'),
    ('--out', 'file/chart.png', 'file is not a folder'),
])
def test_report_checks_where_it_writes_before_it_reads(tmp_path, capsys, flag, name, message):
    run = make_tested_run(tmp_path / 'run')
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'file').write_text('mine')
    before = snapshot(tmp_path)
    code = report.main([run, flag, str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('argv, message', [
    (['report', '--reproduction_dir', '{file}'], '--reproduction_dir {file} is not a folder'),
    (['readme', '--reproduction_dir', '{file}'], '--reproduction_dir {file} is not a folder'),
    (['readme', '--write', '{missing}'], '--write {missing}: No such file or directory'),
])
def test_reproduce_on_paths_of_the_wrong_kind(tmp_path, capsys, argv, message):
    paths = {'file': str(tmp_path / 'file'), 'missing': str(tmp_path / 'README.md')}
    (tmp_path / 'file').write_text('mine')
    code = reproduce.main([part.format(**paths) for part in argv])
    err = capsys.readouterr().err
    assert code == 2 and message.format(**paths) in err, err
    assert (tmp_path / 'file').read_text() == 'mine' and not (tmp_path / 'README.md').exists()
