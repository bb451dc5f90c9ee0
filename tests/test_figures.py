"""The paper's Figure 4: the t-SNE helper on made-up features, and report.py --figure4 on tiny
real runs of mnist_5k."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import report
from reporting import figures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURE4_PIXELS = (700, 600)  # figures.FIGURE4_INCHES at 100 dpi


def two_clusters(per_cluster=30, dims=16, gap=50.0, seed=0):
    """Two Gaussian clouds of unit spread whose centres lie `gap` apart along every axis."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(per_cluster, dims)), rng.normal(size=(per_cluster, dims)) + gap


def nearer_own_centroid(own, other):
    """Whether every point of `own` lies nearer the centroid of `own` than that of `other`."""
    to_own = np.linalg.norm(own - own.mean(axis=0), axis=1)
    to_other = np.linalg.norm(own - other.mean(axis=0), axis=1)
    return bool(np.all(to_own < to_other))


def test_tsne_points_are_the_same_for_the_same_seed():
    features = np.concatenate(two_clusters())
    points = figures.tsne_points(features, seed=3)
    assert points.shape == (60, 2) and np.all(np.isfinite(points))
    np.testing.assert_array_equal(figures.tsne_points(features, seed=3), points)


def test_embedded_groups_keep_far_apart_clusters_apart():
    near, far = two_clusters()
    groups = figures.embed_groups([('near', near), ('empty', np.zeros((0, 16))), ('far', far)])
    assert [label for label, _ in groups] == ['near', 'empty', 'far']
    assert [len(points) for _, points in groups] == [30, 0, 30]
    (_, near_points), _, (_, far_points) = groups
    assert nearer_own_centroid(near_points, far_points) and nearer_own_centroid(far_points, near_points)


def test_tsne_points_refuses_too_few_points():
    with pytest.raises(ValueError, match=r'at least 4 points, got shape \(3, 16\)'):
        figures.tsne_points(np.ones((3, 16)))


def summary(folder, dataset='mnist_5k', mode='sft'):
    """A folder with only results.json, as reproduction/ keeps: no config, no checkpoints."""
    folder.mkdir()
    results = {'dataset': dataset, 'method': mode, 'label': mode.upper(), 'run': {},
               'tasks': [{'task': 1, 'seen_classes': [0], 'mean_accuracy': 0.9}]}
    (folder / 'results.json').write_text(json.dumps(results))
    return str(folder)


def test_figure4_refuses_folders_without_a_run_or_of_two_datasets(tmp_path, capsys):
    out = tmp_path / 'figure4.png'
    no_run = summary(tmp_path / 'summary')
    assert report.main([no_run, '--out', str(tmp_path / 'c.png'), '--figure4', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('report.py: error: --figure4: ') and f'{no_run} is not a run folder' in err
    svhn = summary(tmp_path / 'svhn', dataset='svhn')
    assert report.main([no_run, svhn, '--out', str(tmp_path / 'c.png'), '--figure4', str(out)]) == 2
    assert 'runs of one dataset, got mnist_5k, svhn' in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / 'c.png').exists()


# --- end to end: two 1-task runs trained for 3 iterations, tested, then drawn --------------------

@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
    """(sft folder, dgr folder, classifier file): an untrained evaluation classifier stands in,
    Figure 4 only needs its features."""
    from evaluation import classifier
    import main
    from test_cli import FAST, run_cli
    folder = tmp_path_factory.mktemp('figure4')
    eval_classifier = str(folder / 'untrained.keras')
    classifier.build_classifier((32, 32, 1), 10).save(eval_classifier)
    test_flags = ['--eval_classifier', eval_classifier, '--eval_samples', '64', '--reverse_samples', '0',
                  '--fid_samples', '0']
    dirs = []
    for name, method_flags in (('sft', []), ('dgr', ['--DGR', '--DGR_solver_steps', '5'])):
        result = str(folder / name)
        code, _ = run_cli(main.main, FAST + method_flags + ['--num_tasks', '1', '--result_path', result])
        assert code == 0, f'training {name} failed'
        code, _ = run_cli(main.main, ['--dataset', 'mnist_5k', '--test', '--result_path', result] + test_flags)
        assert code == 0, f'--test of {name} failed'
        dirs.append(result)
    return dirs[0], dirs[1], eval_classifier


@pytest.mark.slow
def test_figure4_features_count_generated_and_real_zeros(tiny_runs):
    sft, _, eval_classifier = tiny_runs
    generated, real = figures.figure4_features([sft], 0, 20, 'unused', eval_classifier)
    assert [features.shape for features in generated] == [(20, 128)] and real.shape == (20, 128)
    assert not np.allclose(generated[0].mean(axis=0), real.mean(axis=0))  # 3 iterations draw no zeros


@pytest.mark.slow
def test_report_draws_figure4_from_runs_and_names_a_run_without_its_checkpoint(tiny_runs, tmp_path, capsys):
    sft, dgr, eval_classifier = tiny_runs
    out = tmp_path / 'figure4.png'
    flags = ['--out', str(tmp_path / 'chart.png'), '--figure4_samples', '20', '--eval_classifier', eval_classifier]
    assert report.main([sft, dgr, '--markdown', '--figure4', str(out)] + flags) == 0
    stdout, err = capsys.readouterr()
    assert stdout.startswith('| Dataset |') and f'figure 4: {out}' in err
    with Image.open(out) as image:
        assert image.size == FIGURE4_PIXELS
        assert len(image.convert('RGB').getcolors(maxcolors=100000)) > 50  # points, not a blank canvas

    stopped = tmp_path / 'stopped'
    shutil.copytree(dgr, stopped)
    (stopped / 'checkpoints' / 'tasks' / 'task_1.index').unlink()
    missing = tmp_path / 'missing.png'
    assert report.main([sft, str(stopped), '--figure4', str(missing)] + flags) == 2
    err = capsys.readouterr().err
    assert f'--figure4: {stopped} has no end-of-task checkpoint of its last task, task 1' in err
    assert not missing.exists()


@pytest.mark.slow
def test_report_script_exits_2_when_figure4_fails_while_drawing(tiny_runs, tmp_path):
    sft, _, eval_classifier = tiny_runs
    out = tmp_path / 'figure4.png'
    done = subprocess.run([sys.executable, os.path.join(REPO, 'report.py'), sft, '--out', str(tmp_path / 'c.png'),
                           '--figure4', str(out), '--figure4_samples', '1', '--eval_classifier', eval_classifier],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'report.py: error: --figure4: t-SNE needs' in done.stderr and '--figure4_samples' in done.stderr
    assert not out.exists()
