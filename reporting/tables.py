"""Measured runs against the paper, as Markdown: Table 1 (MNIST, SVHN) and Table 2 (LSUN), the mean
accuracy after each task and each class's accuracy after the last task, and whether the
differences between methods after 5 tasks exceed their spread. No TensorFlow: only the
results.json files that `--test` writes are read (reporting.run_results).

A column is a method's label (from results.json), with the options that tell apart runs of that
label shown beside it. Runs of one dataset and column that differ only in their seed are one cell:
its mean, sample standard deviation and count. Columns follow the paper's order, then any other
method in the order the runs bring them.
"""
import os
from typing import NamedTuple

import numpy as np
import scipy.stats

import data
import run_folder
from reporting.run_results import (ReportError, horizon, is_joint, load_paper, paper_dataset, record_after,
                                   tasks_done)

TABLE1_HORIZONS = (5, 10)
# (row label, task-record key, paper metric, scale to the paper's unit)
TABLE2_ROWS = (('accuracy (%)', 'mean_accuracy', 'accuracy', 100),
               ('reverse accuracy (%)', 'reverse_accuracy', 'reverse_accuracy', 100),
               ('FID (Inception)', 'inception_fid', 'fid', 1),
               ('classifier FID (ours, no paper value)', 'classifier_fid', None, 1))
MISSING = '–'
# run entries that are not a method's options
RUN_KEYS = {'dataset', 'method', 'label', 'iters', 'seed', 'num_tasks', 'classes'}
PRECISIONS = ('float32', 'mixed_bfloat16')  # model.PRECISIONS, without importing TensorFlow


# --- columns and cells ----------------------------------------------------------------------

class Column(NamedTuple):
    """A method's label, and what tells its runs apart from other runs of that label."""
    label: str
    detail: str = ''

    def __str__(self):
        return f'{self.label} ({self.detail})' if self.detail else self.label


def method_options(results):
    """The run's options that may set its cell apart: the method's own, and its precision
    (float32 where results.json predates recording it)."""
    options = {key: value for key, value in results['run'].items() if key not in RUN_KEYS}
    return {'precision': PRECISIONS[0], **options}


def format_option(value):
    return f'{value:g}' if isinstance(value, float) else str(value)


def column_of(results, runs):
    """The run's column among `runs`: its label, and each option whose value differs among
    the runs of that label (an EWC sweep's lambda, a rehearsal buffer's size)."""
    same_label = [r for r in runs if r['label'] == results['label']]
    options = method_options(results)
    differing = sorted(key for key in {k for r in same_label for k in method_options(r)}
                       if len({format_option(method_options(r).get(key)) for r in same_label}) > 1)
    return Column(results['label'], ', '.join(f'{key} {format_option(options.get(key, MISSING))}'
                                              for key in differing))


def table1_columns(runs, paper):
    """The paper's Table 1 columns in its order, each run's column after it in its place, then
    the columns of methods the paper does not have, in the order the runs bring them."""
    present = []
    for results in runs:
        column = column_of(results, runs)
        if column not in present:
            present.append(column)
    paper_labels = list(paper['table1']['methods'])
    columns = []
    for label in paper_labels:
        columns += [c for c in present if c.label == label] or [Column(label)]
    return columns + [c for c in present if c.label not in paper_labels]


def measured_values(runs, dataset, column, tasks, key):
    """Every run's value of `key` for this cell (one per seed), unscaled."""
    values = []
    for results in runs:
        if results['dataset'] == dataset and column_of(results, runs) == column:
            record = record_after(results, tasks)
            if record is not None and record.get(key) is not None:
                values.append(float(record[key]))
    return values


def cell_statistics(values):
    """(mean, sample standard deviation or None for one value, n)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None, len(values)


def format_cell(values, scale, paper_value, decimals=1):
    """'97.9 (paper 97.93)' for one run; '97.2 ± 0.4 (n=3)' for runs of several seeds; '–' for none."""
    if not values:
        text = MISSING
    else:
        mean, spread, count = cell_statistics(values)
        text = f'{scale * mean:.{decimals}f}'
        if spread is not None:
            text += f' ± {scale * spread:.{decimals}f} (n={count})'
    return text if paper_value is None else f'{text} (paper {paper_value:.2f})'


# --- Table 1 and Table 2 --------------------------------------------------------------------

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
    columns = table1_columns(runs, paper)
    lines = ['| Dataset | After | ' + ' | '.join(map(str, columns)) + ' |', '|---|---|' + '---|' * len(columns)]
    rows = [(label, dataset, paper_cells) for paper_name, paper_cells in paper['table1']['datasets'].items()
            for label, dataset in table_rows(runs, paper_name)]
    rows += [(name, name, {}) for name in sorted({r['dataset'] for r in runs if paper_dataset(r['dataset']) is None})]
    for label, dataset, paper_cells in rows:
        for tasks in TABLE1_HORIZONS:
            cells = [format_cell(measured_values(runs, dataset, column, tasks, 'mean_accuracy'), 100,
                                 paper_cells.get(column.label, {}).get(str(tasks)))
                     for column in columns]
            lines.append(f'| {label} | {tasks} tasks | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('Average accuracy (%) of generated images over the classes seen so far, '
                 'measured (paper value from arXiv 1809.02058, Table 1); – where not measured; '
                 'mean ± sample standard deviation over n runs that differ only in their seed.')
    lines += comparison_notes([r for r in runs if paper_dataset(r['dataset']) in paper['table1']['datasets']])
    lines += [f'{name} has no paper value: the paper does not use it.' for label, name, cells in rows if not cells]
    note = options_note(runs, columns)
    if note:
        lines.append(note)
    return '\n'.join(lines)


def options_note(runs, columns):
    """Each column's method options, so that a column without a detail (DGR alone in its
    group) still says how its runs were made; None if no run has any. Precision is left
    out: a group's heading names it."""
    parts = []
    for column in columns:
        options = {key: value for results in runs if column_of(results, runs) == column
                   for key, value in method_options(results).items() if key != 'precision'}
        if options:
            parts.append(f'{column}: ' + ', '.join(f'{key} {format_option(value)}'
                                                   for key, value in sorted(options.items())))
    return 'Method options: ' + '; '.join(parts) + '.' if parts else None


def build_lsun_table(runs, paper=None):
    """Table 2 in Markdown: LSUN after 4 tasks, accuracy, reverse accuracy and FID."""
    paper = paper or load_paper()
    table2 = paper['table2']
    columns = [Column('Joint')] + [Column(label) for label in table2['methods']]
    lines = [f"| LSUN after {table2['tasks']} tasks | " + ' | '.join(map(str, columns)) + ' |',
             '|---|' + '---|' * len(columns)]
    for label, dataset in table_rows(runs, 'LSUN'):
        for row_name, key, paper_metric, scale in TABLE2_ROWS:
            paper_values = table2['metrics'].get(paper_metric, {})
            cells = [format_cell(measured_values(runs, dataset, column, table2['tasks'], key), scale,
                                 paper_values.get(column.label), decimals=1 if scale == 100 else 2)
                     for column in columns]
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


def run_label(results, runs=()):
    """'MeRGAN-RA'; a joint run names its classes: 'Joint (5 classes)'; among `runs`, the
    options that tell it apart from runs of its label: 'EWC (EWC_lambda 1e+07)'."""
    column = column_of(results, list(runs) or [results])
    if is_joint(results) and results['tasks']:
        classes = f"{len(results['tasks'][-1]['seen_classes'])} classes"
        return f"{column.label} ({', '.join(filter(None, [classes, column.detail]))})"
    return str(column)


def run_order(results, paper=None):
    """Sort key: the paper's column order (other methods after it), joint runs by their classes."""
    paper_labels = list((paper or load_paper())['table1']['methods'])
    position = paper_labels.index(results['label']) if results['label'] in paper_labels else len(paper_labels)
    last = tasks_done(results, results['tasks'][-1]) if results['tasks'] else 0
    return position, last


def build_task_table(runs, names):
    """Markdown: every run's mean accuracy (%) after each task; joint runs under their class count."""
    columns = range(1, horizon(runs) + 1)
    lines = ['| Run | Dataset | Method | Seed | ' + ' | '.join(str(t) for t in columns) + ' |',
             '|---|---|---|---|' + '---|' * len(columns)]
    for name, results in zip(names, runs):
        records = [record_after(results, t) for t in columns]
        cells = [MISSING if r is None else f"{100 * r['mean_accuracy']:.1f}" for r in records]
        seed = results['run'].get('seed')
        lines.append(f"| {name} | {results['dataset']} | {run_label(results, runs)} | "
                     f"{MISSING if seed is None else seed} | " + ' | '.join(cells) + ' |')
    lines += ['', 'Mean accuracy (%) of generated images over the classes seen so far, after each task '
              '(columns), run by run: the values behind each cell of several seeds; a joint run stands '
              'under its number of classes.']
    return '\n'.join(lines)


def percent(value):
    return MISSING if value is None else f'{100 * value:.1f}'


def build_last_task_table(runs, names):
    """Markdown: after each run's last task, its mean, reverse accuracy, classifier FID and each
    class's accuracy: the evidence behind its Table 1 cell. DGR adds a row of each class's
    share of its generator's draws, as its solver labels them, and of its solver's accuracy
    on real held-out images when --test recorded it."""
    classes = range(max((len(r['tasks'][-1]['seen_classes']) for r in runs if r['tasks']), default=0))
    lines = ['| Run | After task | Mean | Reverse accuracy | Classifier FID | '
             + ' | '.join(str(c) for c in classes) + ' |', '|---|---|---|---|---|' + '---|' * len(classes)]
    extra_rows = {'generated_class_share': 'share of draws', 'solver_accuracy_per_class': 'solver on real images'}
    shown = set()
    for name, results in ((n, r) for n, r in zip(names, runs) if r['tasks']):
        last = results['tasks'][-1]
        fid = last.get('classifier_fid')
        per_class = [percent(last.get('accuracy_per_class', {}).get(str(c))) for c in classes]
        lines.append(f"| {name} | {last['task']} | {percent(last['mean_accuracy'])} | "
                     f"{percent(last.get('reverse_accuracy'))} | {MISSING if fid is None else f'{fid:.1f}'} | "
                     + ' | '.join(per_class) + ' |')
        for key, row_name in extra_rows.items():
            if last.get(key):
                shown.add(key)
                cells = [percent(last[key].get(str(c))) for c in classes]
                lines.append(f"| {name}: {row_name} | {last['task']} | | | | " + ' | '.join(cells) + ' |')
    caption = ("After each run's last task: mean accuracy and each class's accuracy (%, numbered columns), "
               'reverse accuracy (%) and classifier FID.')
    if 'generated_class_share' in shown:
        caption += (" A share-of-draws row: each class's share (%) of the images the run's generator draws, "
                    'as its solver labels them.')
    if 'solver_accuracy_per_class' in shown:
        caption += " A solver row: the solver's accuracy (%) on each class's real held-out images."
    lines += ['', caption]
    for dataset in sorted({r['dataset'] for r in runs} & set(data.DATASET_NAMES)):
        named = data.class_names(dataset)
        if named != data.DIGIT_NAMES:
            lines.append(f'{dataset} classes: ' + ', '.join(f'{c} {n}' for c, n in enumerate(named)) + '.')
    return '\n'.join(lines)


ORDER_TASKS = 5
ORDER_REFERENCE = 'MNIST'  # whose order a dataset the paper does not use (Fashion-MNIST) is held to


SIGNIFICANCE = 0.05  # two-sided, per pair; no correction for the many pairs


class Difference(NamedTuple):
    """Mean of the higher cell minus the lower's, and Welch's test of it (None where a side has
    one run): the standard error sqrt(s_l^2/n_l + s_h^2/n_h), t, its Welch-Satterthwaite
    degrees of freedom and the two-sided p-value."""
    value: float
    error: float = None
    t: float = None
    dof: float = None
    p: float = None


def difference_statistics(lower, higher):
    (mean_l, spread_l, count_l), (mean_h, spread_h, count_h) = cell_statistics(lower), cell_statistics(higher)
    value = mean_h - mean_l
    if spread_l is None or spread_h is None:
        return Difference(value)
    part_l, part_h = spread_l ** 2 / count_l, spread_h ** 2 / count_h
    error = float(np.sqrt(part_l + part_h))
    if error == 0:  # no spread on either side: any difference is beyond it, a tie is not
        return Difference(value, 0.0, None, None, 0.0 if value else 1.0)
    dof = (part_l + part_h) ** 2 / (part_l ** 2 / (count_l - 1) + part_h ** 2 / (count_h - 1))
    t = value / error
    return Difference(value, error, t, dof, float(2 * scipy.stats.t.sf(abs(t), dof)))


def order_verdict(difference):
    if difference.p is None:
        return 'one run on a side: no spread'
    if difference.p >= SIGNIFICANCE:
        return 'within the spread'
    return 'larger than the spread, ' + ('in the paper\'s order' if difference.value > 0 else 'against the paper\'s order')


def format_p(p):
    return '< 0.001' if p < 0.001 else f'{p:.3f}'


def signed_points(fraction):
    """A difference in points with its sign; one that rounds to zero has none ('-0.0' would
    claim a direction)."""
    text = f'{100 * fraction:+.1f}'
    return '0.0' if float(text) == 0 else text


def build_order_table(runs, paper):
    """Markdown: each pair of Table 1 columns that the paper puts in an order after 5 tasks,
    the measured difference and Welch's test of it; None without such a pair."""
    columns = [c for c in table1_columns(runs, paper) if c.label in paper['table1']['methods']]
    lines = []
    for dataset in sorted({r['dataset'] for r in runs if paper_dataset(r['dataset']) != 'LSUN'}):
        reference = paper_dataset(dataset) or ORDER_REFERENCE
        paper_cells = paper['table1']['datasets'].get(reference, {})
        paper_value = {c: paper_cells.get(c.label, {}).get(str(ORDER_TASKS)) for c in columns}
        measured = {c: measured_values(runs, dataset, c, ORDER_TASKS, 'mean_accuracy') for c in columns}
        ranked = sorted((c for c in columns if measured[c] and paper_value[c] is not None), key=paper_value.get)
        for index, lower in enumerate(ranked):
            for higher in ranked[index + 1:]:
                if paper_value[lower] == paper_value[higher]:
                    continue
                difference = difference_statistics(measured[lower], measured[higher])
                lines.append(f'| {dataset} | {lower} < {higher} ({reference}: {paper_value[lower]:.2f} < '
                             f'{paper_value[higher]:.2f}) | {signed_points(difference.value)} | '
                             f'{MISSING if difference.error is None else f"{100 * difference.error:.1f}"} | '
                             f'{MISSING if difference.t is None else f"{difference.t:.1f} ({difference.dof:.1f})"} | '
                             f'{MISSING if difference.p is None else format_p(difference.p)} | '
                             f'{order_verdict(difference)} |')
    if not lines:
        return None
    return '\n'.join([f'| Dataset | Pair, as the paper orders it after {ORDER_TASKS} tasks | Measured difference '
                      '(points) | Standard error | Welch t (df) | p | Verdict |', '|---|---|---|---|---|---|---|',
                      *lines, '',
                      f'Mean accuracy after {ORDER_TASKS} tasks of the second method minus the first\'s, over '
                      'the runs of each cell; standard error sqrt(s1²/n1 + s2²/n2); Welch\'s t-test with '
                      'Welch-Satterthwaite degrees of freedom, two-sided; "larger than the spread" where p < '
                      f'{SIGNIFICANCE:g}, for each pair on its own (no correction for the number of pairs). With two '
                      'or three runs a side the test is weak: a difference it does not call larger is not shown '
                      f'to be absent. Datasets the paper does not use are held to its {ORDER_REFERENCE} order.'])


def markdown_report(runs, names, paper=None):
    """Markdown that depends on the results alone (no dates, no paths): Table 1 of the measured
    datasets with the pairs the paper orders, Table 2 when LSUN was measured, the accuracy after
    each task and each class's accuracy after the last task."""
    order = build_order_table(runs, paper or load_paper())
    paper = measured_paper(runs, paper)
    parts = []
    if any(paper_dataset(r['dataset']) != 'LSUN' for r in runs):
        parts.append(build_table(runs, paper))
    if order:
        parts.append(order)
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
            saved = run_folder.read_config(result_dir)
            last = saved['tasks'][-1]['number']
        except run_folder.UsageError as error:
            raise ReportError(f'--figure4: {error}') from error
        except (KeyError, IndexError, TypeError) as error:  # None: no config.json
            raise ReportError(f'--figure4: {result_dir} is not a run folder with its {run_folder.CONFIG_FILE} '
                              'and checkpoints (a reproduction/ summary has neither)') from error
        checkpoint = run_folder.task_checkpoint_path(result_dir, last) + '.index'
        if not os.path.isfile(checkpoint):
            raise ReportError(f'--figure4: {result_dir} has no end-of-task checkpoint of its last task, '
                              f'task {last} (no {checkpoint}); a run stopped early needs --resume first')
