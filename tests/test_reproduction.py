"""reproduction/: summaries of runs, Figure 3 from their test grids, report.md and the README's block.
Fake runs only (results.json and grids written here): nothing trains."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import report
import reproduce
from files import write_files
from reporting import figures, run_results, summaries, tables
from reporting import reproduction as readme_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TILE = 32  # --test grids: 10x10 tiles of 32x32 images


def record(task, seen, mean):
    return {'task': task, 'seen_classes': list(seen), 'accuracy_per_class': {str(c): mean for c in seen},
            'mean_accuracy': mean, 'reverse_accuracy': None, 'classifier_fid': None, 'inception_fid': None}


def first_row_value(class_id, column):
    return 40 * class_id + column


def grid(class_id, rgb=False):
    """A 10x10 test grid whose first row of tiles holds 40 * class + column, later rows 100 more."""
    pixels = np.zeros((10 * TILE, 10 * TILE), np.uint8)
    for r in range(10):
        for c in range(10):
            pixels[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = first_row_value(class_id, c) + (100 if r else 0)
    if rgb:
        return np.stack([pixels, np.full_like(pixels, 10), np.full_like(pixels, 20)], axis=-1)
    return pixels


def fake_run(folder, mode='ra', tasks=3, grids=(0, 2), rgb=False, dataset='mnist_5k', seed=0):
    """A tested run: three tasks (class t-1 in task t), test grids of the last task for `grids`,
    and everything a real run folder holds that a summary must leave behind."""
    records = [record(tasks, range(tasks), 0.9)] if mode == 'joint' else \
        [record(t, range(t), 1.0 - 0.1 * t) for t in range(1, tasks + 1)]
    files = {'config.json': json.dumps({'run': {'mode': mode}, 'args': {'iters': 3}}),
             'results.json': json.dumps({'dataset': dataset, 'mode': mode, 'run': {'seed': seed}, 'classifier': None,
                                         'tasks': records}),
             'results.csv': 'task,class,accuracy\n1,0,0.900000\n',
             'fixed_noise.npy': 'noise', 'test/samples_task_3.npz': 'npz', 'logs/events.out': 'tb',
             'checkpoints/tasks/task_3/ckpt-1.index': 'ckpt', 'checkpoints/latest/ckpt-9.index': 'ckpt',
             'accuracy_matrix.png': 'png', 'samples/task_3_iter_500_class_0.png': 'png'}
    write_files(folder, files)
    for class_id in grids:
        Image.fromarray(grid(class_id, rgb)).save(os.path.join(folder, 'test', f'task_{tasks}_class_{class_id}.png'))
    Image.fromarray(np.full((10 * TILE, 10 * TILE), 222, np.uint8)).save(
        os.path.join(folder, 'test', 'task_1_class_0.png'))  # an earlier task: never shown
    return str(folder)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def load(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


# --- Figure 3 ------------------------------------------------------------------------------

def expected_panel_row(class_id, rgb=False):
    row = np.repeat([first_row_value(class_id, c) for c in range(10)], TILE).astype(np.uint8)
    row = np.tile(row, (TILE, 1))
    channels = [row, np.full_like(row, 10), np.full_like(row, 20)] if rgb else [row] * 3
    return np.stack(channels, axis=-1)


def test_figure3_rows_are_the_first_samples_of_each_seen_class(tmp_path):
    ra = fake_run(tmp_path / 'ra')  # classes 0, 1, 2 seen; no grid for class 1
    joint = fake_run(tmp_path / 'joint', mode='joint', tasks=2, grids=(0, 1), rgb=True)
    out = tmp_path / 'figure3.png'
    assert report.main([ra, joint, '--out', str(tmp_path / 'c.png'), '--figure3', str(out)]) == 0
    mode, pixels = load(out)
    header, gap, width = 16, 8, 10 * TILE
    assert mode == 'RGB' and pixels.shape == (header + 3 * TILE, 2 * width + gap, 3)  # 112 x 648
    white = np.full((TILE, width, 3), 255, np.uint8)
    body = pixels[header:]
    assert np.array_equal(body[:TILE, :width], expected_panel_row(0))
    assert np.array_equal(body[TILE:2 * TILE, :width], white)  # class 1's grid is missing
    assert np.array_equal(body[2 * TILE:, :width], expected_panel_row(2))
    assert (pixels[:, width:width + gap] == 255).all()
    right = body[:, width + gap:]
    assert np.array_equal(right[:TILE], expected_panel_row(0, rgb=True))
    assert np.array_equal(right[TILE:2 * TILE], expected_panel_row(1, rgb=True))
    assert np.array_equal(right[2 * TILE:], white)  # joint on 2 classes: no third row
    assert pixels[:header, :width].min() < 128 and pixels[:header, width + gap:].min() < 128  # labels


def test_figure3_image_of_no_grid_at_all_is_blank():
    pixels = figures.figure3_image([('SFT', [None, None])])
    assert pixels.shape == (16 + 2 * 32, 320, 3) and (pixels[16:] == 255).all()


# --- summaries -------------------------------------------------------------------------------

def test_summarise_copies_the_summary_and_no_checkpoint(tmp_path):
    run = fake_run(tmp_path / 'run')
    dest = tmp_path / 'reproduction' / 'mnist_5k_3' / 'ra'
    os.makedirs(dest / 'test')
    Image.fromarray(grid(1)).save(dest / 'test' / 'task_9_class_1.png')  # from an earlier summary
    written = summaries.summarise(run, str(dest), ['python main.py --RA', 'python main.py --test'], 3725.4,
                                  ['train 3700 s in 2 session(s)'])
    expected = ['command.txt', 'config.json', 'results.csv', 'results.json',
                'test/task_3_class_0.png', 'test/task_3_class_2.png']
    assert written == expected and files_under(dest) == expected
    for name in ('config.json', 'results.json', 'results.csv'):
        assert (dest / name).read_bytes() == (tmp_path / 'run' / name).read_bytes()
    assert (dest / 'command.txt').read_text() == (
        '# The commands that made this run, in order, from the repository root\n'
        'python main.py --RA\npython main.py --test\n'
        '# wall time: 3725 s (1 h 02 min)\n# train 3700 s in 2 session(s)\n# seed: 0\n')
    mode, top = load(dest / 'test' / 'task_3_class_2.png')
    assert mode == 'L' and top.shape == (2 * TILE, 10 * TILE)  # the first 20 of 100 samples
    assert np.array_equal(top, grid(2)[:2 * TILE])
    assert summaries.wall_time_of(str(dest / 'command.txt')) == 3725
    # Figure 3 reads the summary as it reads the run
    results = run_results.load_results(str(dest))
    assert all(np.array_equal(a, b) for a, b in zip(figures.figure3_rows(str(dest), results)[::2],
                                                    figures.figure3_rows(run, results)[::2]))


def test_summarise_refuses_an_untested_run_before_writing(tmp_path):
    run = fake_run(tmp_path / 'run')
    os.remove(os.path.join(run, 'results.csv'))
    with pytest.raises(summaries.SummaryError, match='no results.csv'):
        summaries.summarise(run, str(tmp_path / 'dest'), ['python main.py'])
    os.remove(os.path.join(run, 'results.json'))
    assert reproduce.main(['summarise', run, str(tmp_path / 'dest'), '--command', 'x']) == 2
    assert not (tmp_path / 'dest').exists()


def test_protocol_runs_each_seed_in_a_folder_of_its_own_and_pools_them_in_one_cell(tmp_path, capsys):
    reproduction, results = tmp_path / 'reproduction', tmp_path / 'results'
    calls = []

    def execute(argv, log_dir, run, step):
        calls.append((run, step, argv))
        run_dir = argv[argv.index('--result_path') + 1]
        seed = int(run.rpartition('_seed')[2]) if '_seed' in run else 0
        if step == 'test':
            fake_run(run_dir, mode='jtr', tasks=5, seed=seed)
        summaries.log_session(log_dir, run, step, 10.0)

    reproduce.run_protocol('mnist_5k', 3, 5, ['jtr'], str(reproduction), str(results), execute=execute,
                           seeds=(0, 1, 2))
    trained = [(run, argv[argv.index('--result_path') + 1]) for run, step, argv in calls if step == 'train']
    assert trained == [(name, str(results / 'reproduce_mnist_5k_3' / name)) for name in ('jtr', 'jtr_seed1', 'jtr_seed2')]
    seeds = [argv[argv.index('--seed') + 1] if '--seed' in argv else None for _, step, argv in calls if step == 'train']
    assert seeds == [None, '1', '2']  # seed 0 is the default: the command of the runs made before --seeds
    for name, seed in (('jtr', 0), ('jtr_seed1', 1), ('jtr_seed2', 2)):
        assert (reproduction / 'mnist_5k_3' / name / 'command.txt').read_text().endswith(f'# seed: {seed}\n')
    block = readme_tables.readme_block(str(reproduction))
    assert '| 50.0 ± 0.0 (n=3) (paper 97.93) |' in block  # three seeds, one cell


def test_protocol_in_bfloat16_trains_a_group_of_its_own(tmp_path, capsys):
    reproduction, results = tmp_path / 'reproduction', tmp_path / 'results'
    fake_run(reproduction / 'mnist_5k_3' / 'ra', tasks=5)  # float32, summarised already
    trained = []

    def execute(argv, log_dir, run, step):
        trained.append(argv) if step == 'train' else fake_run(argv[argv.index('--result_path') + 1], tasks=5)
        summaries.log_session(log_dir, run, step, 10.0)

    reproduce.run_protocol('mnist_5k', 3, 5, ['ra'], str(reproduction), str(results), execute=execute,
                           seeds=(0, 1), precision='mixed_bfloat16')
    group = 'mnist_5k_3_mixed_bfloat16'
    assert [argv[argv.index('--result_path') + 1] for argv in trained] == \
        [str(results / f'reproduce_{group}' / name) for name in ('ra', 'ra_seed1')]
    assert all(argv[argv.index('--precision') + 1] == 'mixed_bfloat16' for argv in trained)
    assert sorted(os.listdir(reproduction / group)) == ['accuracy.png', 'figure3.png', 'ra', 'ra_seed1', 'table1.png']
    block = readme_tables.readme_block(str(reproduction))
    assert '**mnist_5k, 3 iterations per task (joint training: 3 per class), mixed_bfloat16** ' \
           f'(`reproduction/{group}/`)' in block
    # the float32 run's cell and the two bfloat16 seeds' cell, each in its own group's table
    assert block.count('| 50.0 (paper 98.19) |') == 1 and block.count('| 50.0 ± 0.0 (n=2) (paper 98.19) |') == 1
    float32_train, _ = reproduce.run_commands('ra', 'mnist_5k', 3, 5, 'out')
    assert '--precision' not in float32_train  # the float32 runs' commands stay as committed


def test_format_duration():
    assert [summaries.format_duration(s) for s in (45, 200, 3720, 7199.6)] == \
        ['45 s', '3 min 20 s', '1 h 02 min', '2 h 00 min']


# --- the protocol, with a fake main.py / joint.py ------------------------------------------------

def test_protocol_runs_what_is_not_summarised_and_makes_the_report(tmp_path, capsys):
    reproduction, results = tmp_path / 'reproduction', tmp_path / 'results'
    fake_run(reproduction / 'mnist_5k_3' / 'ra')  # summarised already
    (reproduction / 'mnist_5k_3' / 'figure4.png').write_bytes(b'\x89PNG by report.py --figure4')
    calls = []

    def execute(argv, log_dir, run, step):
        calls.append((run, step, argv))
        run_dir = argv[argv.index('--result_path') + 1]
        if step == 'test':
            fake_run(run_dir, tasks=2, grids=(0, 1))
        summaries.log_session(log_dir, run, step, 10.0)

    reproduce.run_protocol('mnist_5k', 3, 2, ['joint_5', 'sft', 'ra'], str(reproduction), str(results),
                           test_flags=['--eval_samples', '64'], execute=execute)
    sft_dir = str(results / 'reproduce_mnist_5k_3' / 'sft')
    assert calls == [
        ('sft', 'train', ['main.py', '--dataset', 'mnist_5k', '--iters', '3', '--num_tasks', '2',
                          '--result_path', sft_dir, '--resume']),
        ('sft', 'test', ['main.py', '--dataset', 'mnist_5k', '--test', '--result_path', sft_dir,
                         '--eval_samples', '64'])]
    printed = capsys.readouterr().out
    assert 'mnist_5k_3/joint_5: skipped, more classes than --tasks 2' in printed
    assert 'mnist_5k_3/ra: summarised already, skipped' in printed
    summary = reproduction / 'mnist_5k_3' / 'sft'
    assert files_under(summary) == ['command.txt', 'config.json', 'results.csv', 'results.json',
                                    'test/task_2_class_0.png', 'test/task_2_class_1.png']
    assert (summary / 'command.txt').read_text() == (
        '# The commands that made this run, in order, from the repository root\n'
        f'python main.py --dataset mnist_5k --iters 3 --num_tasks 2 --result_path {sft_dir} --resume\n'
        f'python main.py --dataset mnist_5k --test --result_path {sft_dir} --eval_samples 64\n'
        '# wall time: 20 s\n'
        '# train 10 s in 1 session(s); test 10 s in 1 session(s) '
        '(sessions of reproduce.py; the machine may have been shared)\n# seed: 0\n')
    for figure in ('table1.png', 'accuracy.png', 'figure3.png'):
        assert (reproduction / 'mnist_5k_3' / figure).read_bytes().startswith(b'\x89PNG')
    text = (reproduction / 'report.md').read_text()
    assert text == reproduce.report_markdown(str(reproduction)) and str(tmp_path) not in text
    assert '## mnist_5k, 3 iterations per task (joint training: 3 per class)' in text
    assert '| sft | 2 | 20 s | [mnist_5k_3/sft/command.txt](mnist_5k_3/sft/command.txt) |' in text
    assert '| ra | 3 | – | [mnist_5k_3/ra/command.txt](mnist_5k_3/ra/command.txt) |' in text
    assert '![Figure 3: the first 10 fixed-noise samples' in text and '](mnist_5k_3/figure3.png)' in text
    assert '![Figure 4: t-SNE of generated 0s' in text and '](mnist_5k_3/figure4.png)' in text
    assert (reproduction / 'mnist_5k_3' / 'figure4.png').read_bytes() == b'\x89PNG by report.py --figure4'


@pytest.mark.parametrize('checkpoint, flag', [(None, '--overwrite'), ('latest/checkpoint', '--resume'),
                                              ('tasks/task_2.index', '--resume')])
def test_protocol_starts_again_a_run_stopped_before_its_first_checkpoint(tmp_path, capsys, checkpoint, flag):
    reproduction, results = tmp_path / 'reproduction', tmp_path / 'results'
    run_dir = results / 'reproduce_mnist_5k_3' / 'sft'
    files = {'config.json': '{}', 'fixed_noise.npy': 'noise', 'checkpoints/latest/ckpt-1_temp/x': 'half written'}
    write_files(run_dir, {**files, **({f'checkpoints/{checkpoint}': 'ckpt'} if checkpoint else {})})
    trained = []

    def execute(argv, log_dir, run, step):
        trained.append(argv) if step == 'train' else fake_run(run_dir, tasks=2)
        summaries.log_session(log_dir, run, step, 10.0)

    reproduce.run_protocol('mnist_5k', 3, 2, ['sft'], str(reproduction), str(results), execute=execute)
    assert trained == [['main.py', '--dataset', 'mnist_5k', '--iters', '3', '--num_tasks', '2',
                        '--result_path', str(run_dir), flag]]
    started_again = 'sft: ' + str(run_dir) + ' holds no checkpoint yet; started again with --overwrite'
    assert (started_again in capsys.readouterr().out) == (checkpoint is None)
    assert f'--result_path {run_dir} {flag}\n' in (reproduction / 'mnist_5k_3' / 'sft' / 'command.txt').read_text()


def test_protocol_dry_run_prints_the_paper_budgets(tmp_path, capsys):
    reproduce.run_protocol('mnist_5k', 1000, 10, list(reproduce.PROTOCOL), str(tmp_path / 'reproduction'),
                           dry_run=True, execute=None)
    printed = capsys.readouterr().out
    assert ('python joint.py --dataset mnist_5k --classes 10 --iters 10000 '
            '--result_path results/reproduce_mnist_5k_1000/joint_10 --resume') in printed
    assert ('python main.py --dataset mnist_5k --EWC --EWC_lambda 1e5 --iters 1000 --num_tasks 10 '
            '--result_path results/reproduce_mnist_5k_1000/ewc --resume') in printed
    assert 'python main.py --dataset mnist_5k --test --result_path results/reproduce_mnist_5k_1000/dgr' in printed
    assert not (tmp_path / 'reproduction').exists()


# --- the README's block ----------------------------------------------------------------------------

def test_a_dataset_the_paper_did_not_use_gets_table_rows_without_paper_values(tmp_path):
    reproduction = tmp_path / 'reproduction'
    fake_run(reproduction / 'fashion_mnist_3' / 'ra', tasks=5, dataset='fashion_mnist')
    fake_run(reproduction / 'fashion_mnist_3' / 'sft', mode='sft', tasks=5, dataset='fashion_mnist')
    block = readme_tables.readme_block(str(reproduction))
    assert '| fashion_mnist | 5 tasks | – | 50.0 | – | – | – | 50.0 |' in block
    assert '| fashion_mnist | 10 tasks | – | – | – | – | – | – |' in block
    assert 'fashion_mnist has no paper value: the paper does not use it.' in block
    assert 'MNIST' not in block.replace('fashion_mnist', '') and 'paper 9' not in block
    reproduce.write_report(str(reproduction), readme_path=str(tmp_path / 'no_readme.md'))
    written = (reproduction / 'report.md').read_text()
    assert '| fashion_mnist | 5 tasks |' in written and (reproduction / 'fashion_mnist_3' / 'accuracy.png').exists()


def test_readme_block_of_a_reproduction_folder(tmp_path):
    reproduction = tmp_path / 'reproduction'
    fake_run(reproduction / 'mnist_5k_3' / 'ra')
    fake_run(reproduction / 'mnist_5k_3' / 'joint_5', mode='joint', tasks=5)
    fake_run(reproduction / 'mnist_5k_20' / 'sft', mode='sft')
    block = readme_tables.readme_block(str(reproduction))
    assert block == readme_tables.readme_block(str(reproduction)) and str(tmp_path) not in block
    lines = block.splitlines()
    assert lines[0].startswith('Made by `python reproduce.py readme --write README.md`')
    # the larger budget first
    assert lines.index('**mnist_5k, 3 iterations per task (joint training: 3 per class)** (`reproduction/mnist_5k_3/`)') \
        > lines.index('**mnist_5k, 20 iterations per task (joint training: 20 per class)** (`reproduction/mnist_5k_20/`)')
    assert '| MNIST (mnist_5k) | 5 tasks | 90.0 (paper 97.66) | – (paper 19.87) |' in block
    assert lines[-1] == ('Accuracy after each task, figures and the exact commands of every run: '
                         '[reproduction/report.md](reproduction/report.md).')
    assert block.endswith('.\n') and '| SVHN' not in block
    short_group = lines.index('**mnist_5k, 20 iterations per task (joint training: 20 per class)** '
                              '(`reproduction/mnist_5k_20/`)')
    assert lines[short_group + 2] == 'No run of this group reached 5 tasks; the accuracy after each task is in report.md.'
    assert block.count('| Dataset | After |') == 1
    assert 'has no paper value' not in block
    empty = readme_tables.readme_block(str(tmp_path / 'nothing_here'))
    assert 'No run is summarised in `nothing_here/` yet' in empty


def test_groups_run_the_paper_budget_first_then_other_datasets_then_sweeps():
    groups = ['ewc_sweep_mnist_5k_1000', 'fashion_mnist_1000', 'mnist_5k_1000', 'mnist_5k_4001', 'mnist_5k_300']
    assert sorted(groups, key=readme_tables.group_order) == ['mnist_5k_4001', 'mnist_5k_1000', 'mnist_5k_300',
                                                              'fashion_mnist_1000', 'ewc_sweep_mnist_5k_1000']


def test_a_dataset_at_two_budgets_gets_a_plot_of_both_in_the_report(tmp_path):
    reproduction = tmp_path / 'reproduction'
    for group in ('mnist_5k_4001', 'mnist_5k_1000', 'fashion_mnist_1000', 'ewc_sweep_mnist_5k_1000'):
        fake_run(reproduction / group / 'ra', dataset='fashion_mnist' if group.startswith('fashion') else 'mnist_5k')
    groups = readme_tables.reproduction_groups(str(reproduction))
    budgets = readme_tables.budgets_by_dataset(groups)
    assert {dataset: [iters for iters, _ in found] for dataset, found in budgets.items()} == {'mnist_5k': [4001, 1000]}
    reproduce.write_report(str(reproduction), readme_path=str(tmp_path / 'no_readme.md'))
    assert (reproduction / 'budgets_mnist_5k.png').read_bytes().startswith(b'\x89PNG')
    assert not (reproduction / 'budgets_fashion_mnist.png').exists()
    text = (reproduction / 'report.md').read_text()
    assert text.endswith('## mnist_5k at 4,001 and 1,000 iterations per task\n\n![Mean accuracy after each task '
                         'of each method at 4,001 and 1,000 iterations per task](budgets_mnist_5k.png)\n')


def test_readme_block_goes_between_the_marker_lines(tmp_path):
    readme = tmp_path / 'README.md'
    begin, end = readme_tables.README_BEGIN, readme_tables.README_END
    readme.write_text(f'# Title\n\nbefore\n{begin}\nold\n{end}\nafter\n')
    assert readme_tables.readme_section(readme.read_text()) == 'old\n'
    empty = tmp_path / 'reproduction'
    assert reproduce.main(['readme', '--write', str(readme), '--reproduction_dir', str(empty)]) == 0
    block = readme_tables.readme_block(str(empty))
    assert readme.read_text() == f'# Title\n\nbefore\n{begin}\n{block}{end}\nafter\n'
    assert readme_tables.readme_section(readme.read_text()) == block
    assert not reproduce.write_readme(str(readme), str(empty))  # unchanged the second time
    assert readme_tables.readme_section('no markers\n') is None
    with pytest.raises(run_results.ReportError, match='needs one line'):
        readme_tables.readme_section(f'{end}\n{begin}\n')
    with pytest.raises(run_results.ReportError, match='has no'):
        readme_tables.replace_readme_section('no markers\n', block)


def test_readme_shows_the_committed_reproduction_folder():
    with open(os.path.join(REPO, 'README.md')) as f:
        section = readme_tables.readme_section(f.read())
    if section is None:
        pytest.skip(f'README.md has no {readme_tables.README_BEGIN} / {readme_tables.README_END} lines yet; '
                    'once they are there, `python reproduce.py readme --write README.md` fills them')
    assert section == readme_tables.readme_block(os.path.join(REPO, 'reproduction')), \
        'README.md is out of date with reproduction/: run `python reproduce.py readme --write README.md`'


def test_committed_report_matches_the_committed_summaries():
    with open(os.path.join(REPO, 'reproduction', 'report.md')) as f:
        assert f.read() == reproduce.report_markdown(os.path.join(REPO, 'reproduction')), \
            'reproduction/report.md is out of date: run `python reproduce.py report`'
