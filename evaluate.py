"""Metrics for a class-conditional generator: generated-image accuracy (the paper's Table 1),
reverse accuracy and FID (Table 2), plus results.json/csv and the forgetting plots.

A generator is passed in as `generate(class_id, count) -> uint8 (n, H, W, C)` with n <= count;
every metric asks it once per class for all the images it needs. A sampler may return fewer
images than asked, even none (a DGR generator that never makes a class): accuracy still
divides by the count asked for, so such a class scores 0 instead of being skipped.
"""
import contextlib
import csv
import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

import keras
from keras import layers
# TF's public API can switch op determinism on but not back off; these internals exist in 2.9-2.21
from tensorflow.python.framework.config import (disable_op_determinism, enable_op_determinism,
                                                is_op_determinism_enabled)

CLASSIFIER_EPOCHS = 8
CLASSIFIER_SEED = 0
FEATURE_LAYER = 'features'
PREDICT_BATCH = 256


class EvaluationError(ValueError):
    """A classifier or weights file that evaluation cannot use; the message names the file."""


def add_evaluation_flags(parser):
    group = parser.add_argument_group('evaluation (--test)')
    group.add_argument('--eval_samples', type=int, default=6400,
                       help='generated images per class for accuracy (paper: 100 batches of 64)')
    group.add_argument('--reverse_samples', type=int, default=1000,
                       help='generated images per class to train the reverse classifier (0: skip)')
    group.add_argument('--reverse_epochs', type=int, default=3, help='epochs of the reverse classifier')
    group.add_argument('--fid_samples', type=int, default=1000,
                       help='images per class for FID, capped by the real test images of a class (0: skip)')
    group.add_argument('--eval_classifier', metavar='PATH',
                       help='your own Keras classifier (float32 NHWC in [-1, 1] -> class scores)')
    group.add_argument('--classifier_dir', default='classifiers',
                       help='cache of the trained evaluation classifier, one per dataset')
    group.add_argument('--retrain_classifier', action='store_true', help='retrain even if cached')
    group.add_argument('--inception_weights', metavar='PATH',
                       help='local InceptionV3 no-top weights file; adds Inception FID (needs --fid_samples)')
    group.add_argument('--export_samples', type=int, default=0, metavar='N',
                       help='save N generated images per seen class after each task (npz)')


def validate_evaluation_flags(args):
    """An error message for impossible evaluation flags, else None."""
    if args.eval_samples < 1:
        return f'--eval_samples must be at least 1, got {args.eval_samples}'
    for name in ('reverse_samples', 'fid_samples', 'export_samples'):
        if getattr(args, name) < 0:
            return f'--{name} must not be negative, got {getattr(args, name)}'
    if args.reverse_samples > 0 and args.reverse_epochs < 1:
        return f'--reverse_epochs must be at least 1, got {args.reverse_epochs}'
    if args.fid_samples == 1:
        return '--fid_samples must be 0 (skip) or at least 2: a covariance needs two images'
    if args.inception_weights is not None and args.fid_samples == 0:
        return '--inception_weights is for Inception FID, which --fid_samples 0 turns off'
    for name in ('eval_classifier', 'inception_weights'):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            return f'--{name}: no such file {path}'
    if os.path.exists(args.classifier_dir) and not os.path.isdir(args.classifier_dir):
        return f'--classifier_dir: {args.classifier_dir} exists and is not a folder'
    return None


def check_evaluation_files(args, network_builder=None):
    """An error message naming --eval_classifier or --inception_weights if it cannot be loaded, else None.

    Loads the classifier and builds InceptionV3 with the weights (a second or two each), so a
    wrong file stops the command before training or minutes of evaluation. Nothing is kept.
    """
    classifier_path = getattr(args, 'eval_classifier', None)
    if classifier_path:
        try:
            _load_user_model(classifier_path)
        except EvaluationError as error:
            return f'--eval_classifier: {error}'
    weights_path = getattr(args, 'inception_weights', None)
    if weights_path:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # wrong files warn per layer; the error says it once
                (network_builder or build_inception)(weights_path)
        except Exception as error:  # h5py, keras and the OS raise unrelated types for a bad file
            return f'--inception_weights: {weights_path} is not InceptionV3 no-top weights ({_first_line(error)})'
    return None


def _first_line(error):
    """'Type: first line of its message': keras errors can run to a page."""
    lines = str(error).strip().splitlines()
    return f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__


def to_float(images):
    """uint8 images -> float32 in [-1, 1], the models' input range."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


def build_classifier(image_shape, num_classes, seed=CLASSIFIER_SEED):
    """Three conv/pool blocks, a 128-unit feature layer (FID features), logits.

    No batch norm: its running statistics need more steps than a small reverse-accuracy
    training set gives, and predictions then depend on them.
    """
    def init(offset):
        return keras.initializers.GlorotUniform(seed=seed + offset)

    x = inputs = keras.Input(image_shape)
    for block, filters in enumerate((16, 32, 64)):
        x = layers.Conv2D(filters, 3, padding='same', activation='relu', kernel_initializer=init(block))(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation='relu', kernel_initializer=init(10), name=FEATURE_LAYER)(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    logits = layers.Dense(num_classes, kernel_initializer=init(11), name='logits')(x)
    return keras.Model(inputs, logits, name='eval_classifier')


@contextlib.contextmanager
def op_determinism():
    """Deterministic TF kernels inside, the caller's setting again after.

    A run's --deterministic switches op determinism on for the whole process, and it changes
    the classifier's weights (by about 3e-6 after two epochs): mnist_5k's classifier scored
    98.10% without it and 98.00% with it. Always on while training, it scores the same.
    """
    was_enabled = is_op_determinism_enabled()
    enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            disable_op_determinism()


def train_classifier(x_uint8, y, num_classes, epochs, seed, batch_size=64):
    """A fresh classifier trained on uint8 images, the same weights on every call.

    Every random source is seeded here (init, dropout, shuffling), so keras.utils.set_random_seed
    is not needed and the caller's global random state is left alone. Same weights means the same
    TensorFlow build and CPU thread count: the thread count changes the order of float sums.
    """
    model = build_classifier(x_uint8.shape[1:], num_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = to_float(x_uint8), np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    with op_determinism():
        for _ in range(epochs):
            order = rng.permutation(len(x))
            # batches by hand: fit's tf.data pipeline logs a TF error line under op determinism
            for start in range(0, len(x), batch_size):
                batch = order[start:start + batch_size]
                model.train_on_batch(x[batch], y[batch])
    return model


def predict_labels(model, x_uint8, batch_size=PREDICT_BATCH):
    """Arg-max class of each image; works for logits and probabilities alike."""
    labels = [np.argmax(model.predict_on_batch(to_float(x_uint8[i:i + batch_size])), axis=-1)
              for i in range(0, len(x_uint8), batch_size)]
    return np.concatenate(labels) if labels else np.zeros(0, np.int64)


def extract_features(model, x_uint8, batch_size=PREDICT_BATCH, preprocess=to_float):
    batches = [np.asarray(model.predict_on_batch(preprocess(x_uint8[i:i + batch_size])))
               for i in range(0, len(x_uint8), batch_size)]
    return np.concatenate(batches).reshape(len(x_uint8), -1).astype(np.float64)


@dataclass
class EvalClassifier:
    model: keras.Model
    features: keras.Model  # the penultimate layer's activations
    identity: dict          # path, source (trained/cached/user), dataset, epochs, test_accuracy
    test_accuracy: float


def wrap_classifier(model, identity=None, test_accuracy=None):
    """EvalClassifier around a model; features from the layer named 'features', else the penultimate."""
    names = [layer.name for layer in model.layers]
    feature_layer = model.get_layer(FEATURE_LAYER) if FEATURE_LAYER in names else model.layers[-2]
    features = keras.Model(model.inputs, feature_layer.output)
    return EvalClassifier(model, features, dict(identity or {}), test_accuracy)


def data_signature(data, epochs, seed):
    """What a cached classifier must have been trained on and how, to be reused."""
    counts = [int(c) for c in np.bincount(data.train_y, minlength=data.num_classes)]
    test_counts = [int(c) for c in np.bincount(data.test_y, minlength=data.num_classes)]
    # recipe: raise it when train_classifier's weights change (2: op determinism, batches by hand)
    return {'dataset': data.name, 'image_shape': list(data.image_shape), 'num_classes': data.num_classes,
            'train_per_class': counts, 'test_per_class': test_counts, 'epochs': epochs, 'seed': seed,
            'recipe': 2}


def _read_cache(model_path, info_path, signature):
    """(model, identity, test accuracy) of a sound cache for `signature`, else None."""
    if not (os.path.isfile(model_path) and os.path.isfile(info_path)):
        return None
    try:
        with open(info_path) as f:
            info = json.load(f)
        if info.get('signature') != signature:
            print(f'{model_path} was trained on other data or settings: retraining')
            return None
        model = keras.models.load_model(model_path, compile=False)
        identity = dict(info['identity'], source='cached', path=os.path.abspath(model_path))
        return model, identity, float(identity['test_accuracy'])
    except Exception as error:  # a cache is disposable: whatever stops it loading means retrain
        print(f'cannot read cached classifier {model_path} ({_first_line(error)}): retraining')
        return None


def _load_user_model(path):
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises unrelated types: BadZipFile, OSError, ValueError, KeyError
        raise EvaluationError(f'{path} is not a Keras model ({_first_line(error)})') from error


def _check_fits_data(model, path, data):
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise EvaluationError(f'{path} must take one image input and give one output, (batch, class scores)')
    takes, images = tuple(model.input_shape[1:]), tuple(data.image_shape)
    if len(takes) != len(images) or any(size not in (None, wanted) for size, wanted in zip(takes, images)):
        raise EvaluationError(f'{path} takes inputs of shape {takes}, {data.name} images are {images}')
    classes = model.output_shape[-1]
    if classes != data.num_classes:
        raise EvaluationError(f'{path} scores {classes} classes, {data.name} has {data.num_classes}')


def _user_classifier(data, path):
    model = _load_user_model(path)
    _check_fits_data(model, path, data)
    try:
        accuracy = float(np.mean(predict_labels(model, data.test_x) == data.test_y))
    except Exception as error:  # whatever the user's layers raise on real images
        raise EvaluationError(f'{path} fails on {data.name} test images ({_first_line(error)})') from error
    identity = {'path': os.path.abspath(path), 'source': 'user', 'dataset': data.name,
                'epochs': None, 'test_accuracy': accuracy}
    return wrap_classifier(model, identity, accuracy)


def _train_and_cache(data, model_path, info_path, signature):
    start = time.perf_counter()
    model = train_classifier(data.train_x, data.train_y, data.num_classes, signature['epochs'],
                             signature['seed'])
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(predict_labels(model, data.test_x) == data.test_y))
    identity = {'path': os.path.abspath(model_path), 'source': 'trained', 'dataset': data.name,
                'epochs': signature['epochs'], 'seed': signature['seed'], 'test_accuracy': accuracy,
                'training_seconds': round(seconds, 1)}
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    model.save(model_path)
    with open(info_path, 'w') as f:
        json.dump({'identity': identity, 'signature': signature, 'provenance': data.provenance}, f,
                  indent=2, default=str)
    print(f'evaluation classifier trained in {seconds:.0f}s: {100 * accuracy:.2f}% on real test images')
    return wrap_classifier(model, identity, accuracy)


def load_or_train_classifier(data, classifier_dir, retrain=False, user_model_path=None,
                             epochs=CLASSIFIER_EPOCHS, seed=CLASSIFIER_SEED):
    """The evaluation classifier: the user's model, else the cached one, else trained and cached.

    EvaluationError (a ValueError) when the user's file is not a classifier for `data`.
    """
    if user_model_path:
        return _user_classifier(data, user_model_path)
    model_path = os.path.join(classifier_dir, f'{data.name}_classifier.keras')
    info_path = os.path.join(classifier_dir, f'{data.name}_classifier.json')
    signature = data_signature(data, epochs, seed)
    cached = None if retrain else _read_cache(model_path, info_path, signature)
    if cached is None:
        return _train_and_cache(data, model_path, info_path, signature)
    return wrap_classifier(*cached)


def generate_class(generate, class_id, count):
    """Up to `count` images of a class in one call (a generator may reseed on every call).

    Fewer, even none, is allowed: a sampler that filters a generator's output by class (DGR)
    may not get them all. More than asked is a broken sampler.
    """
    images = np.asarray(generate(class_id, count))
    if images.ndim >= 1 and len(images) == 0:
        return np.zeros((0,) + images.shape[1:], np.uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) > count:
        raise ValueError(f'generate({class_id}, {count}) must return uint8 (n, H, W, C) with n <= {count}, '
                         f'got {images.dtype} {images.shape}')
    return images


def generated_accuracy_and_counts(generate, classes, classifier, samples_per_class, batch_size=64):
    """Per class: share of the `samples_per_class` asked for that are labelled as the class,
    and how many images came back."""
    accuracy, counts = {}, {}
    for class_id in classes:
        images = generate_class(generate, class_id, samples_per_class)
        predicted = predict_labels(classifier.model, images, batch_size)
        # divided by the count asked for: images never made count as wrong
        accuracy[int(class_id)] = float(np.count_nonzero(predicted == class_id)) / samples_per_class
        counts[int(class_id)] = len(images)
    return accuracy, counts


def generated_accuracy(generate, classes, classifier, samples_per_class, batch_size=64):
    """Share of each class's requested images that the classifier labels as that class."""
    return generated_accuracy_and_counts(generate, classes, classifier, samples_per_class, batch_size)[0]


def _real_test_images(data, classes):
    index = np.concatenate([np.flatnonzero(data.test_y == c) for c in classes])
    return data.test_x[index], data.test_y[index]


def _generated_set(generate, classes, count):
    """(images, labels): up to `count` generated images of each class; None if none came back."""
    parts = [(generate_class(generate, c, count), int(c)) for c in classes]
    parts = [(images, c) for images, c in parts if len(images)]
    if not parts:
        return None
    return (np.concatenate([images for images, _ in parts]),
            np.concatenate([np.full(len(images), c, np.int64) for images, c in parts]))


def reverse_accuracy(generate, classes, data, samples_per_class, epochs, seed):
    """Accuracy on real test images of `classes` of a classifier trained only on generated ones.

    Trained on whatever images came back; None when no class gave any.
    """
    generated = _generated_set(generate, classes, samples_per_class)
    if generated is None:
        return None
    model = train_classifier(*generated, data.num_classes, epochs, seed)
    real_x, real_y = _real_test_images(data, classes)
    return float(np.mean(predict_labels(model, real_x) == real_y))


def feature_statistics(features):
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_root(sigma):
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T  # round-off below 0 clipped


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the FID formula (Heusel et al. 2017).

    Tr((S1 S2)^1/2) is the nuclear norm of S1^1/2 S2^1/2 (its singular values are the roots of
    the eigenvalues of S1^1/2 S2 S1^1/2). Symmetric roots and an SVD stay real and silent when a
    covariance is singular (dead ReLU features), where scipy's sqrtm warns and goes complex.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    trace_root = np.linalg.norm(_psd_root(sigma1) @ _psd_root(sigma2), 'nuc')
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root
    return max(float(distance), 0.0)


class FeatureSpace(NamedTuple):
    extract: Callable          # uint8 images -> float64 (n, dimension)
    dimension: Optional[int]   # None: known only after extracting


def _feature_dimension(network):
    shape = network.output_shape[1:]
    return int(np.prod(shape)) if all(size is not None for size in shape) else None


def classifier_features(classifier):
    """The evaluation classifier's penultimate features."""
    network = classifier.features
    return FeatureSpace(lambda x: extract_features(network, x), _feature_dimension(network))


def inception_features(weights_path, network_builder=None):
    """InceptionV3 pool features; images resized to the network's input, grey tiled to RGB."""
    network = (network_builder or default_inception)(weights_path)
    height, width = network.input_shape[1:3]

    def preprocess(x_uint8):
        x = keras.ops.image.resize(np.asarray(x_uint8, np.float32), (height, width))
        if x.shape[-1] == 1:
            x = keras.ops.tile(x, (1, 1, 1, 3))
        return keras.applications.inception_v3.preprocess_input(x)

    return FeatureSpace(lambda x: extract_features(network, x, 32, preprocess), _feature_dimension(network))


def fid_images(generate, classes, data, samples_per_class):
    """(real, generated) uint8 images for FID, pooled over `classes`.

    Per class as many real test images as generated ones came back (at most `samples_per_class`
    and the real ones a class has), so both sets have the same class mix; classes with none are
    left out.
    """
    real, generated = [], []
    for class_id in classes:
        real_x = data.test_x[data.test_y == class_id][:samples_per_class]
        fake_x = generate_class(generate, class_id, len(real_x)) if len(real_x) else []
        if len(fake_x):
            real.append(real_x[:len(fake_x)])
            generated.append(fake_x)
    if not real:
        empty = np.zeros((0,) + tuple(data.image_shape), np.uint8)
        return empty, empty
    return np.concatenate(real), np.concatenate(generated)


def fid_or_reason(features, real_x, fake_x):
    """(FID, None), or (None, why) when there are too few images for the feature dimension.

    n images give a covariance of rank at most n - 1: with n <= dimension it is singular and the
    distance is noise (mnist_5k has 100 test images per class, the classifier 128 features).
    We report no number rather than project to fewer features: a reduced FID is another metric,
    not comparable across tasks, runs or the paper.
    """
    count = min(len(real_x), len(fake_x))
    if count == 0:
        return None, 'no generated images'
    real_features = features.extract(real_x) if features.dimension is None else None
    dimension = features.dimension or real_features.shape[1]
    if count <= dimension:
        return None, (f'{len(real_x)} real and {len(fake_x)} generated images for {dimension} features: '
                      f'a covariance needs more images than features')
    if real_features is None:
        real_features = features.extract(real_x)
    return frechet_distance(*feature_statistics(real_features),
                            *feature_statistics(features.extract(fake_x))), None


def classifier_fid(generate, classes, data, classifier, samples_per_class):
    """FID on the evaluation classifier's penultimate features, not Inception's; None if too few images."""
    return fid_or_reason(classifier_features(classifier),
                         *fid_images(generate, classes, data, samples_per_class))[0]


def build_inception(weights_path):
    return keras.applications.InceptionV3(include_top=False, weights=weights_path, pooling='avg',
                                          input_shape=(299, 299, 3))


default_inception = functools.lru_cache(maxsize=1)(build_inception)  # built once per run, not once per task


def inception_fid(generate, classes, data, weights_path, samples_per_class, network_builder=None):
    """FID on InceptionV3 pool features (2048: needs more than 2048 images); None if too few."""
    return fid_or_reason(inception_features(weights_path, network_builder),
                         *fid_images(generate, classes, data, samples_per_class))[0]


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, round(time.perf_counter() - start, 2)


def _class_shares(generate):
    """The sampler's `class_shares` (class -> share of its generated images), if it keeps one."""
    # a bound method does not pass attribute look-ups on to its object
    owner = getattr(generate, '__self__', None)
    shares = getattr(generate, 'class_shares', getattr(owner, 'class_shares', None))
    return None if shares is None else {str(c): float(share) for c, share in dict(shares).items()}


def _reverse_entry(generate, seen, data, args, not_computed):
    if args.reverse_samples == 0:
        return None, None
    if len(seen) == 1:
        # a classifier that only ever saw that class is trivially 100% right
        not_computed['reverse_accuracy'] = 'one seen class'
        return None, None
    reverse, seconds = _timed(reverse_accuracy, generate, seen, data, args.reverse_samples,
                              args.reverse_epochs, getattr(args, 'seed', 0))
    if reverse is None:
        not_computed['reverse_accuracy'] = 'no generated images to train on'
    return reverse, seconds


def _fid_entries(generate, seen, data, classifier, args, not_computed, samples):
    """(classifier FID, seconds), (Inception FID, seconds), both on the same images."""
    entries = {'classifier_fid': (None, None), 'inception_fid': (None, None)}
    if args.fid_samples == 0:
        return entries['classifier_fid'], entries['inception_fid']
    (real_x, fake_x), generating_s = _timed(fid_images, generate, seen, data, args.fid_samples)
    # asked per class: at most the real test images a class has (mnist_5k: 100)
    samples['fid_per_class'] = min([args.fid_samples] + [int(np.count_nonzero(data.test_y == c)) for c in seen])
    samples['fid_real_images'], samples['fid_generated_images'] = len(real_x), len(fake_x)
    spaces = {'classifier_fid': functools.partial(classifier_features, classifier)}
    if args.inception_weights:
        spaces['inception_fid'] = functools.partial(inception_features, args.inception_weights)

    def measure(space):  # building the network counts in its time
        return fid_or_reason(space(), real_x, fake_x)

    for name, space in spaces.items():
        (value, why), seconds = _timed(measure, space)
        entries[name] = (value, round(seconds + generating_s, 2))  # each pays the shared generation
        if why:
            not_computed[name] = why
    return entries['classifier_fid'], entries['inception_fid']


def evaluate_task(generate, task, seen_classes, data, classifier, args):
    """One results.json task record for the generator after `task`; prints a summary.

    'missing_classes': classes the sampler returned no image of (they score 0);
    'not_computed': why a metric is None when not by a flag; 'generated_class_share' is copied
    from the sampler's `class_shares` when it has one.
    """
    seen = [int(c) for c in seen_classes]
    (per_class, counts), accuracy_s = _timed(generated_accuracy_and_counts, generate, seen, classifier,
                                             args.eval_samples)
    not_computed = {}
    samples = {'accuracy_per_class': args.eval_samples, 'reverse_per_class': None, 'fid_per_class': None}
    reverse, reverse_s = _reverse_entry(generate, seen, data, args, not_computed)
    if reverse is not None:
        samples['reverse_per_class'] = args.reverse_samples
    (fid, fid_s), (inception, inception_s) = _fid_entries(generate, seen, data, classifier, args,
                                                         not_computed, samples)
    record = {'task': int(task), 'seen_classes': seen,
              'accuracy_per_class': {str(c): a for c, a in per_class.items()},
              'mean_accuracy': float(np.mean(list(per_class.values()))),
              'missing_classes': [c for c in seen if counts[c] == 0],
              'reverse_accuracy': reverse, 'classifier_fid': fid, 'inception_fid': inception,
              'not_computed': not_computed, 'samples': samples,
              'timing_s': {'accuracy': accuracy_s, 'reverse_accuracy': reverse_s,
                           'classifier_fid': fid_s, 'inception_fid': inception_s}}
    shares = _class_shares(generate)  # read last: a sampler may count as it generates
    if shares is not None:
        record['generated_class_share'] = shares
    print(format_task_summary(record, data.class_names))
    return record


def format_task_summary(record, class_names):
    def percent(value):
        return '–' if value is None else f'{100 * value:.1f}%'

    def number(value):
        return '–' if value is None else f'{value:.2f}'

    lines = [f"after task {record['task']}: accuracy of generated images per class"]
    names = {c: c if class_names[int(c)] == c else f'{c} {class_names[int(c)]}' for c in record['accuracy_per_class']}
    missing = {str(c) for c in record.get('missing_classes', [])}
    lines += [f'  {names[c]:>14}: {percent(a)}' + ('  (never generated)' if c in missing else '')
              for c, a in record['accuracy_per_class'].items()]
    lines.append(f"  mean {percent(record['mean_accuracy'])} | reverse accuracy "
                 f"{percent(record['reverse_accuracy'])} | classifier FID {number(record['classifier_fid'])}"
                 f" | Inception FID {number(record['inception_fid'])}")
    lines += [f'  {name} not computed: {why}' for name, why in record.get('not_computed', {}).items()]
    return '\n'.join(lines)


def export_samples(generate, seen_classes, count, path):
    """Save up to `count` generated uint8 images per seen class with their labels as an npz."""
    x, y = _generated_set(generate, seen_classes, count) or (np.zeros((0,), np.uint8), np.zeros(0, np.int64))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, x=x, y=y)


def write_results(result_path, run_info, task_records, classifier=None):
    """results.json, results.csv and the two plots; run_info must name 'dataset' and 'mode'.

    classifier: the EvalClassifier (or its identity dict) whose numbers these are.
    """
    if isinstance(classifier, EvalClassifier):
        classifier = dict(classifier.identity, test_accuracy=classifier.test_accuracy)
    results = {'dataset': run_info['dataset'], 'mode': run_info['mode'], 'run': dict(run_info),
               'classifier': classifier, 'tasks': list(task_records)}
    os.makedirs(result_path, exist_ok=True)
    with open(os.path.join(result_path, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2, default=str)
    with open(os.path.join(result_path, 'results.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['task', 'class', 'accuracy'])
        for record in task_records:
            for class_id, accuracy in record['accuracy_per_class'].items():
                writer.writerow([record['task'], class_id, f'{accuracy:.6f}'])
    plot_accuracy_matrix(task_records, os.path.join(result_path, 'accuracy_matrix.png'))
    plot_mean_accuracy(task_records, os.path.join(result_path, 'mean_accuracy.png'))


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy_matrix(task_records, path):
    """Rows: after task t; columns: class; blank where a class was not yet seen."""
    plt = _pyplot()
    classes = sorted({int(c) for r in task_records for c in r['accuracy_per_class']})
    matrix = np.full((len(task_records), len(classes)), np.nan)
    for row, record in enumerate(task_records):
        for c, accuracy in record['accuracy_per_class'].items():
            matrix[row, classes.index(int(c))] = 100 * accuracy
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.45 * len(task_records)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap='viridis', vmin=0, vmax=100, aspect='auto')
    for (row, col), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(col, row, f'{value:.0f}', ha='center', va='center', fontsize=7,
                    color='black' if value > 60 else 'white')
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    ax.set_yticks(range(len(task_records)), [str(r['task']) for r in task_records])
    ax.set_xlabel('class')
    ax.set_ylabel('after task')
    ax.set_title('accuracy of generated images (%)')
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mean_accuracy(task_records, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r['task'] for r in task_records], [100 * r['mean_accuracy'] for r in task_records],
            marker='o')
    ax.set_ylim(0, 100)
    ax.set_xlabel('after task')
    ax.set_ylabel('mean accuracy over seen classes (%)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
