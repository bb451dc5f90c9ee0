"""Small shared pieces without TensorFlow at import: CLI errors and number flags, writing
files with a clear error, image grids, TensorBoard scalars and progress lines. No method
logic and no run-folder rules here (run_folder.py has those)."""
import argparse
import contextlib
import math
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image


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


def write_atomically(path, write, binary=False):
    """Writes `path` through a temporary file beside it and os.replace: a reader, or a process
    killed or out of space mid-write, finds the old file or the new one, never half of one.
    write(file) writes the content; WriteFailed names `path`."""
    temporary = f'{path}.{os.getpid()}.tmp'  # per process: two --test at once never share one
    try:
        with writing(path), open(temporary, 'wb' if binary else 'w') as f:
            write(f)
        with writing(path):
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def why_no_folder(path, error):
    """Why os.makedirs(path) failed, in words: the part of the path in the way, or the OS's reason."""
    existing = path
    while existing and not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if existing and os.path.islink(existing) and not os.path.exists(existing):
        return f'{existing} is a symbolic link that leads nowhere (a missing target or a loop)'
    if existing and not os.path.isdir(existing):
        return f'{existing} is a file, not a folder'
    return f'{path} cannot be created ({error.strerror or error})'


def make_folder(path):
    """os.makedirs(path, exist_ok=True); WriteFailed saying what stands in the way."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise WriteFailed(why_no_folder(path, error)) from error


def writable_folder_problem(folder):
    """Why no file can be created in an existing folder (read-only, full), else None."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return f'cannot write in {folder} ({error.strerror or error})'


def exit_with_usage_error(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


# --- number flags (argparse types) ---

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None


def positive_float(text):
    """A finite number above 0: an infinite or NaN factor would train on NaN."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be greater than 0 and finite, got {text}')
    return value


def unit_float(text):
    """A number from 0 to 1, both included."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be between 0 and 1, got {text}')
    return value


# --- image grids -------------------------------------------------------------------

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
    make_folder(os.path.dirname(path) or '.')
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    write_atomically(path, lambda f: image.save(f, format='PNG'), binary=True)


# --- TensorBoard and progress ---------------------------------------------------------

class ScalarLog:
    def __init__(self, log_dir):
        import tensorflow as tf
        self._tf = tf
        with writing(log_dir):  # TensorFlow's errors (logs is a file) become WriteFailed
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
