import csv
import json
import random
import shutil
import time
import warnings

import numpy as np
import pytest

import keras
import tensorflow as tf
from keras import layers

from data import ImageSet
from evaluation import classifier as evaluation_classifier
from evaluation import evaluate, metrics
from evaluation import results as evaluation_results
from training import sampling
from helpers import constant_image_set, constant_images, evaluation_args, level, mean_pixel_classifier
from tensorflow.python.framework.config import disable_op_determinism, is_op_determinism_enabled

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


# ---------------------------------------------------------------- real classifier on mnist_5k

@pytest.fixture(scope='session')
def trained(mnist_5k, tmp_path_factory):
    folder = tmp_path_factory.mktemp('classifiers')
    start = time.perf_counter()
    classifier = evaluation_classifier.load_or_train_classifier(mnist_5k, str(folder))
    print(f'\nmnist_5k classifier: {100 * classifier.test_accuracy:.2f}% held out, '
          f'trained in {time.perf_counter() - start:.1f}s')
    return classifier, folder


def test_classifier_reaches_target_on_held_out_mnist_5k(trained, mnist_5k):
    classifier, folder = trained
    assert classifier.identity['source'] == 'trained'
    assert classifier.test_accuracy >= 0.96
    recomputed = np.mean(evaluation_classifier.predict_labels(classifier.model, mnist_5k.test_x) == mnist_5k.test_y)
    assert recomputed == pytest.approx(classifier.test_accuracy)
    assert (folder / 'mnist_5k_classifier.keras').stat().st_size > 0
    saved = json.loads((folder / 'mnist_5k_classifier.json').read_text())
    assert saved['identity']['test_accuracy'] == classifier.test_accuracy
    assert saved['provenance']['test_per_class'] == [100] * 10


def test_second_call_loads_cache_without_training(trained, mnist_5k, monkeypatch):
    classifier, folder = trained

    def no_training(*args, **kwargs):
        raise AssertionError('retrained although cached')

    monkeypatch.setattr(evaluation_classifier, 'train_classifier', no_training)
    cached = evaluation_classifier.load_or_train_classifier(mnist_5k, str(folder))
    assert cached.identity['source'] == 'cached'
    assert cached.test_accuracy == classifier.test_accuracy
    images = mnist_5k.test_x[:64]
    np.testing.assert_allclose(cached.model.predict_on_batch(evaluation_classifier.to_float(images)),
                               classifier.model.predict_on_batch(evaluation_classifier.to_float(images)), atol=1e-5)
    assert cached.features.output_shape == (None, 128)


def test_cache_for_other_data_or_retrain_flag_trains_again(trained, mnist_5k, monkeypatch, tmp_path):
    _, folder = trained
    calls = []

    def quick_training(x, y, num_classes, epochs, seed, batch_size=64):
        calls.append(len(x))
        return evaluation_classifier.build_classifier(x.shape[1:], num_classes)

    monkeypatch.setattr(evaluation_classifier, 'train_classifier', quick_training)
    copy = tmp_path / 'classifiers'
    shutil.copytree(folder, copy)  # the shared cache stays as it is
    fewer = ImageSet('mnist_5k', mnist_5k.train_x[:100], mnist_5k.train_y[:100], mnist_5k.test_x, mnist_5k.test_y,
                     mnist_5k.class_names, mnist_5k.provenance)
    assert evaluation_classifier.load_or_train_classifier(fewer, str(copy)).identity['source'] == 'trained'
    assert evaluation_classifier.load_or_train_classifier(mnist_5k, str(copy), retrain=True).identity['source'] == 'trained'
    assert calls == [100, len(mnist_5k.train_x)]


def test_user_classifier_file_is_used(tmp_path):
    data = constant_image_set()
    path = tmp_path / 'mine.keras'
    mean_pixel_classifier(3).model.save(path)
    user = evaluation_classifier.load_or_train_classifier(data, str(tmp_path / 'unused'), user_model_path=str(path))
    assert user.identity['source'] == 'user'
    assert user.test_accuracy == 1.0
    mean_pixel_classifier(10).model.save(tmp_path / 'ten.keras')
    with pytest.raises(ValueError, match='scores 10 classes, standin has 3'):
        evaluation_classifier.load_or_train_classifier(data, str(tmp_path), user_model_path=str(tmp_path / 'ten.keras'))


def classifier_weights(model):
    return [w.copy() for w in model.get_weights()]


def test_classifier_training_is_reproducible_and_leaves_global_random_state(mnist_5k):
    x, y = mnist_5k.train_x[:500], mnist_5k.train_y[:500]
    keras.utils.set_random_seed(5)
    first = classifier_weights(evaluation_classifier.train_classifier(x, y, 10, 1, seed=3))
    after_training = (random.random(), np.random.rand(), float(keras.random.uniform(())))
    keras.utils.set_random_seed(5)
    assert after_training == (random.random(), np.random.rand(), float(keras.random.uniform(())))
    keras.utils.set_random_seed(99)  # the caller's seeds do not reach the classifier
    second = classifier_weights(evaluation_classifier.train_classifier(x, y, 10, 1, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other_seed = classifier_weights(evaluation_classifier.train_classifier(x, y, 10, 1, seed=4))
    assert not np.array_equal(first[0], other_seed[0])


def test_classifier_weights_do_not_depend_on_the_callers_op_determinism(mnist_5k):
    x, y = mnist_5k.train_x[:1000], mnist_5k.train_y[:1000]
    plain = classifier_weights(evaluation_classifier.train_classifier(x, y, 10, 2, seed=0))
    assert not is_op_determinism_enabled()  # switched on only while training
    tf.config.experimental.enable_op_determinism()  # what a run's --deterministic does, for good
    try:
        deterministic = classifier_weights(evaluation_classifier.train_classifier(x, y, 10, 2, seed=0))
        assert is_op_determinism_enabled()  # the caller's setting is kept
    finally:
        disable_op_determinism()
    assert all(np.array_equal(a, b) for a, b in zip(plain, deterministic))


# ---------------------------------------------------------------- generated accuracy

def test_generated_accuracy_is_the_exact_share_labelled_right():
    def generate(class_id, count):
        if class_id == 2:  # three quarters right, the rest look like class 5
            return np.concatenate([constant_images(2, count * 3 // 4), constant_images(5, count // 4)])
        if class_id == 7:  # all wrong
            return constant_images(3, count)
        return constant_images(class_id, count)

    accuracy = metrics.generated_accuracy(generate, [0, 2, 7], mean_pixel_classifier(), 100, batch_size=64)
    assert accuracy == {0: 1.0, 2: 0.75, 7: 0.0}


def test_generator_with_wrong_output_is_refused():
    # fewer images than asked is allowed (a DGR sampler); more is not
    with pytest.raises(ValueError, match='uint8'):
        metrics.generated_accuracy(lambda c, n: constant_images(c, n + 1), [0], mean_pixel_classifier(), 10)
    with pytest.raises(ValueError, match='uint8'):
        metrics.generated_accuracy(lambda c, n: constant_images(c, n) / 255.0, [0], mean_pixel_classifier(), 10)


# ---------------------------------------------------------------- reverse accuracy

def test_reverse_accuracy_high_on_real_images_near_chance_on_noise(mnist_5k):
    classes = [1, 4, 7]

    def real(class_id, count):
        return mnist_5k.train_x[mnist_5k.train_y == class_id][:count]

    def noise(class_id, count):
        rng = np.random.default_rng(class_id)
        return rng.integers(0, 256, (count,) + mnist_5k.image_shape, dtype=np.uint8)

    def next_class(class_id, count):  # real digits under the wrong label
        return real(classes[(classes.index(class_id) + 1) % 3], count)

    assert metrics.reverse_accuracy(real, classes, mnist_5k, 200, epochs=3, seed=0) > 0.9
    assert metrics.reverse_accuracy(next_class, classes, mnist_5k, 200, epochs=3, seed=0) < 0.1
    # noise teaches nothing about digits: chance is 1/3, but which digit lands on which label
    # is arbitrary (0.25..0.40 over seeds 0-3), so the bound leaves room above chance
    assert metrics.reverse_accuracy(noise, classes, mnist_5k, 200, epochs=3, seed=0) < 0.5


# ---------------------------------------------------------------- Frechet distance

def independent_frechet(x, y):
    """FID via the symmetric root S1^1/2 S2 S1^1/2, whose trace-root equals Tr((S1 S2)^1/2)."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    values, vectors = np.linalg.eigh(s_x)
    root_x = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.clip(np.linalg.eigvalsh(root_x @ s_y @ root_x), 0, None)
    return np.sum((mu_x - mu_y) ** 2) + np.trace(s_x) + np.trace(s_y) - 2 * np.sum(np.sqrt(inner))


def test_frechet_distance_zero_for_identical_and_growing_with_shift():
    features = np.random.default_rng(0).normal(size=(200, 6))
    stats = metrics.feature_statistics(features)
    assert abs(metrics.frechet_distance(*stats, *stats)) < 1e-6
    distances = [metrics.frechet_distance(*stats, *metrics.feature_statistics(features + shift))
                 for shift in (0.1, 0.5, 1.0, 2.0)]
    assert all(d > 0 for d in distances)
    assert distances == sorted(distances)
    assert distances[-1] == pytest.approx(6 * 2.0 ** 2, rel=1e-6)  # a pure shift adds ||d||^2


def test_frechet_distance_agrees_with_independent_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    y = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.3
    fid = metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y))
    assert fid == pytest.approx(independent_frechet(x, y), rel=1e-6)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    assert metrics.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4 + 1)


def test_classifier_fid_zero_on_real_images_and_balanced_counts():
    data = constant_image_set(per_class=10)
    classifier = mean_pixel_classifier(3)
    asked = []

    def real(class_id, count):
        asked.append((class_id, count))
        return data.test_x[data.test_y == class_id][:count]

    assert metrics.classifier_fid(real, [0, 2], data, classifier, 1000) < 1e-6
    assert asked == [(0, 10), (2, 10)]  # capped at the real test images of each class
    asked.clear()
    darker = metrics.classifier_fid(lambda c, n: real(c, n) // 2, [0, 2], data, classifier, 5)
    assert asked == [(0, 5), (2, 5)] and darker > 0.01


def test_inception_fid_with_injected_network():
    data = constant_image_set(per_class=6, size=12)
    built_with = []

    def tiny_network(weights_path):
        built_with.append(weights_path)
        inputs = keras.Input((8, 8, 3))
        mean = layers.GlobalAveragePooling2D()(inputs)
        dense = layers.Dense(1, use_bias=False)
        feature = dense(mean)
        dense.set_weights([np.full((3, 1), 1 / 3, np.float32)])  # mean pixel of the RGB image
        return keras.Model(inputs, feature)

    def shifted(class_id, count):
        return np.clip(data.test_x[data.test_y == class_id][:count].astype(int) + 40, 0, 255).astype(np.uint8)

    fid = metrics.inception_fid(shifted, [0, 1], data, 'weights.h5', 6, network_builder=tiny_network)
    assert built_with == ['weights.h5']
    # resizing and tiling are linear, so +40 grey levels shift every feature by 40 / 127.5
    # after Inception's preprocessing: a pure shift of the mean
    assert fid == pytest.approx((40 / 127.5) ** 2, rel=1e-4)


def test_frechet_distance_is_silent_and_right_on_singular_covariances():
    rng = np.random.default_rng(2)
    x, y = np.zeros((60, 8)), np.zeros((60, 8))  # three dead features, as dead ReLU units give
    x[:, :5] = rng.normal(size=(60, 5))
    y[:, :5] = rng.normal(size=(60, 5)) * 1.5 + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        fid = metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y))
    assert fid == pytest.approx(independent_frechet(x, y), rel=1e-6)


def test_fid_on_mnist_5k_needs_more_images_than_features_and_never_warns(trained, mnist_5k, capsys):
    classifier, _ = trained
    args = evaluation_args(eval_samples=10, reverse_samples=0, fid_samples=1000)

    def train_images(class_id, count):  # other real digits stand in for generated ones
        return mnist_5k.train_x[mnist_5k.train_y == class_id][:count]

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        one = evaluate.evaluate_task(train_images, 1, [0], mnist_5k, classifier, args)
        two = evaluate.evaluate_task(train_images, 2, [0, 1], mnist_5k, classifier, args)
    # one class: 100 test images for 128 features, a singular covariance
    assert one['classifier_fid'] is None
    assert one['not_computed']['classifier_fid'].startswith('100 real and 100 generated images for 128 features')
    assert (one['samples']['fid_real_images'], one['samples']['fid_generated_images']) == (100, 100)
    assert 'classifier_fid not computed: 100 real' in capsys.readouterr().out
    assert two['classifier_fid'] > 0 and two['not_computed'] == {}
    assert (two['samples']['fid_real_images'], two['samples']['fid_generated_images']) == (200, 200)


# ---------------------------------------------------------------- samplers that return fewer images (DGR)

class PartialSampler(sampling.Sampler):
    """Like a DGR sampler: class 0 in full, class 1 at half the count asked, class 2 never."""
    class_shares = {0: 0.7, 1: 0.3, 2: 0.0}

    def __call__(self, class_id, count):
        return constant_images(class_id, {0: count, 1: count // 2, 2: 0}[class_id])


def test_accuracy_divides_by_the_count_asked_for():
    accuracy = metrics.generated_accuracy(PartialSampler(), [0, 1, 2], mean_pixel_classifier(3), 64)
    assert accuracy == {0: 1.0, 1: 0.5, 2: 0.0}


def test_reverse_accuracy_trains_on_the_images_that_came_back(monkeypatch):
    data = constant_image_set()
    trained_on = []
    train_classifier = metrics.train_classifier

    def counting(x, y, *args):
        trained_on.append(np.bincount(y, minlength=3).tolist())
        return train_classifier(x, y, *args)

    monkeypatch.setattr(metrics, 'train_classifier', counting)
    accuracy = metrics.reverse_accuracy(PartialSampler(), [0, 1, 2], data, 20, epochs=1, seed=0)
    assert trained_on == [[20, 10, 0]] and 0.0 <= accuracy <= 1.0
    assert metrics.reverse_accuracy(lambda c, n: constant_images(c, 0), [0, 1], data, 20, 1, 0) is None


def test_fid_takes_as_many_real_images_per_class_as_came_back():
    data = constant_image_set(per_class=10)
    real_x, fake_x = metrics.fid_images(PartialSampler(), [0, 1, 2], data, 6)
    labels = mean_pixel_classifier(3)
    assert np.bincount(evaluation_classifier.predict_labels(labels.model, real_x), minlength=3).tolist() == [6, 3, 0]
    assert np.bincount(evaluation_classifier.predict_labels(labels.model, fake_x), minlength=3).tolist() == [6, 3, 0]


def test_task_record_of_a_partial_sampler(capsys):
    data = constant_image_set(per_class=10)
    args = evaluation_args(eval_samples=64, reverse_samples=20, reverse_epochs=1, fid_samples=6)
    record = evaluate.evaluate_task(PartialSampler(), 3, [0, 1, 2], data, mean_pixel_classifier(3), args)
    assert record['accuracy_per_class'] == {'0': 1.0, '1': 0.5, '2': 0.0} and record['mean_accuracy'] == 0.5
    assert record['missing_classes'] == [2]
    assert record['generated_class_share'] == {'0': 0.7, '1': 0.3, '2': 0.0}
    assert (record['samples']['fid_real_images'], record['samples']['fid_generated_images']) == (9, 9)
    assert record['reverse_accuracy'] is not None and record['classifier_fid'] is not None
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if 'never generated' in line] == ['            2 c2: 0.0%  (never generated)']

    nothing = evaluate.evaluate_task(lambda c, n: constant_images(c, 0), 3, [0, 1, 2], data,
                                     mean_pixel_classifier(3), args)
    assert nothing['missing_classes'] == [0, 1, 2] and nothing['mean_accuracy'] == 0.0
    assert nothing['reverse_accuracy'] is None and nothing['classifier_fid'] is None
    assert nothing['not_computed'] == {'reverse_accuracy': 'no generated images to train on',
                                       'classifier_fid': 'no generated images'}
    assert 'generated_class_share' not in nothing  # a plain function keeps no shares


def test_export_samples_of_a_partial_sampler(tmp_path):
    path = tmp_path / 'samples.npz'
    evaluation_results.export_samples(PartialSampler(), [0, 1, 2], 4, str(path))
    saved = np.load(path)
    assert saved['x'].shape == (6, 8, 8, 1) and saved['y'].tolist() == [0, 0, 0, 0, 1, 1]


# ---------------------------------------------------------------- task record, files

def test_evaluate_task_record_follows_schema(capsys):
    data = constant_image_set(size=8)
    args = evaluation_args(eval_samples=64, reverse_samples=20, reverse_epochs=1, fid_samples=5)
    record = evaluate.evaluate_task(constant_images, 2, [0, 1], data, mean_pixel_classifier(3), args)
    assert set(record) == {'task', 'seen_classes', 'accuracy_per_class', 'mean_accuracy', 'reverse_accuracy',
                           'classifier_fid', 'inception_fid', 'samples', 'timing_s',
                           'missing_classes', 'not_computed'}
    assert record['missing_classes'] == [] and record['not_computed'] == {}
    assert record['accuracy_per_class'] == {'0': 1.0, '1': 1.0} and record['mean_accuracy'] == 1.0
    assert 0.0 <= record['reverse_accuracy'] <= 1.0 and record['classifier_fid'] >= 0
    assert record['inception_fid'] is None and record['timing_s']['inception_fid'] is None
    assert record['samples'] == {'accuracy_per_class': 64, 'reverse_per_class': 20, 'fid_per_class': 5,
                                 'fid_real_images': 10, 'fid_generated_images': 10}
    assert 'mean 100.0%' in capsys.readouterr().out
    single = evaluate.evaluate_task(constant_images, 1, [0], data, mean_pixel_classifier(3), args)
    assert single['reverse_accuracy'] is None and single['timing_s']['reverse_accuracy'] is None
    assert single['not_computed'] == {'reverse_accuracy': 'one seen class'}


def fake_record(task, accuracies):
    per_class = {str(c): a for c, a in enumerate(accuracies)}
    return {'task': task, 'seen_classes': list(range(len(accuracies))), 'accuracy_per_class': per_class,
            'mean_accuracy': float(np.mean(accuracies)), 'reverse_accuracy': None if task == 1 else 0.5,
            'classifier_fid': 1.5, 'inception_fid': None,
            'samples': {'accuracy_per_class': 64, 'reverse_per_class': 10, 'fid_per_class': 10},
            'timing_s': {'accuracy': 0.1, 'reverse_accuracy': 0.2, 'classifier_fid': 0.3, 'inception_fid': None}}


def test_write_results_json_csv_and_plots(tmp_path):
    records = [fake_record(1, [0.9]), fake_record(2, [0.5, 0.8]), fake_record(3, [0.25, 0.5, 0.75])]
    identity = {'source': 'cached', 'dataset': 'mnist_5k', 'test_accuracy': 0.97}
    run_info = {'dataset': 'mnist_5k', 'method': 'ra', 'label': 'MeRGAN-RA', 'seed': 3, 'RA_factor': 1e-3}
    evaluation_results.write_results(str(tmp_path), run_info, records, classifier=identity)
    results = json.loads((tmp_path / 'results.json').read_text())
    assert list(results) == ['dataset', 'method', 'label', 'run', 'classifier', 'tasks']
    assert (results['dataset'], results['method'], results['label']) == ('mnist_5k', 'ra', 'MeRGAN-RA')
    assert results['run']['RA_factor'] == 1e-3 and results['classifier'] == identity
    assert results['tasks'] == records
    with open(tmp_path / 'results.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['task', 'class', 'accuracy'] and len(rows) == 1 + 6
    assert rows[-1] == ['3', '2', '0.750000']
    for name in ('accuracy_matrix.png', 'mean_accuracy.png'):
        content = (tmp_path / name).read_bytes()
        assert content.startswith(PNG_MAGIC) and len(content) > 1000


def test_export_samples_npz(tmp_path):
    path = tmp_path / 'test' / 'samples_task_2.npz'
    evaluation_results.export_samples(constant_images, [3, 1], 4, str(path))
    saved = np.load(path)
    assert saved['x'].dtype == np.uint8 and saved['x'].shape == (8, 8, 8, 1)
    assert saved['y'].tolist() == [3, 3, 3, 3, 1, 1, 1, 1]
    assert np.all(saved['x'][4:] == level(1))


def test_validate_evaluation_flags(tmp_path):
    assert evaluate.validate_evaluation_flags(evaluation_args(classifier_dir=str(tmp_path))) is None
    assert '--reverse_samples' in evaluate.validate_evaluation_flags(evaluation_args(reverse_samples=-1))
    assert '--fid_samples' in evaluate.validate_evaluation_flags(evaluation_args(fid_samples=-5))
    assert '--eval_samples' in evaluate.validate_evaluation_flags(evaluation_args(eval_samples=0))
    missing = str(tmp_path / 'nope.keras')
    message = evaluate.validate_evaluation_flags(evaluation_args(eval_classifier=missing))
    assert '--eval_classifier' in message and missing in message
