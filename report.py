"""Compare measured runs with the paper: Table 1 (MNIST, SVHN) and Table 2 (LSUN) as Markdown,
plus a bar chart of measured vs paper mean accuracy, the mean accuracy after each task and
the paper's Figure 3 (samples of every seen class after the last task).

    python report.py RESULT_DIR [RESULT_DIR ...] [--out report.png] [--markdown]
                     [--accuracy_plot PATH] [--figure3 PATH]

No TensorFlow here: only the files that `--test` writes (results.json, test/ grids) are read.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
from PIL import Image, ImageDraw

PAPER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_results.json')
METHOD_OF_MODE = {'joint': 'Joint', 'sft': 'SFT', 'ewc': 'EWC', 'dgr': 'DGR', 'jtr': 'MeRGAN-JTR',
                  'ra': 'MeRGAN-RA'}
TABLE1_METHODS = ('Joint', 'SFT', 'EWC', 'DGR', 'MeRGAN-JTR', 'MeRGAN-RA')
TABLE1_HORIZONS = (5, 10)
LSUN_TASKS = 4
# (row label, task-record key, paper metric, scale to the paper's unit)
TABLE2_ROWS = (('accuracy (%)', 'mean_accuracy', 'accuracy', 100),
               ('reverse accuracy (%)', 'reverse_accuracy', 'reverse_accuracy', 100),
               ('FID (Inception)', 'inception_fid', 'fid', 1),
               ('classifier FID (ours, no paper value)', 'classifier_fid', None, 1))
MISSING = '–'


class ReportError(Exception):
    """Unusable input; the message says which file and why."""


def load_paper(path=PAPER_PATH):
    with open(path) as f:
        return json.load(f)


def load_results(result_dir):
    """The results.json of one run, checked for the fields this report reads."""
    if not os.path.isdir(result_dir):
        raise ReportError(f'{result_dir}: no such folder')
    path = os.path.join(result_dir, 'results.json')
    if not os.path.isfile(path):
        raise ReportError(f'{path}: missing (run main.py or joint.py with --test first)')
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise ReportError(f'{path}: not valid JSON ({error})') from error
    if not isinstance(results, dict) or not {'dataset', 'mode', 'tasks'} <= results.keys():
        raise ReportError(f'{path}: needs "dataset", "mode" and "tasks"')
    if results['mode'] not in METHOD_OF_MODE:
        raise ReportError(f'{path}: unknown mode {results["mode"]!r}, expected one of {sorted(METHOD_OF_MODE)}')
    for record in results['tasks']:
        if not isinstance(record, dict) or not {'task', 'seen_classes', 'mean_accuracy'} <= record.keys():
            raise ReportError(f'{path}: each task record needs "task", "seen_classes" and "mean_accuracy"')
    return results


def paper_dataset(name):
    """The paper's dataset a measured one is compared with (mnist_5k -> MNIST)."""
    for paper_name in ('MNIST', 'SVHN', 'LSUN'):
        if name.lower().startswith(paper_name.lower()):
            return paper_name
    return None


def tasks_done(results, record):
    """How many tasks a record comes after: a joint run counts its seen classes instead."""
    return len(record['seen_classes']) if results['mode'] == 'joint' else record['task']


def record_after(results, tasks):
    """The task record after `tasks` tasks, or None."""
    for record in results['tasks']:
        if tasks_done(results, record) == tasks:
            return record
    return None


def measured_values(runs, dataset, method, tasks, key):
    """Every run's value of `key` for this cell, in the paper's units handled by the caller."""
    values = []
    for results in runs:
        if results['dataset'] == dataset and METHOD_OF_MODE[results['mode']] == method:
            record = record_after(results, tasks)
            if record is not None and record.get(key) is not None:
                values.append(float(record[key]))
    return values


def format_cell(values, scale, paper_value, decimals=1):
    """'97.9 (paper 97.93)'; several runs are averaged and counted; missing numbers print as '–'."""
    text = MISSING if not values else f'{scale * np.mean(values):.{decimals}f}'
    if len(values) > 1:
        text += f' [mean of {len(values)}]'
    return text if paper_value is None else f'{text} (paper {paper_value:.2f})'


def table_rows(runs, paper_name):
    """(row label, measured dataset name or None) for one of the paper's datasets."""
    measured = sorted({r['dataset'] for r in runs if paper_dataset(r['dataset']) == paper_name})
    if not measured:
        return [(paper_name, None)]
    return [(paper_name if name.lower() == paper_name.lower() else f'{paper_name} ({name})', name)
            for name in measured]


def comparison_notes(runs):
    names = sorted({r['dataset'] for r in runs if paper_dataset(r['dataset'])})
    return [f"{name} runs are compared against the paper's {paper_dataset(name)} numbers."
            for name in names if name.lower() != paper_dataset(name).lower()]


def build_table(runs, paper=None):
    """Table 1 in Markdown: mean accuracy (%) of generated images after 5 and 10 tasks."""
    paper = paper or load_paper()
    lines = ['| Dataset | After | ' + ' | '.join(TABLE1_METHODS) + ' |',
             '|---|---|' + '---|' * len(TABLE1_METHODS)]
    for paper_name, paper_cells in paper['table1']['datasets'].items():
        for label, dataset in table_rows(runs, paper_name):
            for tasks in TABLE1_HORIZONS:
                cells = [format_cell(measured_values(runs, dataset, method, tasks, 'mean_accuracy'), 100,
                                     paper_cells.get(method, {}).get(str(tasks)))
                         for method in TABLE1_METHODS]
                lines.append(f'| {label} | {tasks} tasks | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('Average accuracy (%) of generated images over the classes seen so far, '
                 'measured (paper value from arXiv 1809.02058, Table 1); – where not measured.')
    lines += comparison_notes([r for r in runs if paper_dataset(r['dataset']) in paper['table1']['datasets']])
    return '\n'.join(lines)


def build_lsun_table(runs, paper=None):
    """Table 2 in Markdown: LSUN after 4 tasks, accuracy, reverse accuracy and FID."""
    paper = paper or load_paper()
    table2 = paper['table2']
    methods = ('Joint',) + tuple(table2['methods'])
    lines = [f"| LSUN after {table2['tasks']} tasks | " + ' | '.join(methods) + ' |',
             '|---|' + '---|' * len(methods)]
    for label, dataset in table_rows(runs, 'LSUN'):
        for row_name, key, paper_metric, scale in TABLE2_ROWS:
            paper_values = table2['metrics'].get(paper_metric, {})
            cells = [format_cell(measured_values(runs, dataset, method, table2['tasks'], key), scale,
                                 paper_values.get(method), decimals=1 if scale == 100 else 2)
                     for method in methods]
            prefix = '' if label == 'LSUN' else f'{label}: '
            lines.append(f'| {prefix}{row_name} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('Measured (paper value from arXiv 1809.02058, Table 2). The paper reports no joint '
                 'training for LSUN; its FID is on Inception features.')
    return '\n'.join(lines)


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def chart_series(runs, paper):
    """Per Table 1 row: label and {(method, tasks): (measured % or nan, paper %)}."""
    series = []
    for paper_name, paper_cells in paper['table1']['datasets'].items():
        for label, dataset in table_rows(runs, paper_name):
            bars = {}
            for method in TABLE1_METHODS:
                for tasks in TABLE1_HORIZONS:
                    values = measured_values(runs, dataset, method, tasks, 'mean_accuracy')
                    bars[method, tasks] = (100 * np.mean(values) if values else np.nan,
                                           paper_cells.get(method, {}).get(str(tasks), np.nan))
            series.append((label, bars))
    return series


def write_chart(runs, path, paper=None):
    """Grouped bars per method: paper and measured, after 5 and after 10 tasks; one panel per row."""
    plt = _pyplot()
    series = chart_series(runs, paper or load_paper())
    fig, axes = plt.subplots(len(series), 1, figsize=(10, 3.2 * len(series)), squeeze=False)
    width = 0.2
    positions = np.arange(len(TABLE1_METHODS))
    styles = [(5, 'paper', '#9ecae1'), (5, 'measured', '#3182bd'),
              (10, 'paper', '#fdae6b'), (10, 'measured', '#e6550d')]
    for ax, (label, bars) in zip(axes[:, 0], series):
        for offset, (tasks, kind, color) in enumerate(styles):
            heights = [bars[m, tasks][0 if kind == 'measured' else 1] for m in TABLE1_METHODS]
            ax.bar(positions + (offset - 1.5) * width, np.nan_to_num(heights), width,
                   color=color, label=f'{kind}, after {tasks}')
        ax.set_xticks(positions, TABLE1_METHODS)
        ax.set_ylim(0, 118)  # headroom above 100 for the legend
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel('mean accuracy (%)')
        ax.set_title(label)
        ax.legend(fontsize=7, ncol=4, loc='upper center')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the measured datasets only: per-run labels and the accuracy after each task ------------

def measured_paper(runs, paper=None):
    """The paper's numbers with Table 1 cut down to the datasets these runs measured."""
    paper = paper or load_paper()
    measured = {paper_dataset(r['dataset']) for r in runs}
    datasets = {name: cells for name, cells in paper['table1']['datasets'].items() if name in measured}
    return dict(paper, table1=dict(paper['table1'], datasets=datasets))


def run_label(results):
    """'MeRGAN-RA'; a joint run names its classes: 'Joint (5 classes)'."""
    method = METHOD_OF_MODE[results['mode']]
    if results['mode'] == 'joint' and results['tasks']:
        return f"{method} ({len(results['tasks'][-1]['seen_classes'])} classes)"
    return method


def run_order(results):
    """Sort key: the paper's column order, joint runs by their number of classes."""
    last = tasks_done(results, results['tasks'][-1]) if results['tasks'] else 0
    return TABLE1_METHODS.index(METHOD_OF_MODE[results['mode']]), last


def horizon(runs):
    return max((tasks_done(r, record) for r in runs for record in r['tasks']), default=0)


def build_task_table(runs, names):
    """Markdown: every run's mean accuracy (%) after each task; joint runs under their class count."""
    columns = range(1, horizon(runs) + 1)
    lines = ['| Run | Dataset | Method | ' + ' | '.join(str(t) for t in columns) + ' |',
             '|---|---|---|' + '---|' * len(columns)]
    for name, results in zip(names, runs):
        records = [record_after(results, t) for t in columns]
        cells = [MISSING if r is None else f"{100 * r['mean_accuracy']:.1f}" for r in records]
        lines.append(f"| {name} | {results['dataset']} | {run_label(results)} | " + ' | '.join(cells) + ' |')
    lines += ['', 'Mean accuracy (%) of generated images over the classes seen so far, after each task '
              '(columns); a joint run stands under its number of classes.']
    return '\n'.join(lines)


def markdown_report(runs, names, paper=None):
    """Markdown that depends on the results alone (no dates, no paths): Table 1 of the measured
    datasets, Table 2 when LSUN was measured, and the accuracy after each task."""
    paper = measured_paper(runs, paper)
    parts = []
    if paper['table1']['datasets']:
        parts.append(build_table(runs, paper))
    if any(paper_dataset(r['dataset']) == 'LSUN' for r in runs):
        parts.append(build_lsun_table(runs, paper))
    parts.append(build_task_table(runs, names))
    return '\n\n'.join(parts) + '\n'


METHOD_COLORS = dict(zip(TABLE1_METHODS, ('#555555', '#d62728', '#9467bd', '#8c564b', '#1f77b4', '#2ca02c')))
ACCURACY_PLOT_INCHES = (7, 4.5)  # at 100 dpi: 700 x 450 pixels


def accuracy_series(runs):
    """{(dataset, method): [(after tasks, mean accuracy %)]}; runs of one cell are averaged."""
    series = {}
    for dataset in sorted({r['dataset'] for r in runs}):
        for method in TABLE1_METHODS:
            points = [(t, float(100 * np.mean(values))) for t in range(1, horizon(runs) + 1)
                      for values in [measured_values(runs, dataset, method, t, 'mean_accuracy')] if values]
            if points:
                series[dataset, method] = points
    return series


def write_accuracy_plot(runs, path, paper=None):
    """Mean accuracy after each task, one line per method, the paper's values as open circles."""
    plt = _pyplot()
    paper = paper or load_paper()
    series = accuracy_series(runs)
    several = len({dataset for dataset, _ in series}) > 1
    fig, ax = plt.subplots(figsize=ACCURACY_PLOT_INCHES)
    last_task = max(horizon(runs), 1)
    for (dataset, method), points in series.items():
        tasks, values = zip(*points)
        color = METHOD_COLORS[method]
        ax.plot(tasks, values, marker='o', markersize=4, color=color, linestyle='--' if method == 'Joint' else '-',
                label=f'{method} ({dataset})' if several else method)
        paper_cells = paper['table1']['datasets'].get(paper_dataset(dataset), {}).get(method, {})
        for paper_tasks, value in paper_cells.items():
            ax.plot(int(paper_tasks), value, marker='o', markersize=9, markerfacecolor='none',
                    color=color, linestyle='none')
            last_task = max(last_task, int(paper_tasks))
    ax.set_xticks(range(1, last_task + 1))
    ax.set_ylim(0, 102)
    ax.set_xlabel('after task')
    ax.set_ylabel('mean accuracy over seen classes (%)')
    ax.set_title('measured (lines); paper after 5 and 10 tasks (open circles)', fontsize=9)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc='lower left')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- Figure 3: the first fixed-noise samples of every seen class after the last task ---------
# --test tiles each class's 100 fixed-noise samples into a 10x10 grid, row-major, so its first
# row holds samples 0..9, the same noise for every class and every run.
GRID_COLUMNS = 10
FIGURE3_HEADER = 16  # pixels above each panel for its label
FIGURE3_GAP = 8  # white pixels between panels


def grid_first_row(path):
    """The first row of a --test grid as uint8 RGB (tile x 10 tiles), or None if the file is missing."""
    if not os.path.isfile(path):
        return None
    with Image.open(path) as image:
        pixels = np.asarray(image.convert('RGB'))
    tile = pixels.shape[1] // GRID_COLUMNS
    return pixels[:tile]


def figure3_rows(result_dir, results):
    """One row per class seen at the run's last tested task, None where its grid is missing."""
    if not results['tasks']:
        return []
    last = results['tasks'][-1]
    return [grid_first_row(os.path.join(result_dir, 'test', f"task_{last['task']}_class_{c}.png"))
            for c in last['seen_classes']]


def figure3_image(panels):
    """panels: [(label, rows)], rows uint8 RGB strips or None (left white). One panel per run, side
    by side, a label above each; returns the figure as a uint8 RGB array."""
    strips = [row for _, rows in panels for row in rows if row is not None]
    tile = strips[0].shape[0] if strips else 32
    width = GRID_COLUMNS * tile
    height = FIGURE3_HEADER + max((len(rows) for _, rows in panels), default=0) * tile
    canvas = Image.new('RGB', (max(len(panels) * (width + FIGURE3_GAP) - FIGURE3_GAP, 1), height), 'white')
    for index, (label, rows) in enumerate(panels):
        left = index * (width + FIGURE3_GAP)
        header = Image.new('RGB', (width, FIGURE3_HEADER), 'white')  # the label is clipped to its panel
        ImageDraw.Draw(header).text((2, 2), label, fill='black')
        canvas.paste(header, (left, 0))
        for position, row in enumerate(rows):
            if row is not None:
                strip = Image.fromarray(row)
                if strip.size != (width, tile):
                    strip = strip.resize((width, tile), Image.NEAREST)
                canvas.paste(strip, (left, FIGURE3_HEADER + position * tile))
    return np.asarray(canvas)


def write_figure3(result_dirs, runs, path, labels=None):
    """The paper's Figure 3 for these runs: rows are the classes seen, columns the first 10 samples."""
    labels = labels or [run_label(results) for results in runs]
    panels = [(label, figure3_rows(d, results)) for label, d, results in zip(labels, result_dirs, runs)]
    Image.fromarray(figure3_image(panels)).save(path, optimize=True)


# --- the README's block: Table 1 of the runs summarised in reproduction/ ---------------------
README_BEGIN = '<!-- reproduction:begin -->'
README_END = '<!-- reproduction:end -->'


def natural_key(name):
    """mnist_5k_300 before mnist_5k_1000."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def reproduction_groups(reproduction_dir):
    """[(group, [(run name, run folder, results)])] for every <group>/<run>/results.json,
    groups in natural order, runs in the paper's column order."""
    groups = []
    folders = sorted(os.listdir(reproduction_dir), key=natural_key) if os.path.isdir(reproduction_dir) else []
    for group in folders:
        group_dir = os.path.join(reproduction_dir, group)
        names = sorted(os.listdir(group_dir)) if os.path.isdir(group_dir) else []
        runs = [(name, os.path.join(group_dir, name), load_results(os.path.join(group_dir, name)))
                for name in names if os.path.isfile(os.path.join(group_dir, name, 'results.json'))]
        if runs:
            groups.append((group, sorted(runs, key=lambda run: (run_order(run[2]), run[0]))))
    return groups


def group_title(group):
    """'mnist_5k_1000' -> 'mnist_5k, 1000 iterations per task'; other names stay as they are."""
    dataset, _, iters = group.rpartition('_')
    if not dataset or not iters.isdigit():
        return group
    return f'{dataset}, {iters} iterations per task (joint training: {iters} per class)'


def readme_block(reproduction_dir, paper=None):
    """The README's text between its marker lines: Table 1 of every group summarised in
    reproduction_dir. Depends only on the files there, byte for byte."""
    folder = os.path.basename(os.path.normpath(reproduction_dir))
    lines = [f'Made by `python reproduce.py readme --write README.md` from the run summaries in `{folder}/`; '
             'do not edit it by hand.', '']
    groups = reproduction_groups(reproduction_dir)
    if not groups:
        lines += [f'No run is summarised in `{folder}/` yet: `make reproduce` trains, tests and summarises '
                  'the protocol.', '']
    for group, runs in groups:
        results = [r for _, _, r in runs]
        lines += [f'**{group_title(group)}** (`{folder}/{group}/`)', '',
                  build_table(results, measured_paper(results, paper)), '']
    lines.append(f'Accuracy after each task, figures and the exact commands of every run: '
                 f'[{folder}/report.md]({folder}/report.md).')
    return '\n'.join(lines) + '\n'


def _marker_lines(lines):
    marks = [i for i, line in enumerate(lines) if line.strip() in (README_BEGIN, README_END)]
    if marks and [lines[i].strip() for i in marks] != [README_BEGIN, README_END]:
        raise ReportError(f'the README needs one line {README_BEGIN} and, after it, one line {README_END}')
    return marks


def readme_section(text):
    """The README's text between its marker lines, or None when it has no markers."""
    lines = text.splitlines(keepends=True)
    marks = _marker_lines(lines)
    return ''.join(lines[marks[0] + 1:marks[1]]) if marks else None


def replace_readme_section(text, block):
    """The README with `block` between its marker lines."""
    lines = text.splitlines(keepends=True)
    marks = _marker_lines(lines)
    if not marks:
        raise ReportError(f'the README has no {README_BEGIN} ... {README_END} lines')
    return ''.join(lines[:marks[0] + 1]) + block + ''.join(lines[marks[1]:])


def main(argv=None):
    parser = argparse.ArgumentParser(description='Tables 1 and 2 of the MeRGAN paper, measured vs paper.')
    parser.add_argument('result_dirs', nargs='+', metavar='RESULT_DIR', help='folders holding results.json')
    parser.add_argument('--out', default='report.png', help='bar chart path (default report.png)')
    parser.add_argument('--markdown', action='store_true',
                        help='print only stable Markdown (no paths): Table 1 (and 2) of the measured '
                             'datasets and every run\'s accuracy after each task')
    parser.add_argument('--accuracy_plot', metavar='PATH', help='mean accuracy after each task, one line per method')
    parser.add_argument('--figure3', metavar='PATH',
                        help="the paper's Figure 3: the first 10 fixed-noise samples of every seen class "
                             "after each run's last tested task (needs its test/ grids)")
    args = parser.parse_args(argv)
    try:
        runs = [load_results(d) for d in args.result_dirs]
    except ReportError as error:
        print(f'report.py: error: {error}', file=sys.stderr)
        return 2
    for results in runs:
        if paper_dataset(results['dataset']) is None:
            print(f"report.py: note: dataset {results['dataset']!r} has no counterpart in the paper; "
                  'left out', file=sys.stderr)
    paper = load_paper()
    if args.markdown:
        print(markdown_report(runs, [os.path.basename(os.path.normpath(d)) for d in args.result_dirs], paper),
              end='')
    else:
        print(build_table(runs, paper))
        print()
        print(build_lsun_table(runs, paper))
    figures = [('chart', args.out, lambda path: write_chart(runs, path, paper)),
               ('accuracy plot', args.accuracy_plot, lambda path: write_accuracy_plot(runs, path, paper)),
               ('figure 3', args.figure3, lambda path: write_figure3(args.result_dirs, runs, path))]
    where = sys.stderr if args.markdown else sys.stdout  # --markdown keeps stdout pure Markdown
    if not args.markdown:
        print()
    for name, path, write in figures:
        if path:
            write(path)
            print(f'{name}: {path}', file=where)
    return 0


if __name__ == '__main__':
    sys.exit(main())
