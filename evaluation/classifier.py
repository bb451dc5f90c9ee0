"""The evaluation classifier: a small CNN trained once per dataset on its real training split
and cached with what it was trained on, or the user's own Keras model (--eval_classifier).

Its labels score generated images and its penultimate layer gives the features of classifier
FID (metrics.py); reverse accuracy trains a fresh one on generated images.
"""
import contextlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

import keras
from keras import layers

import utils
# TF's public API can switch op determinism on but not back off; these internals exist in 2.9-2.21
from tensorflow.python.framework.config import (disable_op_determinism, enable_op_determinism,
                                                is_op_determinism_enabled)

CLASSIFIER_EPOCHS = 8
CLASSIFIER_SEED = 0
FEATURE_LAYER = 'features'
PREDICT_BATCH = 256


class EvaluationError(ValueError):
    """A classifier or weights file that evaluation cannot use; the message names the file."""


def first_line(error):
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
        print(f'cannot read cached classifier {model_path} ({first_line(error)}): retraining')
        return None


def load_user_model(path):
    """The Keras model in the user's file; EvaluationError naming the file if it holds none."""
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises unrelated types: BadZipFile, OSError, ValueError, KeyError
        raise EvaluationError(f'{path} is not a Keras model ({first_line(error)})') from error


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
    model = load_user_model(path)
    _check_fits_data(model, path, data)
    try:
        accuracy = float(np.mean(predict_labels(model, data.test_x) == data.test_y))
    except Exception as error:  # whatever the user's layers raise on real images
        raise EvaluationError(f'{path} fails on {data.name} test images ({first_line(error)})') from error
    identity = {'path': os.path.abspath(path), 'source': 'user', 'dataset': data.name,
                'epochs': None, 'test_accuracy': accuracy}
    return wrap_classifier(model, identity, accuracy)


def cache_paths(classifier_dir, dataset):
    """The cached classifier of a dataset and what it was trained on."""
    stem = os.path.join(classifier_dir, f'{dataset}_classifier')
    return stem + '.keras', stem + '.json'


def cache_problem(classifier_dir, dataset, retrain=False):
    """Why --classifier_dir could not keep the dataset's classifier, checked before --test
    starts, else None: under a file, a cache path that is a folder, or (when the classifier
    must be trained) a folder no file can be written in."""
    existing = classifier_dir
    while existing and not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if existing and not os.path.isdir(existing):
        return f'--classifier_dir {classifier_dir}: {existing} is not a folder'
    paths = cache_paths(classifier_dir, dataset)
    for path in paths:
        if os.path.isdir(path):
            return f'--classifier_dir: {path} is a folder, where the cached classifier keeps a file; move it away'
    if os.path.isdir(classifier_dir) and (retrain or not all(os.path.isfile(path) for path in paths)):
        problem = utils.writable_folder_problem(classifier_dir)
        if problem:
            return f'--classifier_dir: {problem}; the evaluation classifier is trained and kept there'
    return None


def _train_and_cache(data, model_path, info_path, signature):
    try:
        utils.make_folder(os.path.dirname(os.path.abspath(model_path)))
    except utils.WriteFailed as error:
        raise EvaluationError(f'--classifier_dir: {error}') from None
    problem = utils.writable_folder_problem(os.path.dirname(os.path.abspath(model_path)))
    if problem:  # before minutes of training
        raise EvaluationError(f'--classifier_dir: {problem}; the evaluation classifier is trained and kept there')
    start = time.perf_counter()
    model = train_classifier(data.train_x, data.train_y, data.num_classes, signature['epochs'],
                             signature['seed'])
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(predict_labels(model, data.test_x) == data.test_y))
    identity = {'path': os.path.abspath(model_path), 'source': 'trained', 'dataset': data.name,
                'epochs': signature['epochs'], 'seed': signature['seed'], 'test_accuracy': accuracy,
                'training_seconds': round(seconds, 1)}
    save_model(model, model_path)
    utils.write_atomically(info_path, lambda f: json.dump(
        {'identity': identity, 'signature': signature, 'provenance': data.provenance}, f, indent=2, default=str))
    print(f'evaluation classifier trained in {seconds:.0f}s: {100 * accuracy:.2f}% on real test images')
    return wrap_classifier(model, identity, accuracy)


def save_model(model, path):
    """Through a temporary file, as utils.write_atomically; Keras wants the .keras suffix on it."""
    temporary = f'{path[:-len(".keras")]}.{os.getpid()}.tmp.keras'
    try:
        with utils.writing(path):
            model.save(temporary)
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def load_or_train_classifier(data, classifier_dir, retrain=False, user_model_path=None,
                             epochs=CLASSIFIER_EPOCHS, seed=CLASSIFIER_SEED):
    """The evaluation classifier: the user's model, else the cached one, else trained and cached.

    EvaluationError (a ValueError) when the user's file is not a classifier for `data`.
    """
    if user_model_path:
        return _user_classifier(data, user_model_path)
    model_path, info_path = cache_paths(classifier_dir, data.name)
    signature = data_signature(data, epochs, seed)
    cached = None if retrain else _read_cache(model_path, info_path, signature)
    if cached is None:
        return _train_and_cache(data, model_path, info_path, signature)
    return wrap_classifier(*cached)
