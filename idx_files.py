"""The four IDX files of MNIST and Fashion-MNIST: read, checked, found in a folder, downloaded.

Both datasets ship as the same four IDX files, gzipped or not, holding 28x28 images and
labels 0..9, fetched from mirrors against published MD5s; they differ only in names,
mirrors, hashes and folders. What they share lives here so that data.py keeps just what
differs. Like data.py it imports no TensorFlow, and its errors are DataError (which data.py
re-exports) naming the file.
"""
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib

import numpy as np

MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',  # Fashion-MNIST's too
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dim
GZIP_MAGIC = b'\x1f\x8b'
DOWNLOAD_TIMEOUT_SECONDS = 30


class DataError(Exception):
    """A dataset file or folder is missing or malformed; the message names it."""


def _read_bytes_maybe_gzipped(path):
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f'{path}: cannot read ({e.strerror or e})') from e
    if raw[:2] != GZIP_MAGIC:  # detect gzip by content, not by suffix
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # a bad deflate body raises zlib.error
        raise DataError(f'{path}: corrupt or truncated gzip data ({e})') from e


def read_idx(path, expected_magic=None):
    """Read an IDX file of uint8 (gzipped or raw) into an array shaped as its header says."""
    path = os.path.abspath(path)
    data = _read_bytes_maybe_gzipped(path)
    if len(data) < 4:
        raise DataError(f'{path}: too short for an IDX header ({len(data)} bytes)')
    magic = int.from_bytes(data[:4], 'big')
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f'{path}: wrong IDX magic number 0x{magic:08x}, '
                        f'expected 0x{expected_magic:08x}')
    ndim = data[3]
    if data[:3] != b'\x00\x00\x08' or ndim == 0:
        raise DataError(f'{path}: not a uint8 IDX file (magic number 0x{magic:08x})')
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f'{path}: truncated IDX header')
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    expected_size = header_size + int(np.prod(dims))
    if len(data) != expected_size:
        raise DataError(f'{path}: {len(data)} bytes but header {dims} implies {expected_size} '
                        f'({"truncated" if len(data) < expected_size else "trailing data"})')
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def check_mnist_format_split(images, labels, images_path, labels_path):
    """MNIST's rules, which Fashion-MNIST shares: 28x28 images, one label per image, labels 0..9."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f'{images_path}: expected 28x28 images, got shape {images.shape}')
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f'{labels_path}: {labels.shape} labels for {len(images)} images '
                        f'in {images_path}')
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f'{labels_path}: labels must be 0..9, found {labels.min()}..{labels.max()}')


def find_idx_files(folder):
    """Path of each of MNIST_FILES (raw or .gz) in folder, or None where absent."""
    found = {}
    for name in MNIST_FILES:
        candidates = [os.path.join(folder, name + s) for s in ('', '.gz')]
        found[name] = next((p for p in candidates if os.path.isfile(p)), None)
    return found


def load_idx_splits(found):
    """[(images, labels)] for train then test from find_idx_files' paths; images (N, 28, 28)."""
    splits = []
    for prefix in ('train', 't10k'):
        images_path = found[f'{prefix}-images-idx3-ubyte']
        labels_path = found[f'{prefix}-labels-idx1-ubyte']
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        check_mnist_format_split(images, labels, images_path, labels_path)
        splits.append((images, labels))
    return splits


def _fetch(url, timeout):
    """Bytes at url; tests replace this to serve files from memory."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _write_atomically(path, payload):
    """Write to a temp name in the same folder, then rename: never a half file."""
    fd, temp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.partial-')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(payload)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def _fetch_verified(gz_name, mirrors, md5_by_name):
    """The file's bytes from the first mirror whose copy matches the MD5; else DataError."""
    failures = []
    for mirror in mirrors:
        try:
            payload = _fetch(mirror + gz_name, DOWNLOAD_TIMEOUT_SECONDS)
        except (OSError, http.client.HTTPException, ValueError) as e:
            failures.append(f'{mirror}: {e}')
            continue
        digest = hashlib.md5(payload).hexdigest()
        if digest == md5_by_name[gz_name]:
            return payload
        failures.append(f'{mirror}: MD5 {digest} does not match')
    raise DataError(f'{gz_name}: ' + ('; '.join(failures) or 'no mirrors configured'))


def download_idx_files(folder, mirrors, md5_by_name, missing_message):
    """Fetch each missing IDX .gz into folder with a checked MD5; returns paths written.

    missing_message(reason) words the DataError raised when a file cannot be had.
    """
    missing = [name for name, path in find_idx_files(folder).items() if path is None]
    written = []
    for name in missing:
        gz_name = name + '.gz'
        try:
            payload = _fetch_verified(gz_name, mirrors, md5_by_name)
        except DataError as e:
            raise DataError(missing_message(
                f'download from {len(mirrors)} mirror(s) failed ({e})')) from None
        os.makedirs(folder, exist_ok=True)
        written.append(os.path.join(folder, gz_name))
        _write_atomically(written[-1], payload)
    return written
