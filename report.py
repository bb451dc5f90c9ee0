"""Compare measured runs with the paper: Table 1 (MNIST, SVHN) and Table 2 (LSUN) as Markdown,
plus a bar chart of measured vs paper mean accuracy.

    python report.py RESULT_DIR [RESULT_DIR ...] [--out report.png]
"""
import argparse
import json
import os
import sys

import numpy as np

PAPER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_results.json')
METHOD_OF_MODE = {'joint': 'Joint', 'sft': 'SFT', 'jtr': 'MeRGAN-JTR', 'ra': 'MeRGAN-RA'}
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


def record_after(results, tasks):
    """The task record after `tasks` tasks: a joint run counts its seen classes instead."""
    for record in results['tasks']:
        done = len(record['seen_classes']) if results['mode'] == 'joint' else record['task']
        if done == tasks:
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
                 'measured (paper value from arXiv 1809.02058, Table 1). EWC and DGR: paper only.')
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
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt

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


def main(argv=None):
    parser = argparse.ArgumentParser(description='Tables 1 and 2 of the MeRGAN paper, measured vs paper.')
    parser.add_argument('result_dirs', nargs='+', metavar='RESULT_DIR', help='folders holding results.json')
    parser.add_argument('--out', default='report.png', help='bar chart path (default report.png)')
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
    print(build_table(runs, paper))
    print()
    print(build_lsun_table(runs, paper))
    write_chart(runs, args.out, paper)
    print(f'\nchart: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
