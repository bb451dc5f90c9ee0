"""A run's folder and its rules, without TensorFlow: config.json and the marker that makes a
folder a run of ours, the training lock, claiming a folder for a run and clearing it for
--overwrite, the paths of the end-of-task checkpoints and the fixed grid noise.
Read by main.py and joint.py, and by report.py and reproduce.py, which load no TensorFlow."""
import fcntl
import json
import os
import re
import shutil
import stat

import numpy as np

import utils
from utils import UsageError

CONFIG_FILE = 'config.json'
# In every config.json this project writes: only a folder whose config carries it is
# a run of ours, which --overwrite may delete and --resume may continue.
RUN_MARKER = {'project': 'mergan-tf2', 'format': 1}
FIXED_NOISE_FILE = 'fixed_noise.npy'
GRID_SIZE = 100  # images per sample grid: the fixed noise holds as many
RENAMED_KEYS = {'mode': 'method'}  # keys runs wrote before under another name


def renamed_keys(record):
    """A mapping from config.json or results.json with the older key names replaced."""
    return {RENAMED_KEYS.get(key, key): value for key, value in record.items()}


# --- config.json and the result folder ----------------------------------------

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


def newer_format(config):
    """The format number of a config.json a newer version of this project wrote, else None."""
    if not isinstance(config, dict) or config.get('project') != RUN_MARKER['project']:
        return None
    number = config.get('format')
    is_number = isinstance(number, int) and not isinstance(number, bool)
    return number if is_number and number > RUN_MARKER['format'] else None


def newer_format_message(path, number):
    return (f'{path} was written by a newer version of this project (format {number}); this version '
            f'reads format {RUN_MARKER["format"]}: update it. Nothing was changed there')


def write_config(result_path, config):
    utils.make_folder(result_path)
    utils.write_atomically(os.path.join(result_path, CONFIG_FILE),
                           lambda f: json.dump(config, f, indent=2, sort_keys=True))


LOCK_FILE = 'training.lock'


class RunLock:
    """An OS lock (flock) on the run folder, held for a whole training run, so that two
    trainings never share a folder. The kernel drops it when its process dies, so a
    killed run blocks no one. The file holds the holder's PID, for the messages.

    The lock file is never reached through a symbolic link and never truncated unless it is
    ours: a plain file with one name holding a PID or nothing. It cannot be written through
    a temporary file as other files are: a replaced file would be another lock."""

    def __init__(self, result_path):
        self.path = os.path.join(result_path, LOCK_FILE)
        self.file = None

    def acquire(self):
        try:
            utils.make_folder(os.path.dirname(self.path))
        except utils.WriteFailed as error:
            raise UsageError(f'--result_path: {error}') from None
        handle = self._open()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(self.path)
            handle.close()
            raise UsageError(f'{os.path.dirname(self.path)} is being trained by another process '
                             f'(PID {holder}); wait for it or stop it first') from None
        try:
            self._check_contents(handle)
            with utils.writing(self.path):
                os.ftruncate(handle.fileno(), 0)
                os.pwrite(handle.fileno(), f'{os.getpid()}\n'.encode(), 0)  # offset 0: the check moved on
        except (UsageError, utils.WriteFailed) as error:
            handle.close()
            raise UsageError(str(error)) from None
        self.file = handle
        return self

    def _open(self):
        """The lock file, opened without following a link and without truncating it."""
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            why = ('is a symbolic link' if os.path.islink(self.path) else 'is a folder' if os.path.isdir(self.path)
                   else f'cannot be opened ({error.strerror})')
            raise UsageError(f'{self.path} {why}: the lock file must be a plain file of its own; '
                             'move it away') from None
        handle = os.fdopen(descriptor, 'r+')
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
            handle.close()
            why = 'is not a plain file' if not stat.S_ISREG(status.st_mode) else 'has other names (hard links)'
            raise UsageError(f'{self.path} {why}: it may be another file than our lock; move it away')
        return handle

    def _check_contents(self, handle):
        if not re.fullmatch(r'\d*\n?', handle.read(64)):
            raise UsageError(f'{self.path} holds something other than a PID: it may be another file than '
                             'our lock; move it away')


def lock_holder(path):
    """The PID of the training that holds the run folder's lock, else None."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no lock file, or a link: no training of ours holds it
        return None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO would block a read
        os.close(descriptor)
        return None
    with os.fdopen(descriptor) as handle:
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
    if os.path.islink(result_path) and not os.path.exists(result_path):
        raise UsageError(f'--result_path {result_path} is a symbolic link that leads nowhere '
                         '(a missing target or a loop)')
    if os.path.exists(result_path) and not os.path.isdir(result_path):
        raise UsageError(f'--result_path {result_path} is a file, not a folder')
    if not os.path.exists(result_path) or not set(os.listdir(result_path)) - {LOCK_FILE}:
        return 'new'
    previous = read_config(result_path)
    if previous is None:
        raise UsageError(f'--result_path {result_path} is not empty and holds no {CONFIG_FILE}; '
                         'choose an empty or new folder')
    if newer_format(previous):
        raise UsageError(newer_format_message(f'--result_path {result_path}: its {CONFIG_FILE}',
                                              newer_format(previous)))
    if not is_run_config(previous):
        raise UsageError(f'--result_path {result_path} is not empty and its {CONFIG_FILE} was not written '
                         'by this project; nothing was changed there: choose an empty or new folder')
    if overwrite:
        return 'overwrite'

    if not resume:
        raise UsageError(f'--result_path {result_path} already holds a run; '
                         'add --resume to continue it or --overwrite to replace it')
    identity = previous.get('run', {})
    if not isinstance(identity, dict):
        raise UsageError(f'--resume: {result_path}/{CONFIG_FILE}: "run" is {json.dumps(identity)}, not an '
                         'object of the run\'s settings (edited by hand?); nothing was changed')
    saved = {**(absent_means or {}), **renamed_keys(identity)}
    differences = {key: (saved.get(key), value) for key, value in run_identity.items() if saved.get(key) != value}
    if differences:
        listed = ', '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in sorted(differences.items()))
        raise UsageError(f'--resume: {result_path} holds a different run ({listed})')
    return 'resume'


# What a run keeps in its folder: entries of the wrong kind stop it before it starts.
RUN_FOLDERS = ('checkpoints', 'checkpoints/latest', 'checkpoints/tasks', 'samples', 'logs', 'test')
RUN_FILES = (CONFIG_FILE, FIXED_NOISE_FILE, 'results.json', 'results.csv', 'accuracy_matrix.png',
             'mean_accuracy.png')


def misplaced_entry(result_path):
    """A message naming the first entry of the run folder that is of the wrong kind (a file
    where the run keeps a folder, or the reverse), else None."""
    for name in RUN_FOLDERS:
        path = os.path.join(result_path, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            return f'{path} is not a folder, but the run keeps its {name}/ there: move it away'
    for name in RUN_FILES:
        path = os.path.join(result_path, name)
        if os.path.isdir(path):
            return f'{path} is a folder, but the run keeps its {name} file there: move it away'
    return None


def inside(path, folder):
    """Whether `path` is `folder` or lies under it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_clearing_spares(result_path, given):
    """UsageError before --overwrite clears a run folder that holds a path the command line
    names ({flag: path or None}): the user's dataset, say, kept inside the run's folder."""
    doomed = [f'{flag} {path}' for flag, path in given.items() if path and inside(path, result_path)]
    if doomed:
        raise UsageError(f'--overwrite would delete {", ".join(doomed)}: it lies inside --result_path '
                         f'{result_path}. Move it out, or choose another --result_path; nothing was changed')


def clear_run_folder(result_path):
    """--overwrite, once claim_result_path found a run of ours and this process holds its lock."""
    for name in set(os.listdir(result_path)) - {LOCK_FILE}:
        path = os.path.join(result_path, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


# --- fixed noise and checkpoint paths ---------------------------------------------

def load_or_create_fixed_noise(result_path, seed, z_dim, count=GRID_SIZE):
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
    utils.make_folder(result_path)
    utils.write_atomically(path, lambda f: np.save(f, noise), binary=True)
    return noise


def holds_checkpoint(result_path):
    """Whether --resume has something to continue from: the latest checkpoint (the index file
    tf.train.CheckpointManager writes) or an end-of-task one."""
    checkpoints = os.path.join(result_path, 'checkpoints')
    if os.path.isfile(os.path.join(checkpoints, 'latest', 'checkpoint')):
        return True
    tasks = os.path.join(checkpoints, 'tasks')
    return os.path.isdir(tasks) and any(re.fullmatch(r'task_\d+\.index', name) for name in os.listdir(tasks))


def task_checkpoint_path(result_path, task_number):
    """The prefix of a task's end-of-task checkpoint (TensorFlow adds .index and .data-*);
    also read without TensorFlow, by report.py."""
    return os.path.join(result_path, 'checkpoints', 'tasks', f'task_{task_number}')
