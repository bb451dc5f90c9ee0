"""Run plumbing: CLI errors, result folders, config.json, fixed noise, image
grids, checkpoints, TensorBoard scalars and progress. No method logic here."""
import argparse
import contextlib
import fcntl
import glob
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np
from PIL import Image

CONFIG_FILE = 'config.json'
# In every config.json this project writes: only a folder whose config carries it is
# a run of ours, which --overwrite may delete and --resume may continue.
RUN_MARKER = {'project': 'mergan-tf2', 'format': 1}
FIXED_NOISE_FILE = 'fixed_noise.npy'


class UsageError(Exception):
    """Bad flags or an unusable result folder: reported with exit code 2."""


class WriteFailed(Exception):
    """A run's file could not be written (a full disk, a read-only folder); names the file."""


@contextlib.contextmanager
def writing(path):
    """Turns any failure to write `path` into WriteFailed naming it."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(f'could not write {path} ({error.strerror or error})') from error
    except Exception as error:  # TensorFlow's file system errors are not OSErrors
        if type(error).__module__.startswith('tensorflow'):
            raise WriteFailed(f'could not write {path} ({type(error).__name__}: {error})') from error
        raise


def exit_with_usage_error(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


# --- number flags (argparse types) ---

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def positive_float(text):
    """A finite number above 0: an infinite or NaN factor would train on NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be greater than 0 and finite, got {text}')
    return value


# --- config.json and the result folder ----------------------------------------

def package_versions():
    import keras
    import scipy
    import tensorflow as tf
    return {'python': platform.python_version(), 'tensorflow': tf.__version__,
            'keras': keras.__version__, 'numpy': np.__version__, 'scipy': scipy.__version__}


def read_config(result_path):
    path = os.path.join(result_path, CONFIG_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f'{path} is unreadable ({error})') from error


def is_run_config(config):
    return isinstance(config, dict) and all(config.get(key) == value for key, value in RUN_MARKER.items())


def write_config(result_path, config):
    os.makedirs(result_path, exist_ok=True)
    path = os.path.join(result_path, CONFIG_FILE)
    with open(path + '.tmp', 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(path + '.tmp', path)


LOCK_FILE = 'training.lock'


class RunLock:
    """An OS lock (flock) on the run folder, held for a whole training run, so that two
    trainings never share a folder. The kernel drops it when its process dies, so a
    killed run blocks no one. The file holds the holder's PID, for the messages."""

    def __init__(self, result_path):
        self.path = os.path.join(result_path, LOCK_FILE)
        self.file = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(self.path)
            handle.close()
            raise UsageError(f'{os.path.dirname(self.path)} is being trained by another process '
                             f'(PID {holder}); wait for it or stop it first') from None
        handle.truncate(0)
        handle.write(f'{os.getpid()}\n')
        handle.flush()
        self.file = handle
        return self


def lock_holder(path):
    """The PID of the training that holds the run folder's lock, else None."""
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or '?'
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def claim_result_path(result_path, run_identity, resume, overwrite, absent_means=None):
    """Whether a training run may use result_path: 'new', 'resume' or 'overwrite'. Reads
    only; a folder is a run of ours only if its config.json carries RUN_MARKER.
    absent_means: identity keys that runs saved before them lack, and the value they had."""
    if os.path.exists(result_path) and not os.path.isdir(result_path):
        raise UsageError(f'--result_path {result_path} is a file, not a folder')
    if not os.path.exists(result_path) or not set(os.listdir(result_path)) - {LOCK_FILE}:
        return 'new'
    previous = read_config(result_path)
    if previous is None:
        raise UsageError(f'--result_path {result_path} is not empty and holds no {CONFIG_FILE}; '
                         'choose an empty or new folder')
    if not is_run_config(previous):
        raise UsageError(f'--result_path {result_path} is not empty and its {CONFIG_FILE} was not written '
                         'by this project; nothing was changed there: choose an empty or new folder')
    if overwrite:
        return 'overwrite'

    if not resume:
        raise UsageError(f'--result_path {result_path} already holds a run; '
                         'add --resume to continue it or --overwrite to replace it')
    saved = {**(absent_means or {}), **previous.get('run', {})}
    differences = {key: (saved.get(key), value) for key, value in run_identity.items() if saved.get(key) != value}
    if differences:
        listed = ', '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in sorted(differences.items()))
        raise UsageError(f'--resume: {result_path} holds a different run ({listed})')
    return 'resume'


def clear_run_folder(result_path):
    """--overwrite, once claim_result_path found a run of ours and this process holds its lock."""
    for name in set(os.listdir(result_path)) - {LOCK_FILE}:
        path = os.path.join(result_path, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


# --- fixed noise and image grids -------------------------------------------------

def load_or_create_fixed_noise(result_path, seed, count, z_dim):
    """Noise for sample grids, saved with the run so grids stay comparable."""
    path = os.path.join(result_path, FIXED_NOISE_FILE)
    if os.path.exists(path):
        try:
            noise = np.load(path)
        except (OSError, ValueError, EOFError) as error:
            raise UsageError(f'{path} is damaged ({error}); delete it to draw new grid noise '
                             '(grids then differ from the earlier ones)') from error
        if noise.shape != (count, z_dim):
            raise UsageError(f'{path} holds noise of shape {noise.shape}, not ({count}, {z_dim}); '
                             'delete it to draw new grid noise')
        return noise
    noise = np.random.default_rng(seed).standard_normal((count, z_dim)).astype(np.float32)
    os.makedirs(result_path, exist_ok=True)
    np.save(path, noise)
    return noise


def to_uint8(images):
    """[-1, 1] floats to uint8 pixels."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, rows):
    """Tile uint8 NHWC images into one HWC image, row-major."""
    count, height, width, channels = images.shape
    cols = -(-count // rows)
    grid = np.zeros((rows * height, cols * width, channels), np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, cols)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return grid


def save_grid(images, path, rows=10):
    grid = image_grid(images, rows)
    with writing(path):
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


# --- checkpoints -------------------------------------------------------------------

def task_checkpoint_path(result_path, task_number):
    """The prefix of a task's end-of-task checkpoint (TensorFlow adds .index and .data-*);
    also read without TensorFlow, by report.py."""
    return os.path.join(result_path, 'checkpoints', 'tasks', f'task_{task_number}')


class RunCheckpoints:
    """Two managers over one tf.train.Checkpoint: every task's end is kept,
    the in-task checkpoint keeps only the latest (which is what --resume reads)."""

    def __init__(self, result_path, checkpoint):
        import tensorflow as tf
        self.checkpoint, self.result_path = checkpoint, result_path
        directory = os.path.join(result_path, 'checkpoints')
        self.latest = tf.train.CheckpointManager(checkpoint, os.path.join(directory, 'latest'), max_to_keep=1)
        self.task_directory = os.path.join(directory, 'tasks')

    def save_latest(self):
        with writing(self.latest.directory):
            self.latest.save()

    def save_task_end(self, task_number):
        with writing(self.task_path(task_number)):
            self.checkpoint.write(self.task_path(task_number))

    def latest_description(self):
        """Where --resume would continue from, in words; None without a checkpoint."""
        path = self.latest.latest_checkpoint
        return None if path is None else path

    def task_path(self, task_number):
        return task_checkpoint_path(self.result_path, task_number)

    def restore_latest(self):
        """Restores the latest checkpoint; False when there is none."""
        if self.latest.latest_checkpoint is None:
            return False
        self._restore(self.latest.latest_checkpoint, self.checkpoint.restore)
        return True

    def restore_task_end(self, task_number):
        path = self.task_path(task_number)
        if not os.path.exists(path + '.index'):
            return False
        self._restore(path, self.checkpoint.read)
        return True

    def _restore(self, path, read):
        try:
            read(path).assert_existing_objects_matched().expect_partial()
        except Exception as error:  # TensorFlow reports damaged files in several error types
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f'checkpoint {path} is damaged or incomplete ({reason}); --resume continues '
                             'from an earlier checkpoint once it is moved out of the way') from error

    def task_ends(self):
        """Task numbers with an end-of-task checkpoint, ascending."""
        pattern = os.path.join(self.task_directory, 'task_*.index')
        numbers = [os.path.basename(path)[len('task_'):-len('.index')] for path in glob.glob(pattern)]
        return sorted(int(n) for n in numbers if n.isdigit())

    def remove_unfinished_writes(self):
        """Folders a killed checkpoint write left behind (TensorFlow's *_temp*)."""
        removed = []
        for directory in (self.latest.directory, self.task_directory):
            for path in glob.glob(os.path.join(directory, '*_temp*')):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
        return removed


# --- TensorBoard and progress ---------------------------------------------------------

class ScalarLog:
    def __init__(self, log_dir):
        import tensorflow as tf
        self._tf = tf
        self.writer = tf.summary.create_file_writer(log_dir)

    def write(self, metrics, step):
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                self._tf.summary.scalar(name, value)

    def close(self):
        self.writer.close()


class Progress:
    """A one-line progress report with iterations per second and time left."""

    def __init__(self, total, label, stream=None, min_interval=1.0):
        self.total, self.label, self.stream = total, label, stream or sys.stderr
        self.min_interval = min_interval if self.stream.isatty() else 30.0
        self.start = self.last_print = time.monotonic()
        self.first_done = None

    def update(self, done, extra=''):
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.start = done, now  # exclude tracing from the rate
            return
        if now - self.last_print < self.min_interval and done < self.total:
            return
        self.last_print = now
        rate = (done - self.first_done) / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float('inf')
        end = '\r' if self.stream.isatty() and done < self.total else '\n'
        self.stream.write(f'{self.label} {done}/{self.total} | {rate:.2f} it/s | '
                          f'{format_seconds(left)} left {extra}{end}')
        self.stream.flush()


def format_seconds(seconds):
    if not np.isfinite(seconds):
        return '?'
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}'
