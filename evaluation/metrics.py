"""Metrics for a class-conditional generator: generated-image accuracy (the paper's Table 1),
reverse accuracy and FID (Table 2), on the evaluation classifier of classifier.py or InceptionV3.

A generator is passed in as `generate(class_id, count) -> uint8 (n, H, W, C)` with n <= count;
every metric asks it once per class for all the images it needs. A sampler may return fewer
images than asked, even none (a DGR generator that never makes a class): accuracy still
divides by the count asked for, so such a class scores 0 instead of being skipped.
"""
import functools
from typing import Callable, NamedTuple, Optional

import numpy as np

import keras

from evaluation.classifier import extract_features, predict_labels, train_classifier


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


def generated_set(generate, classes, count):
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
    generated = generated_set(generate, classes, samples_per_class)
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
