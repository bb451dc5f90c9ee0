import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import report
from reporting import figures, run_results, tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def task_record(task, seen, mean, reverse=None, fid=None, inception=None):
    return {'task': task, 'seen_classes': list(seen),
            'accuracy_per_class': {str(c): mean for c in seen}, 'mean_accuracy': mean,
            'reverse_accuracy': reverse, 'classifier_fid': fid, 'inception_fid': inception,
            'samples': {'accuracy_per_class': 64, 'reverse_per_class': 10, 'fid_per_class': 10},
            'timing_s': {'accuracy': 0.1, 'reverse_accuracy': None, 'classifier_fid': None,
                         'inception_fid': None}}


LABELS = {'joint': 'Joint', 'sft': 'SFT', 'ewc': 'EWC', 'dgr': 'DGR', 'jtr': 'MeRGAN-JTR', 'ra': 'MeRGAN-RA',
          'rehearsal': 'Rehearsal'}


def sequential(dataset, method, means, seed=0, **options):
    """A run whose mean accuracy after task t is means[t - 1]; one class per task."""
    return {'dataset': dataset, 'method': method, 'label': LABELS[method], 'run': {'seed': seed, **options},
            'classifier': {'test_accuracy': 0.98},
            'tasks': [task_record(t, range(t), m) for t, m in enumerate(means, start=1)]}


def joint(dataset, classes, mean, seed=0):
    return {'dataset': dataset, 'method': 'joint', 'label': 'Joint', 'run': {'seed': seed}, 'classifier': None,
            'tasks': [task_record(classes, range(classes), mean)]}


def write_run(folder, results):
    folder.mkdir()
    (folder / 'results.json').write_text(json.dumps(results))
    return str(folder)


def row(table, start):
    """The cells of the Markdown row whose first cells read `start`."""
    lines = [line for line in table.splitlines() if line.startswith(start)]
    assert len(lines) == 1, f'{start!r} matched {lines}'
    return [cell.strip() for cell in lines[0].strip('|').split('|')]


@pytest.fixture
def runs():
    sft = [1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12, 0.11, 0.1]
    ra = [1.0, 0.99, 0.985, 0.98, 0.979, 0.975, 0.973, 0.972, 0.971, 0.970]
    lsun_ra = sequential('lsun', 'ra', [1.0, 0.9, 0.85, 0.8])
    lsun_ra['tasks'][3].update(reverse_accuracy=0.836, inception_fid=40.5, classifier_fid=3.25)
    return [sequential('mnist_5k', 'sft', sft), sequential('mnist_5k', 'ra', ra),
            sequential('mnist_5k', 'ra', [r - 0.01 for r in ra], seed=1),
            joint('mnist_5k', 5, 0.977), joint('mnist_5k', 10, 0.969), lsun_ra]


PAPER_COLUMNS = ['Joint', 'SFT', 'EWC', 'DGR', 'MeRGAN-JTR', 'MeRGAN-RA']


def test_table1_cells_measured_beside_paper(runs):
    table = tables.build_table(runs)
    after5 = row(table, '| MNIST (mnist_5k) | 5 tasks')
    after10 = row(table, '| MNIST (mnist_5k) | 10 tasks')
    assert row(table, '| Dataset |') == ['Dataset', 'After'] + PAPER_COLUMNS
    columns = dict(zip(['dataset', 'after'] + PAPER_COLUMNS, after5))
    assert columns['SFT'] == '20.0 (paper 19.87)'
    assert columns['Joint'] == '97.7 (paper 97.66)'  # joint run with 5 seen classes
    assert columns['EWC'] == '– (paper 70.62)' and columns['DGR'] == '– (paper 90.39)'
    assert columns['MeRGAN-JTR'] == '– (paper 97.93)'
    # seeds 0 and 1: 97.9 and 96.9, sample standard deviation 0.71
    assert columns['MeRGAN-RA'] == '97.4 ± 0.7 (n=2) (paper 98.19)'

    assert after10[2] == '96.9 (paper 96.92)' and after10[3] == '10.0 (paper 10.06)'
    assert "mnist_5k runs are compared against the paper's MNIST numbers." in table


def test_a_cell_of_several_seeds_is_their_mean_sample_std_and_count():
    seeds = [sequential('mnist_5k', 'jtr', [0.90] * 5, seed=0), sequential('mnist_5k', 'jtr', [0.96] * 5, seed=1)]
    assert tables.measured_values(seeds, 'mnist_5k', tables.Column('MeRGAN-JTR'), 5, 'mean_accuracy') == [0.90, 0.96]
    mean, spread, count = tables.cell_statistics([0.90, 0.96])
    assert (mean, count) == (pytest.approx(0.93), 2) and spread == pytest.approx(0.0424264, rel=1e-5)
    assert tables.cell_statistics([0.5]) == (0.5, None, 1)
    assert tables.format_cell([0.90, 0.96], 100, 97.93) == '93.0 ± 4.2 (n=2) (paper 97.93)'
    assert tables.format_cell([0.9], 100, None) == '90.0'  # one run: the bare number
    three = [sequential('mnist_5k', 'jtr', [v] * 5, seed=s) for s, v in enumerate((0.95, 0.97, 0.99))]
    assert row(tables.build_table(three), '| MNIST (mnist_5k) | 5 tasks')[6] == '97.0 ± 2.0 (n=3) (paper 97.93)'


def test_welchs_test_of_a_difference_against_the_closed_form_for_four_degrees_of_freedom():
    # equal spreads (2 points) and n=3 a side: df = 2(n - 1) = 4; t = 10 / sqrt(4/3 + 4/3) = 6.124
    found = tables.difference_statistics([0.10, 0.12, 0.14], [0.20, 0.22, 0.24])
    assert found.value == pytest.approx(0.1) and found.error == pytest.approx(0.0163299, rel=1e-5)
    assert found.t == pytest.approx(6.1237244, rel=1e-7) and found.dof == pytest.approx(4.0)
    # Student's t with 4 df: F(t) = 1/2 + (3/8) x (1 - t^2 / (12 (1 + t^2/4))), x = t / sqrt(1 + t^2/4)
    t = found.t
    x = t / np.sqrt(1 + t * t / 4)
    assert found.p == pytest.approx(2 * (0.5 - 3 / 8 * x * (1 - t * t / (12 * (1 + t * t / 4)))), rel=1e-9)
    assert found.p == pytest.approx(0.0036022, rel=1e-4)
    assert tables.difference_statistics([0.5], [0.6, 0.7]) == tables.Difference(pytest.approx(0.15))
    assert tables.difference_statistics([0.5, 0.5], [0.6, 0.6]).p == 0.0  # no spread on either side
    assert tables.difference_statistics([0.5, 0.5], [0.5, 0.5]).p == 1.0


def test_pairs_the_paper_orders_get_their_difference_its_standard_error_and_a_verdict():
    ra = [sequential('mnist_5k', 'ra', [v] * 5, seed=s) for s, v in enumerate((0.88, 0.88, 0.89))]
    jtr = [sequential('mnist_5k', 'jtr', [v] * 5, seed=s) for s, v in enumerate((0.97, 0.96, 0.98))]
    dgr = [sequential('mnist_5k', 'dgr', [v] * 5, seed=s) for s, v in enumerate((0.80, 0.86))]
    sft = [sequential('mnist_5k', 'sft', [0.20] * 5)]
    rows = {cells[1].split(' (')[0]: cells[2:] for cells in
            (line.strip('| ').split(' | ') for line in tables.build_order_table(ra + jtr + dgr + sft, run_results.load_paper())
             .splitlines() if line.startswith('| mnist_5k'))}
    # paper, MNIST after 5: SFT 19.87 < DGR 90.39 < JTR 97.93 < RA 98.19; EWC and joint not measured
    assert list(rows) == ['SFT < DGR', 'SFT < MeRGAN-JTR', 'SFT < MeRGAN-RA', 'DGR < MeRGAN-JTR', 'DGR < MeRGAN-RA',
                          'MeRGAN-JTR < MeRGAN-RA']
    # RA - JTR = 88.333 - 97.0 = -8.667; SE = sqrt(1.0/3 + 0.3333/3) = 0.667, t = -13.0;
    # df = 0.4444^2 / ((1/3)^2/2 + (1/9)^2/2) = 3.2
    assert rows['MeRGAN-JTR < MeRGAN-RA'] == ['-8.7', '0.7', '-13.0 (3.2)', '< 0.001',
                                              "larger than the spread, against the paper's order"]
    # JTR - DGR = 97.0 - 83.0 = 14.0; SE = sqrt(1.0/3 + 18.0/2) = 3.06, t = 4.6, but on
    # df = 9.333^2 / ((1/3)^2/2 + 9^2/1) = 1.07: p = 0.12, where twice the SE would have called it
    assert rows['DGR < MeRGAN-JTR'] == ['+14.0', '3.1', '4.6 (1.1)', '0.124', 'within the spread']
    assert rows['SFT < DGR'] == ['+63.0', '–', '–', '–', 'one run on a side: no spread']
    close = [sequential('mnist_5k', 'dgr', [v] * 5, seed=s) for s, v in enumerate((0.86, 0.90))]
    assert tables.build_order_table(ra + close, run_results.load_paper()).splitlines()[2].split(' | ')[2:] == [
        '+0.3', '2.0', '0.2 (1.1)', '0.895', 'within the spread |']  # 88.33 - 88.0; SE sqrt(0.3333/3 + 8.0/2) = 2.03
    level = [sequential('mnist_5k', 'dgr', [v] * 5, seed=s) for s, v in enumerate((0.8830, 0.8833))]
    assert tables.build_order_table(ra + level, run_results.load_paper()).splitlines()[2].split(' | ')[2] == '0.0'
    fashion = [sequential('fashion_mnist', 'ra', [0.6] * 5), sequential('fashion_mnist', 'dgr', [0.65] * 5)]
    assert 'fashion_mnist | DGR < MeRGAN-RA (MNIST: 90.39 < 98.19) | -5.0 |' in tables.build_order_table(
        fashion, run_results.load_paper())
    assert tables.build_order_table(sft, run_results.load_paper()) is None


def test_runs_of_one_method_with_other_settings_are_columns_of_their_own():
    half = sequential('mnist_5k', 'dgr', [0.72] * 5, DGR_replay_share='half', DGR_solver_steps=500)
    balanced = [sequential('mnist_5k', 'dgr', [v] * 5, seed=s, DGR_replay_share='balanced', DGR_solver_steps=500)
                for s, v in enumerate((0.80, 0.84))]
    table = tables.build_table([half, *balanced])
    header = row(table, '| Dataset |')
    assert header[5:7] == ['DGR (DGR_replay_share half)', 'DGR (DGR_replay_share balanced)']
    after5 = dict(zip(header, row(table, '| MNIST (mnist_5k) | 5 tasks')))
    assert after5['DGR (DGR_replay_share half)'] == '72.0 (paper 90.39)'
    assert after5['DGR (DGR_replay_share balanced)'] == '82.0 ± 2.8 (n=2) (paper 90.39)'


def test_the_table_names_each_columns_method_options_even_where_the_column_has_no_detail():
    half = sequential('fashion_mnist', 'dgr', [0.65] * 5, DGR_replay_share='half', DGR_solver_steps=500)
    ra = [sequential('fashion_mnist', 'ra', [0.6] * 5, seed=s, RA_factor=0.001, precision='float32') for s in (0, 1)]
    table = tables.build_table([half, *ra, sequential('fashion_mnist', 'sft', [0.2] * 5)])
    assert row(table, '| Dataset |')[5] == 'DGR'  # alone in its group: no detail in the header
    assert table.splitlines()[-1] == ('Method options: DGR: DGR_replay_share half, DGR_solver_steps 500; '
                                      'MeRGAN-RA: RA_factor 0.001.')
    assert 'Method options' not in tables.build_table([sequential('fashion_mnist', 'sft', [0.2] * 5)])


def test_runs_in_bfloat16_are_never_pooled_with_float32_runs():
    older = sequential('mnist_5k', 'ra', [0.88] * 5)  # results.json from before the precision was recorded
    float32 = sequential('mnist_5k', 'ra', [0.86] * 5, seed=1, precision='float32')
    bfloat16 = [sequential('mnist_5k', 'ra', [v] * 5, seed=s, precision='mixed_bfloat16') for s, v in enumerate((0.8, 0.9))]
    table = tables.build_table([older, float32, *bfloat16])
    after5 = dict(zip(row(table, '| Dataset |'), row(table, '| MNIST (mnist_5k) | 5 tasks')))
    assert after5['MeRGAN-RA (precision float32)'] == '87.0 ± 1.4 (n=2) (paper 98.19)'
    assert after5['MeRGAN-RA (precision mixed_bfloat16)'] == '85.0 ± 7.1 (n=2) (paper 98.19)'
    assert row(tables.build_table(bfloat16), '| Dataset |')[7] == 'MeRGAN-RA'  # alone: no detail


def test_a_method_the_paper_does_not_have_gets_a_column_after_the_papers():
    buffers = [sequential('mnist_5k', 'rehearsal', [0.9] * 5, rehearsal_per_class=n) for n in (10, 50)]
    table = tables.build_table([sequential('mnist_5k', 'ra', [0.98] * 5), *buffers])
    assert row(table, '| Dataset |')[2:] == PAPER_COLUMNS + ['Rehearsal (rehearsal_per_class 10)',
                                                              'Rehearsal (rehearsal_per_class 50)']
    assert row(table, '| MNIST (mnist_5k) | 5 tasks')[-1] == '90.0'  # no paper value


def test_table1_measures_ewc_and_dgr(runs):
    runs += [sequential('mnist_5k', 'ewc', [0.9] * 4 + [0.7064] + [0.75] * 4 + [0.7749]),
             sequential('mnist_5k', 'dgr', [0.95] * 9 + [0.8541])]
    table = tables.build_table(runs)
    names = ['dataset', 'after'] + PAPER_COLUMNS
    after5 = dict(zip(names, row(table, '| MNIST (mnist_5k) | 5 tasks')))
    after10 = dict(zip(names, row(table, '| MNIST (mnist_5k) | 10 tasks')))
    assert after5['EWC'] == '70.6 (paper 70.62)' and after5['DGR'] == '95.0 (paper 90.39)'
    assert after10['EWC'] == '77.5 (paper 77.03)' and after10['DGR'] == '85.4 (paper 85.40)'
    assert 'paper only' not in table


def test_table1_paper_only_row_for_unmeasured_dataset(runs):
    table = tables.build_table(runs)
    svhn = row(table, '| SVHN | 10 tasks')
    assert svhn[2:] == ['– (paper 84.82)', '– (paper 10.10)', '– (paper 33.02)', '– (paper 47.28)',
                        '– (paper 66.50)', '– (paper 66.78)']
    assert '| LSUN' not in table


def test_record_after_counts_seen_classes_for_joint_runs():
    run = joint('mnist', 10, 0.9)
    run['tasks'][0]['task'] = 1  # its seen classes count, not its task number
    assert run_results.record_after(run, 10) is run['tasks'][0]
    assert run_results.record_after(run, 1) is None
    assert run_results.record_after(run, 5) is None
    seq = sequential('mnist', 'jtr', [0.9] * 6)
    assert run_results.record_after(seq, 5)['task'] == 5 and run_results.record_after(seq, 10) is None


def test_lsun_table2(runs):
    table = tables.build_lsun_table(runs)
    header = row(table, '| LSUN after 4 tasks')
    accuracy = dict(zip(header, row(table, '| accuracy (%)')))
    assert accuracy['MeRGAN-RA'] == '80.0 (paper 81.03)'
    assert accuracy['SFT'] == '– (paper 15.02)' and accuracy['Joint'] == '–'
    reverse = dict(zip(header, row(table, '| reverse accuracy (%)')))
    assert reverse['MeRGAN-RA'] == '83.6 (paper 83.62)' and reverse['EWC'] == '– (paper 63.35)'
    fid = dict(zip(header, row(table, '| FID (Inception)')))
    assert fid['MeRGAN-RA'] == '40.50 (paper 37.73)' and fid['MeRGAN-JTR'] == '– (paper 49.69)'
    assert dict(zip(header, row(table, '| classifier FID')))['MeRGAN-RA'] == '3.25'


def test_main_prints_tables_and_writes_chart(runs, tmp_path, capsys):
    folders = [write_run(tmp_path / f'run{i}', results) for i, results in enumerate(runs)]
    out = tmp_path / 'chart.png'
    assert report.main(folders + ['--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '| MNIST (mnist_5k) | 10 tasks | 96.9 (paper 96.92) |' in printed
    assert '| LSUN after 4 tasks |' in printed
    content = out.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 5000


def test_missing_folder_exits_2_with_message(tmp_path):
    missing = tmp_path / 'no_such_run'
    done = subprocess.run([sys.executable, os.path.join(REPO, 'report.py'), str(missing)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert f'{missing}: no such folder' in done.stderr
    assert done.stdout == '' and not (tmp_path / 'report.png').exists()


@pytest.mark.parametrize('content, message', [
    (None, 'results.json: missing'),
    ('{"dataset": "mnist", ', 'not valid JSON'),
    ('{"dataset": "mnist", "mode": "lwf", "tasks": []}', 'no "label" for method \'lwf\'; run --test again'),
    ('{"dataset": "mnist", "method": "ra", "label": "MeRGAN-RA", "tasks": [{"task": 1}]}', 'each task record needs'),
    ('[1, 2]', 'not a results.json of this project'),
])
def test_bad_results_exit_2(tmp_path, capsys, content, message):
    folder = tmp_path / 'run'
    folder.mkdir()
    if content is not None:
        (folder / 'results.json').write_text(content)
    assert report.main([str(folder), '--out', str(tmp_path / 'r.png')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('report.py: error: ') and message in err
    assert not (tmp_path / 'r.png').exists()


def test_paper_numbers_and_source():
    paper = run_results.load_paper()
    assert '1809.02058' in paper['source']['arxiv']
    mnist = paper['table1']['datasets']['MNIST']
    assert mnist['MeRGAN-RA'] == {'5': 98.19, '10': 97.01} and mnist['Joint']['10'] == 96.92
    assert paper['table1']['datasets']['SVHN']['DGR'] == {'5': 61.29, '10': 47.28}
    assert paper['table2']['metrics']['fid']['MeRGAN-RA'] == 37.73
    assert paper['table2']['metrics']['reverse_accuracy']['SFT'] == 28.0


def write_runs(tmp_path, runs):
    names = ['sft', 'ra', 'ra_seed1', 'joint_5', 'joint_10', 'lsun_ra']
    return names, [write_run(tmp_path / name, results) for name, results in zip(names, runs)]


def test_markdown_output_is_stable_and_names_no_path(runs, tmp_path, capsys):
    names, folders = write_runs(tmp_path, runs)
    args = folders + ['--markdown', '--out', str(tmp_path / 'chart.png')]
    assert report.main(args) == 0
    out, err = capsys.readouterr()
    assert report.main(args) == 0
    assert capsys.readouterr().out == out
    assert out == tables.markdown_report(runs, names)
    assert out.endswith('lsun classes: 0 bedroom, 1 kitchen, 2 church_outdoor, 3 tower.\n')
    assert str(tmp_path) not in out and err == f'chart: {tmp_path / "chart.png"}\n'
    assert '| SVHN' not in out and '| MNIST (mnist_5k) | 5 tasks |' in out  # measured datasets only
    assert '| LSUN after 4 tasks |' in out
    assert row(out, '| sft | mnist_5k |') == ['sft', 'mnist_5k', 'SFT', '0', '100.0', '50.0', '33.0', '25.0', '20.0',
                                   '17.0', '14.0', '12.0', '11.0', '10.0']
    assert row(out, '| ra_seed1 | mnist_5k |')[2:5] == ['MeRGAN-RA', '1', '99.0']  # each seed's own values
    dash = tables.MISSING
    assert row(out, '| joint_5 | mnist_5k |') == ['joint_5', 'mnist_5k', 'Joint (5 classes)', '0'] + [dash] * 4 + ['97.7'] + [dash] * 5
    assert row(out, '| lsun_ra | lsun |')[4:] == ['100.0', '90.0', '85.0', '80.0'] + [dash] * 6
    assert row(out, '| lsun_ra | 4 |')[:5] == ['lsun_ra', '4', '80.0', '83.6', '3.2']  # after its last task


def test_last_task_table_gives_each_class_reverse_accuracy_fid_and_dgr_shares():
    dgr = sequential('mnist_5k', 'dgr', [1.0, 0.6])
    dgr['tasks'][-1].update(accuracy_per_class={'0': 0.25, '1': 0.95}, reverse_accuracy=0.9, classifier_fid=35.74,
                            generated_class_share={'0': 0.125, '1': 0.875})
    joint_3 = joint('fashion_mnist', 3, 0.5)
    joint_3['tasks'][-1]['accuracy_per_class'] = {'0': 0.5, '1': 0.25, '2': 0.75}
    table = tables.build_last_task_table([dgr, joint_3, sequential('mnist_5k', 'sft', [])], ['dgr', 'joint_3', 'sft'])
    dash = tables.MISSING
    assert table.splitlines()[0] == '| Run | After task | Mean | Reverse accuracy | Classifier FID | 0 | 1 | 2 |'
    assert row(table, '| dgr |') == ['dgr', '2', '60.0', '90.0', '35.7', '25.0', '95.0', dash]
    assert row(table, '| dgr: share of draws |') == ['dgr: share of draws', '2', '', '', '', '12.5', '87.5', dash]
    assert row(table, '| joint_3 |') == ['joint_3', '3', '50.0', dash, dash, '50.0', '25.0', '75.0']
    assert '| sft |' not in table  # no task tested yet
    assert "A share-of-draws row: each class's share (%)" in table
    assert table.endswith('fashion_mnist classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, '
                          '5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.')
    assert 'share-of-draws' not in tables.build_last_task_table([joint_3], ['joint_3'])
    unknown = sequential('cifar', 'sft', [0.9])  # a dataset this project cannot name: numbered columns only
    assert tables.build_last_task_table([unknown], ['sft']).splitlines()[-1].startswith("After each run's last task")


def test_accuracy_after_each_task_series_and_plot(runs, tmp_path):
    series = {(dataset, str(column)): points for (dataset, column), points in figures.accuracy_series(runs).items()}
    assert sorted(series) == [('lsun', 'MeRGAN-RA'), ('mnist_5k', 'Joint'), ('mnist_5k', 'MeRGAN-RA'),
                              ('mnist_5k', 'SFT')]
    assert series['mnist_5k', 'Joint'] == [(5, pytest.approx(97.7), None), (10, pytest.approx(96.9), None)]
    # two RA seeds: their mean, and the sample standard deviation of 100 and 99 for the band
    assert series['mnist_5k', 'MeRGAN-RA'][0] == (1, pytest.approx(99.5), pytest.approx(0.7071, rel=1e-3))
    assert [t for t, _, _ in series['mnist_5k', 'SFT']] == list(range(1, 11))
    assert series['lsun', 'MeRGAN-RA'] == [(1, 100.0, None), (2, 90.0, None), (3, 85.0, None), (4, 80.0, None)]
    _, folders = write_runs(tmp_path, runs)
    plot = tmp_path / 'accuracy.png'
    assert report.main(folders + ['--out', str(tmp_path / 'c.png'), '--accuracy_plot', str(plot)]) == 0
    with Image.open(plot) as image:
        assert image.size == (700, 450)  # 7 x 4.5 inches at 100 dpi


def test_budget_series_matches_a_method_across_budgets_by_the_options_that_differ_anywhere(tmp_path):
    """DGR's replay share differs only at the smaller budget: the larger budget's DGR still
    gets the share in its column name, so that both budgets' balanced runs share a colour."""
    small = [sequential('mnist_5k', 'ra', [1.0, 0.9, 0.8]),
             sequential('mnist_5k', 'dgr', [1.0, 0.7, 0.6], DGR_replay_share='half'),
             sequential('mnist_5k', 'dgr', [1.0, 0.8, 0.7], DGR_replay_share='balanced'),
             sequential('mnist_5k', 'ra', [1.0, 0.8, 0.6], seed=1)]
    large = [sequential('mnist_5k', 'ra', [1.0, 0.99]), sequential('mnist_5k', 'dgr', [1.0, 0.95],
                                                                   DGR_replay_share='balanced')]
    series = {(str(column), iters): points
              for (column, iters), points in figures.budget_series([(4001, large), (1000, small)]).items()}
    assert sorted(series) == [('DGR (DGR_replay_share balanced)', 1000), ('DGR (DGR_replay_share balanced)', 4001),
                              ('DGR (DGR_replay_share half)', 1000), ('MeRGAN-RA', 1000), ('MeRGAN-RA', 4001)]
    assert series['MeRGAN-RA', 1000] == [(1, 100.0), (2, pytest.approx(85.0)), (3, pytest.approx(70.0))]  # 2 seeds
    assert series['DGR (DGR_replay_share balanced)', 4001] == [(1, 100.0), (2, pytest.approx(95.0))]
    assert series['DGR (DGR_replay_share half)', 1000][-1] == (3, pytest.approx(60.0))
    plot = tmp_path / 'budgets.png'
    figures.write_budget_plot([(4001, large), (1000, small)], plot)
    with Image.open(plot) as image:
        assert image.size == (700, 450)


def test_run_labels_name_joint_classes_and_what_tells_a_sweep_apart():
    assert tables.run_label(joint('mnist_5k', 5, 0.9)) == 'Joint (5 classes)'
    sweep = [sequential('mnist_5k', 'ewc', [0.5], EWC_lambda=strength, EWC_fisher_batches=50) for strength in (1e5, 1e7)]
    assert [tables.run_label(run, sweep) for run in sweep] == ['EWC (EWC_lambda 100000)', 'EWC (EWC_lambda 1e+07)']
    assert tables.run_label(sweep[0]) == 'EWC'  # alone, nothing tells it apart
    assert tables.run_label(sequential('mnist_5k', 'ra', [0.9], RA_factor=1e-3)) == 'MeRGAN-RA'


def test_results_written_before_the_label_was_recorded_read_as_before(tmp_path):
    older = {'dataset': 'mnist_5k', 'mode': 'dgr', 'run': {'mode': 'dgr', 'seed': 0, 'DGR_solver_steps': 500},
             'tasks': [task_record(1, [0], 0.98)]}
    results = run_results.load_results(write_run(tmp_path / 'dgr', older))
    assert (results['method'], results['label'], results['run']['method']) == ('dgr', 'DGR', 'dgr')
    assert 'mode' not in results and tables.run_label(results) == 'DGR'
