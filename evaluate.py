"""Metrics for a class-conditional generator: generated-image accuracy (the paper's Table 1),
reverse accuracy and FID (Table 2), plus results.json/csv and the forgetting plots.

A generator is passed in as `generate(class_id, count) -> uint8 (count, H, W, C)`; every
metric asks it once per class for all the images it needs.
"""
import csv
import functools
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

import keras
from keras import layers

CLASSIFIER_EPOCHS = 8
CLASSIFIER_SEED = 0
FEATURE_LAYER = 'features'
PREDICT_BATCH = 256


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
    for name in ('eval_classifier', 'inception_weights'):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            return f'--{name}: no such file {path}'
    if os.path.exists(args.classifier_dir) and not os.path.isdir(args.classifier_dir):
        return f'--classifier_dir: {args.classifier_dir} exists and is not a folder'
    return None


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


def train_classifier(x_uint8, y, num_classes, epochs, seed, batch_size=64):
    """A fresh classifier trained on uint8 images; seeded init, dropout and shuffling."""
    model = build_classifier(x_uint8.shape[1:], num_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = to_float(x_uint8), np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        # our own shuffle, so the global random state of the caller is left alone
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
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
    return {'dataset': data.name, 'image_shape': list(data.image_shape), 'num_classes': data.num_classes,
            'train_per_class': counts, 'test_per_class': test_counts, 'epochs': epochs, 'seed': seed}


def _read_cache(model_path, info_path, signature):
    if not (os.path.isfile(model_path) and os.path.isfile(info_path)):
        return None
    try:
        with open(info_path) as f:
            info = json.load(f)
        if info.get('signature') != signature:
            print(f'{model_path} was trained on other data or settings: retraining')
            return None
        return keras.models.load_model(model_path, compile=False), info
    except (OSError, ValueError) as error:
        print(f'cannot read cached classifier {model_path} ({error}): retraining')
        return None


def _user_classifier(data, path):
    model = keras.models.load_model(path, compile=False)
    if model.output_shape[-1] != data.num_classes:
        raise ValueError(f'{path} scores {model.output_shape[-1]} classes, {data.name} has {data.num_classes}')
    accuracy = float(np.mean(predict_labels(model, data.test_x) == data.test_y))
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
    """The evaluation classifier: the user's model, else the cached one, else trained and cached."""
    if user_model_path:
        return _user_classifier(data, user_model_path)
    model_path = os.path.join(classifier_dir, f'{data.name}_classifier.keras')
    info_path = os.path.join(classifier_dir, f'{data.name}_classifier.json')
    signature = data_signature(data, epochs, seed)
    cached = None if retrain else _read_cache(model_path, info_path, signature)
    if cached is None:
        return _train_and_cache(data, model_path, info_path, signature)
    model, info = cached
    identity = dict(info['identity'], source='cached', path=os.path.abspath(model_path))
    return wrap_classifier(model, identity, identity['test_accuracy'])


def generate_class(generate, class_id, count):
    """All `count` images of a class in one call (a generator may reseed on every call)."""
    images = np.asarray(generate(class_id, count))
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count:
        raise ValueError(f'generate({class_id}, {count}) must return uint8 (count, H, W, C), '
                         f'got {images.dtype} {images.shape}')
    return images


def generated_accuracy(generate, classes, classifier, samples_per_class, batch_size=64):
    """Share of each class's generated images that the classifier labels as that class."""
    accuracy = {}
    for class_id in classes:
        images = generate_class(generate, class_id, samples_per_class)
        predicted = predict_labels(classifier.model, images, batch_size)
        accuracy[int(class_id)] = float(np.count_nonzero(predicted == class_id)) / samples_per_class
    return accuracy


def _real_test_images(data, classes, per_class=None):
    """Real test images of the given classes, the first `per_class` of each when given."""
    parts = [np.flatnonzero(data.test_y == c)[:per_class] for c in classes]
    index = np.concatenate(parts)
    return data.test_x[index], data.test_y[index]


def reverse_accuracy(generate, classes, data, samples_per_class, epochs, seed):
    """Accuracy on real test images of `classes` of a classifier trained only on generated ones."""
    x = np.concatenate([generate_class(generate, c, samples_per_class) for c in classes])
    y = np.repeat(np.asarray(classes, dtype=np.int64), samples_per_class)
    model = train_classifier(x, y, data.num_classes, epochs, seed)
    real_x, real_y = _real_test_images(data, classes)
    return float(np.mean(predict_labels(model, real_x) == real_y))


def feature_statistics(features):
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the FID formula (Heusel et al. 2017)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # singular product: nudge both covariances, as the reference FID code does
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # imaginary parts are round-off of a real PSD root
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return max(float(distance), 0.0)


def _fid(features_of, generate, classes, data, samples_per_class):
    """FID between real test images of `classes` and as many generated ones per class."""
    real_x, real_y = _real_test_images(data, classes, samples_per_class)
    counts = [int(np.count_nonzero(real_y == c)) for c in classes]
    fake_x = np.concatenate([generate_class(generate, c, n) for c, n in zip(classes, counts)])
    return frechet_distance(*feature_statistics(features_of(real_x)),
                            *feature_statistics(features_of(fake_x)))


def classifier_fid(generate, classes, data, classifier, samples_per_class):
    """FID on the evaluation classifier's penultimate features, not Inception's."""
    return _fid(lambda x: extract_features(classifier.features, x), generate, classes, data,
                samples_per_class)


@functools.lru_cache(maxsize=1)  # built once per run, not once per task
def default_inception(weights_path):
    return keras.applications.InceptionV3(include_top=False, weights=weights_path, pooling='avg',
                                          input_shape=(299, 299, 3))


def inception_fid(generate, classes, data, weights_path, samples_per_class, network_builder=None):
    """FID on InceptionV3 pool features; images resized to the network's input, grey tiled to RGB."""
    network = (network_builder or default_inception)(weights_path)
    height, width = network.input_shape[1:3]

    def preprocess(x_uint8):
        x = keras.ops.image.resize(np.asarray(x_uint8, np.float32), (height, width))
        if x.shape[-1] == 1:
            x = keras.ops.tile(x, (1, 1, 1, 3))
        return keras.applications.inception_v3.preprocess_input(x)

    return _fid(lambda x: extract_features(network, x, 32, preprocess), generate, classes, data,
                samples_per_class)


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, round(time.perf_counter() - start, 2)


def evaluate_task(generate, task, seen_classes, data, classifier, args):
    """One results.json task record for the generator after `task`; prints a summary."""
    seen = [int(c) for c in seen_classes]
    per_class, accuracy_s = _timed(generated_accuracy, generate, seen, classifier, args.eval_samples)
    reverse = reverse_s = None
    # one seen class: a classifier that only ever saw that class is trivially 100% right
    if len(seen) > 1 and args.reverse_samples > 0:
        reverse, reverse_s = _timed(reverse_accuracy, generate, seen, data, args.reverse_samples,
                                    args.reverse_epochs, getattr(args, 'seed', 0))
    fid = fid_s = inception = inception_s = None
    if args.fid_samples > 0:
        fid, fid_s = _timed(classifier_fid, generate, seen, data, classifier, args.fid_samples)
        if args.inception_weights:
            inception, inception_s = _timed(inception_fid, generate, seen, data, args.inception_weights,
                                            args.fid_samples)
    # FID uses at most the real test images a class has (mnist_5k: 100)
    fid_per_class = min([args.fid_samples] + [int(np.count_nonzero(data.test_y == c)) for c in seen])
    record = {'task': int(task), 'seen_classes': seen,
              'accuracy_per_class': {str(c): a for c, a in per_class.items()},
              'mean_accuracy': float(np.mean(list(per_class.values()))),
              'reverse_accuracy': reverse, 'classifier_fid': fid, 'inception_fid': inception,
              'samples': {'accuracy_per_class': args.eval_samples,
                          'reverse_per_class': args.reverse_samples if reverse is not None else None,
                          'fid_per_class': fid_per_class if fid is not None else None},
              'timing_s': {'accuracy': accuracy_s, 'reverse_accuracy': reverse_s,
                           'classifier_fid': fid_s, 'inception_fid': inception_s}}
    print(format_task_summary(record, data.class_names))
    return record


def format_task_summary(record, class_names):
    def percent(value):
        return '–' if value is None else f'{100 * value:.1f}%'

    def number(value):
        return '–' if value is None else f'{value:.2f}'

    lines = [f"after task {record['task']}: accuracy of generated images per class"]
    names = {c: c if class_names[int(c)] == c else f'{c} {class_names[int(c)]}' for c in record['accuracy_per_class']}
    lines += [f'  {names[c]:>14}: {percent(a)}' for c, a in record['accuracy_per_class'].items()]
    lines.append(f"  mean {percent(record['mean_accuracy'])} | reverse accuracy "
                 f"{percent(record['reverse_accuracy'])} | classifier FID {number(record['classifier_fid'])}"
                 f" | Inception FID {number(record['inception_fid'])}")
    return '\n'.join(lines)


def export_samples(generate, seen_classes, count, path):
    """Save `count` generated uint8 images per seen class with their labels as an npz."""
    x = np.concatenate([generate_class(generate, c, count) for c in seen_classes])
    y = np.repeat(np.asarray(seen_classes, dtype=np.int64), count)
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
