"""The project's list of hostile inputs: damaged files, wrong files and contradictory flags that
must end in a clear message or a recovery, never a traceback. Add new cases here, one test each."""
import re

import numpy as np
import pytest

import classifier
import evaluate
import metrics
from test_evaluate import constant_image_set, constant_images, evaluation_args, mean_pixel_classifier


def quick_training(x, y, num_classes, epochs, seed, batch_size=64):
    """An untrained classifier: these tests are about files, not accuracy."""
    return classifier.build_classifier(x.shape[1:], num_classes, seed)


# ---------------------------------------------------------------- cached evaluation classifier

def flip_bytes(raw, start, count=8):
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    return raw


DAMAGE = {
    'bit flips in the weights': lambda raw: flip_bytes(raw, len(raw) // 2),
    'bit flips in the zip directory': lambda raw: flip_bytes(raw, len(raw) - 30),
    'cut short': lambda raw: raw[:len(raw) // 3],
    'empty': lambda raw: b'',
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_cached_classifier_is_retrained(damage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(classifier, 'train_classifier', quick_training)
    data = constant_image_set()
    folder = tmp_path / 'classifiers'
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'trained'
    path = folder / 'standin_classifier.keras'
    path.write_bytes(bytes(DAMAGE[damage](bytearray(path.read_bytes()))))
    capsys.readouterr()
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'trained'
    assert f'cannot read cached classifier {path}' in capsys.readouterr().out
    assert classifier.load_or_train_classifier(data, str(folder)).identity['source'] == 'cached'


# ---------------------------------------------------------------- --eval_classifier

def write_not_a_model(kind, folder):
    path = folder / {'text': 'notes.txt', 'random bytes': 'mine.keras', 'empty': 'empty.keras',
                     'weights only': 'mine.weights.h5'}[kind]
    if kind == 'text':
        path.write_text('class scores, trust me\n')
    elif kind == 'random bytes':
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == 'empty':
        path.write_bytes(b'')
    else:
        mean_pixel_classifier(3).model.save_weights(path)
    return path


@pytest.mark.parametrize('kind', ['text', 'random bytes', 'empty', 'weights only'])
def test_eval_classifier_that_is_not_a_keras_model(kind, tmp_path):
    path = write_not_a_model(kind, tmp_path)
    with pytest.raises(classifier.EvaluationError, match=f'^{re.escape(str(path))} is not a Keras model'):
        classifier.load_or_train_classifier(constant_image_set(), str(tmp_path / 'cache'), user_model_path=str(path))
    message = evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path)))
    assert message.startswith(f'--eval_classifier: {path} is not a Keras model')


def test_eval_classifier_for_other_images_names_the_file(tmp_path):
    inputs = classifier.keras.Input((28, 28, 1))
    model = classifier.keras.Model(inputs, classifier.layers.Dense(3)(classifier.layers.Flatten()(inputs)))
    path = tmp_path / 'mnist_sized.keras'
    model.save(path)
    assert evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path))) is None  # a Keras model
    with pytest.raises(classifier.EvaluationError,
                       match=re.escape(f'{path} takes inputs of shape (28, 28, 1), standin images are (8, 8, 1)')):
        classifier.load_or_train_classifier(constant_image_set(), str(tmp_path), user_model_path=str(path))


def test_check_evaluation_files_passes_a_keras_classifier_and_no_files(tmp_path):
    path = tmp_path / 'mine.keras'
    mean_pixel_classifier(3).model.save(path)
    assert evaluate.check_evaluation_files(evaluation_args(eval_classifier=str(path))) is None
    assert evaluate.check_evaluation_files(evaluation_args()) is None


# ---------------------------------------------------------------- --inception_weights

def test_inception_weights_that_are_not_weights_are_caught_early(tmp_path):
    junk = tmp_path / 'inception.h5'
    junk.write_bytes(b'not weights at all' * 100)
    other_network = tmp_path / 'classifier.weights.h5'
    classifier.build_classifier((8, 8, 1), 3).save_weights(other_network)
    for path in (junk, other_network):
        message = evaluate.check_evaluation_files(evaluation_args(inception_weights=str(path)))
        assert message.startswith(f'--inception_weights: {path} is not InceptionV3 no-top weights')


def test_inception_weights_check_builds_the_network_with_the_file():
    built_with = []
    evaluation = evaluation_args(inception_weights='inception.h5')
    assert evaluate.check_evaluation_files(evaluation, network_builder=built_with.append) is None
    assert built_with == ['inception.h5']


def test_inception_weights_without_fid_is_a_usage_error(tmp_path):
    weights = tmp_path / 'inception.h5'
    weights.write_bytes(b'x')
    flags = dict(inception_weights=str(weights), classifier_dir=str(tmp_path))
    message = evaluate.validate_evaluation_flags(evaluation_args(fid_samples=0, **flags))
    assert '--inception_weights' in message and '--fid_samples 0' in message
    assert evaluate.validate_evaluation_flags(evaluation_args(fid_samples=2, **flags)) is None


# ---------------------------------------------------------------- samplers

BROKEN_SAMPLERS = {
    'more than asked': lambda c, n: constant_images(c, n + 1),
    'floats': lambda c, n: constant_images(c, n) / 255.0,
    'no channel axis': lambda c, n: constant_images(c, n)[..., 0],
    'None': lambda c, n: None,
}


@pytest.mark.parametrize('sampler', sorted(BROKEN_SAMPLERS))
def test_sampler_with_broken_output_is_refused(sampler):
    with pytest.raises(ValueError, match=r'must return uint8 \(n, H, W, C\) with n <= 10'):
        metrics.generated_accuracy(BROKEN_SAMPLERS[sampler], [0], mean_pixel_classifier(3), 10)
