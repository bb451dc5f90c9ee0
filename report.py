"""Compare measured runs with the paper: Table 1 (MNIST, SVHN) and Table 2 (LSUN) as Markdown,
the mean accuracy after each task and each class's accuracy after the last task (the README's
block is readme_tables.py's); the command line also draws the figures of figures.py (bar chart,
accuracy after each task, the paper's Figures 3 and 4).

    python report.py RESULT_DIR [RESULT_DIR ...] [--out report.png] [--markdown]
                     [--accuracy_plot PATH] [--figure3 PATH] [--figure4 PATH [--figure4_samples N]]

No TensorFlow here: only the files that `--test` writes (results.json, test/ grids) are read,
except by --figure4, which restores each run's generator after its last task (figures.py).
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np

import data
import utils

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
    """Table 1 in Markdown: mean accuracy (%) of generated images after 5 and 10 tasks; datasets
    the paper did not use (Fashion-MNIST) get rows of their own, without paper values."""
    paper = paper or load_paper()
    lines = ['| Dataset | After | ' + ' | '.join(TABLE1_METHODS) + ' |',
             '|---|---|' + '---|' * len(TABLE1_METHODS)]
    rows = [(label, dataset, paper_cells) for paper_name, paper_cells in paper['table1']['datasets'].items()
            for label, dataset in table_rows(runs, paper_name)]
    rows += [(name, name, {}) for name in sorted({r['dataset'] for r in runs if paper_dataset(r['dataset']) is None})]
    for label, dataset, paper_cells in rows:
        for tasks in TABLE1_HORIZONS:
            cells = [format_cell(measured_values(runs, dataset, method, tasks, 'mean_accuracy'), 100,
                                 paper_cells.get(method, {}).get(str(tasks)))
                     for method in TABLE1_METHODS]
            lines.append(f'| {label} | {tasks} tasks | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('Average accuracy (%) of generated images over the classes seen so far, '
                 'measured (paper value from arXiv 1809.02058, Table 1); – where not measured.')
    lines += comparison_notes([r for r in runs if paper_dataset(r['dataset']) in paper['table1']['datasets']])
    lines += [f'{name} has no paper value: the paper does not use it.' for label, name, cells in rows if not cells]
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


# --- the measured datasets only: per-run labels and the accuracy after each task ------------

def measured_paper(runs, paper=None):
    """The paper's numbers with Table 1 cut down to the datasets these runs measured."""
    paper = paper or load_paper()
    measured = {paper_dataset(r['dataset']) for r in runs}
    datasets = {name: cells for name, cells in paper['table1']['datasets'].items() if name in measured}
    return dict(paper, table1=dict(paper['table1'], datasets=datasets))


def run_label(results):
    """'MeRGAN-RA'; a joint run names its classes: 'Joint (5 classes)'; EWC its lambda."""
    method = METHOD_OF_MODE[results['mode']]
    if results['mode'] == 'joint' and results['tasks']:
        return f"{method} ({len(results['tasks'][-1]['seen_classes'])} classes)"
    if results['mode'] == 'ewc' and results.get('run', {}).get('EWC_lambda') is not None:
        return f"{method} (lambda {results['run']['EWC_lambda']:g})"  # a sweep's runs differ only there
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


def percent(value):
    return MISSING if value is None else f'{100 * value:.1f}'


def build_last_task_table(runs, names):
    """Markdown: after each run's last task, its mean, reverse accuracy, classifier FID and each
    class's accuracy: the evidence behind its Table 1 cell. DGR adds a row of each class's
    share of its generator's draws, as its solver labels them."""
    classes = range(max((len(r['tasks'][-1]['seen_classes']) for r in runs if r['tasks']), default=0))
    lines = ['| Run | After task | Mean | Reverse accuracy | Classifier FID | '
             + ' | '.join(str(c) for c in classes) + ' |', '|---|---|---|---|---|' + '---|' * len(classes)]
    shares_shown = False
    for name, results in ((n, r) for n, r in zip(names, runs) if r['tasks']):
        last = results['tasks'][-1]
        fid = last.get('classifier_fid')
        per_class = [percent(last.get('accuracy_per_class', {}).get(str(c))) for c in classes]
        lines.append(f"| {name} | {last['task']} | {percent(last['mean_accuracy'])} | "
                     f"{percent(last.get('reverse_accuracy'))} | {MISSING if fid is None else f'{fid:.1f}'} | "
                     + ' | '.join(per_class) + ' |')
        if last.get('generated_class_share'):
            shares_shown = True
            shares = [percent(last['generated_class_share'].get(str(c))) for c in classes]
            lines.append(f"| {name}: share of draws | {last['task']} | | | | " + ' | '.join(shares) + ' |')
    caption = ("After each run's last task: mean accuracy and each class's accuracy (%, numbered columns), "
               'reverse accuracy (%) and classifier FID.')
    if shares_shown:
        caption += (" A share-of-draws row: each class's share (%) of the images the run's generator draws, "
                    'as its solver labels them.')
    lines += ['', caption]
    for dataset in sorted({r['dataset'] for r in runs} & set(data.DATASET_NAMES)):
        named = data.class_names(dataset)
        if named != data.DIGIT_NAMES:
            lines.append(f'{dataset} classes: ' + ', '.join(f'{c} {n}' for c, n in enumerate(named)) + '.')
    return '\n'.join(lines)


def markdown_report(runs, names, paper=None):
    """Markdown that depends on the results alone (no dates, no paths): Table 1 of the measured
    datasets, Table 2 when LSUN was measured, the accuracy after each task and each class's
    accuracy after the last task."""
    paper = measured_paper(runs, paper)
    parts = []
    if any(paper_dataset(r['dataset']) != 'LSUN' for r in runs):
        parts.append(build_table(runs, paper))
    if any(paper_dataset(r['dataset']) == 'LSUN' for r in runs):
        parts.append(build_lsun_table(runs, paper))
    parts += [build_task_table(runs, names), build_last_task_table(runs, names)]
    return '\n\n'.join(parts) + '\n'


def check_figure4_runs(result_dirs, runs):
    """ReportError unless the runs share a dataset and each folder still holds the checkpoint of
    its last task, which Figure 4 restores; checked before anything is drawn."""
    datasets = sorted({results['dataset'] for results in runs})
    if len(datasets) > 1:
        raise ReportError(f'--figure4 embeds runs of one dataset, got {", ".join(datasets)}')
    for result_dir in result_dirs:
        try:
            saved = utils.read_config(result_dir)
            last = saved['tasks'][-1]['number']
        except utils.UsageError as error:
            raise ReportError(f'--figure4: {error}') from error
        except (KeyError, IndexError, TypeError) as error:  # None: no config.json
            raise ReportError(f'--figure4: {result_dir} is not a run folder with its {utils.CONFIG_FILE} '
                              'and checkpoints (a reproduction/ summary has neither)') from error
        checkpoint = utils.task_checkpoint_path(result_dir, last) + '.index'
        if not os.path.isfile(checkpoint):
            raise ReportError(f'--figure4: {result_dir} has no end-of-task checkpoint of its last task, '
                              f'task {last} (no {checkpoint}); a run stopped early needs --resume first')


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
    parser.add_argument('--figure4', metavar='PATH',
                        help="the paper's Figure 4: a t-SNE of each run's generated images of class 0 after "
                             "its last task, one colour per run, and real ones, on the evaluation "
                             "classifier's features (needs the runs' checkpoints)")
    parser.add_argument('--figure4_samples', type=utils.positive_int, default=300, metavar='N',
                        help='generated images of class 0 per run in Figure 4 (default 300)')
    parser.add_argument('--classifier_dir', default='classifiers',
                        help="Figure 4: the evaluation classifier's cache, as for --test (default classifiers)")
    parser.add_argument('--eval_classifier', metavar='PATH',
                        help='Figure 4: your own Keras classifier instead, as for --test')
    args = parser.parse_args(argv)
    try:
        runs = [load_results(d) for d in args.result_dirs]
        if args.figure4:
            check_figure4_runs(args.result_dirs, runs)
        if args.eval_classifier and not os.path.isfile(args.eval_classifier):
            raise ReportError(f'--eval_classifier: no such file {args.eval_classifier}')
    except ReportError as error:
        print(f'report.py: error: {error}', file=sys.stderr)
        return 2
    for results in runs:
        if paper_dataset(results['dataset']) is None:
            print(f"report.py: note: dataset {results['dataset']!r} has no counterpart in the paper; "
                  'its rows have no paper values', file=sys.stderr)
    paper = load_paper()
    if args.markdown:
        print(markdown_report(runs, [os.path.basename(os.path.normpath(d)) for d in args.result_dirs], paper),
              end='')
    else:
        print(build_table(runs, paper))
        print()
        print(build_lsun_table(runs, paper))
    import figures  # figures.py imports this module for its look-ups: at the top, a cycle
    writers = [('chart', args.out, lambda path: figures.write_chart(runs, path, paper)),
               ('accuracy plot', args.accuracy_plot, lambda path: figures.write_accuracy_plot(runs, path, paper)),
               ('figure 3', args.figure3, lambda path: figures.write_figure3(args.result_dirs, runs, path)),
               ('figure 4', args.figure4, lambda path: figures.write_figure4(
                   args.result_dirs, runs, path, samples=args.figure4_samples, classifier_dir=args.classifier_dir,
                   eval_classifier=args.eval_classifier))]
    where = sys.stderr if args.markdown else sys.stdout  # --markdown keeps stdout pure Markdown
    if not args.markdown:
        print()
    for name, path, write in writers:
        if path:
            try:
                with contextlib.redirect_stdout(sys.stderr):  # what Figure 4's classifier cache says
                    write(path)
            except ReportError as error:
                print(f'report.py: error: {error}', file=sys.stderr)
                return 2
            print(f'{name}: {path}', file=where)
    return 0


if __name__ == '__main__':
    import report  # the module figures.py imports: its ReportError is the one main catches
    sys.exit(report.main())
