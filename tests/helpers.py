"""What several test files build: configs and trainers of each method, tasks, the command
lines run in-process, and stand-in images and classifiers for evaluation. Fixtures are in
conftest.py."""
import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import run_config
import runs
from data import ImageSet, group_by_class
from evaluation import evaluate
from evaluation.classifier import wrap_classifier
from training import methods
from training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- trainers --------------------------------------------------------------------------------

def method_flags(name):
    """main.py's flags for a registered method (none for SFT)."""
    flag = methods.METHODS[name].flag
    return [flag] if flag else []


def make_config(method, tmp_path, seed=0, **overrides):
    return run_config.default_config('mnist_5k', tmp_path, flags=method_flags(method), seed=seed, iters=2, log_every=1,
                                     sample_every=100, ckpt_every=100, **overrides)


def make_trainer(data, method, tmp_path, seed=0, split_replay_batch=True, method_object=None):
    """A trainer of `method` (a registry name) on mnist_5k; method_object replaces the method
    the flags would make (a stand-in, or other options)."""
    config = make_config(method, tmp_path, seed)
    settings = dataclasses.replace(config.settings, split_replay_batch=split_replay_batch)
    method_object = method_object or methods.method_for(config.method, config.method_options)
    return Trainer(config, data, method_object, settings)


def tasks_for(data, count):
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    return runs.sequential_tasks(offsets, count)


def spec_tensors(task):
    return Trainer.spec_tensors(task)


def weights_of(network):
    return [w.numpy().copy() for w in network.weights]


# --- command lines -----------------------------------------------------------------------------

# Two tasks of five iterations: a finished run in seconds.
TINY = ['--dataset', 'mnist_5k', '--iters', '5', '--num_tasks', '2', '--sample_every', '100', '--ckpt_every', '2']


def run_cli(entry, argv, capsys=None):
    """Runs a CLI in-process; returns (exit code, stderr)."""
    try:
        entry(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    return code, capsys.readouterr().err if capsys else ''


# main.py with a batch of 16, for child processes that check what does not depend on the batch.
SMALL_BATCH_MAIN = os.path.join(ROOT, 'tests', 'main_small_batch.py')


def copy_of(run, tmp_path):
    """A copy of a run folder, as tmp_path/R: tests that change a shared run change a copy."""
    shutil.copytree(run, tmp_path / 'R', symlinks=True)
    return tmp_path / 'R'


def start_training(result, method, extra=(), small_batch=True):
    """main.py (batch 16, or the paper's 64) in a child process: two tasks of 8 iterations, a
    checkpoint every 3, deterministic."""
    script = SMALL_BATCH_MAIN if small_batch else os.path.join(ROOT, 'main.py')
    argv = [sys.executable, script, '--dataset', 'mnist_5k', method, '--num_tasks', '2',
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


def kill_resume_and_compare(tmp_path, method, extra, kill_at, small_batch=True):
    """Two tasks of `method` trained straight and, beside it, killed (SIGKILL) once `kill_at`
    is written and resumed: the task 2 checkpoints must match. Returns the saved names."""
    straight = start_training(tmp_path / 'straight', method, extra, small_batch)
    interrupted = start_training(tmp_path / 'interrupted', method, extra, small_batch)
    wait_for_checkpoint(interrupted, tmp_path / 'interrupted', kill_at, timeout=900)  # a busy machine is slow
    os.kill(interrupted.pid, signal.SIGKILL)
    interrupted.wait()
    assert not (tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_2.index').exists()
    resumed = start_training(tmp_path / 'interrupted', method, [*extra, '--resume'], small_batch)
    _, resumed_err = resumed.communicate(timeout=600)
    _, straight_err = straight.communicate(timeout=600)
    assert resumed.returncode == 0, resumed_err
    assert straight.returncode == 0, straight_err
    assert 'resuming at task' in resumed_err
    expected = checkpoint_values(str(tmp_path / 'straight' / 'checkpoints' / 'tasks' / 'task_2'))
    actual = checkpoint_values(str(tmp_path / 'interrupted' / 'checkpoints' / 'tasks' / 'task_2'))
    assert expected.keys() == actual.keys() and len(expected) > 20
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, err_msg=name)
    return set(expected)


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if 'OBJECT_GRAPH' not in name}


# --- stand-ins for evaluation ---------------------------------------------------------------------

def level(class_id):
    """The uint8 grey level that encodes a class in the stand-in images."""
    return 20 * class_id + 10


def constant_images(class_id, count, size=8):
    return np.full((count, size, size, 1), level(class_id), np.uint8)


def mean_pixel_classifier(num_classes=10):
    """Labels an image by its mean pixel: nearest class level (logit -(m - c)^2 + m^2)."""
    inputs = keras.Input((None, None, 1))
    mean = layers.GlobalAveragePooling2D()(inputs)
    centres = np.array([level(k) / 127.5 - 1 for k in range(num_classes)], np.float32)
    dense = layers.Dense(num_classes)
    logits = dense(mean)
    dense.set_weights([2 * centres[None, :], -centres ** 2])
    return wrap_classifier(keras.Model(inputs, logits))


def constant_image_set(num_classes=3, size=8, per_class=10):
    """Each class's images are its level plus a little noise, so covariances are not singular."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(num_classes), per_class)
    x = np.stack([constant_images(c, 1, size)[0] for c in y]).astype(np.int16)
    x = np.clip(x + rng.integers(-3, 4, x.shape), 0, 255).astype(np.uint8)
    return ImageSet('standin', x, y, x.copy(), y.copy(), [f'c{c}' for c in range(num_classes)], {})


def evaluation_args(**overrides):
    """The EvalConfig the command line makes by default, with overrides."""
    parser = argparse.ArgumentParser()
    evaluate.add_evaluation_flags(parser)
    return dataclasses.replace(run_config.evaluation_config(parser.parse_args([]), seed=0), **overrides)
