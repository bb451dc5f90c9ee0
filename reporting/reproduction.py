"""The runs summarised in reproduction/, grouped as <group>/<run>/results.json, and the README's
block made from them: Table 1 of every group, kept between the README's marker lines.
reproduce.py calls it (`readme`, and `report` for the groups); the tables themselves are tables.py's.
No TensorFlow here.
"""
import os
import re

import data
from reporting import run_results, tables

README_BEGIN = '<!-- reproduction:begin -->'
README_END = '<!-- reproduction:end -->'


def natural_key(name):
    """mnist_5k_300 before mnist_5k_1000."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def protocol_group(group):
    """(dataset, iterations per task) of a protocol group's name (<dataset>_<iters>); None
    for any other group (a sweep)."""
    dataset, _, iters = group.rpartition('_')
    return (dataset, int(iters)) if dataset in data.DATASET_NAMES and iters.isdigit() else None


def group_name(dataset, iters, precision=tables.PRECISIONS[0]):
    """'mnist_5k_1000'; runs in another precision than float32 get a group of their own, so
    that no cell pools them with float32 runs: 'mnist_5k_1000_mixed_bfloat16'."""
    return f'{dataset}_{iters}' if precision == tables.PRECISIONS[0] else f'{dataset}_{iters}_{precision}'


def group_order(group):
    """Protocol groups (<dataset>_<iters>) first: the paper's datasets first, the larger budget
    first within a dataset; then any other group (a sweep) in natural order."""
    protocol = protocol_group(group)
    if protocol:
        dataset, iters = protocol
        return 0, run_results.paper_dataset(dataset) is None, dataset, -iters
    return 1, natural_key(group)


def budgets_by_dataset(groups):
    """{dataset: [(iterations per task, runs' results)]}, largest budget first, for each
    dataset with protocol groups at two budgets or more (reproduction_groups' groups)."""
    budgets = {}
    for group, runs in groups:
        protocol = protocol_group(group)
        if protocol:
            budgets.setdefault(protocol[0], []).append((protocol[1], [results for _, _, results in runs]))
    return {dataset: sorted(found, key=lambda budget: -budget[0])
            for dataset, found in budgets.items() if len(found) > 1}


def reproduction_groups(reproduction_dir):
    """[(group, [(run name, run folder, results)])] for every <group>/<run>/results.json,
    groups in group_order, runs in the paper's column order."""
    groups = []
    folders = sorted(os.listdir(reproduction_dir), key=group_order) if os.path.isdir(reproduction_dir) else []
    for group in folders:
        group_dir = os.path.join(reproduction_dir, group)
        names = sorted(os.listdir(group_dir)) if os.path.isdir(group_dir) else []
        runs = [(name, os.path.join(group_dir, name), run_results.load_results(os.path.join(group_dir, name)))
                for name in names if os.path.isfile(os.path.join(group_dir, name, 'results.json'))]
        if runs:
            groups.append((group, sorted(runs, key=lambda run: (tables.run_order(run[2]), run[0]))))
    return groups


def group_title(group):
    """'mnist_5k_1000' -> 'mnist_5k, 1000 iterations per task ...', and the same with the
    precision for a group of another precision (mnist_5k_1000_mixed_bfloat16); other names
    (sweeps) stay as they are."""
    for precision in tables.PRECISIONS[1:]:
        if group.endswith(f'_{precision}') and protocol_group(group[:-len(precision) - 1]):
            return f'{group_title(group[:-len(precision) - 1])}, {precision}'
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
        lines += [f'**{group_title(group)}** (`{folder}/{group}/`)', '']
        if run_results.horizon(results) < min(tables.TABLE1_HORIZONS):  # an empty table would say nothing
            lines += [f'No run of this group reached {min(tables.TABLE1_HORIZONS)} tasks; the accuracy after each task '
                      'is in report.md.', '']
        else:
            lines += [tables.build_table(results, tables.measured_paper(results, paper)), '']
    lines.append(f'Accuracy after each task, figures and the exact commands of every run: '
                 f'[{folder}/report.md]({folder}/report.md).')
    return '\n'.join(lines) + '\n'


def _marker_lines(lines):
    marks = [i for i, line in enumerate(lines) if line.strip() in (README_BEGIN, README_END)]
    if marks and [lines[i].strip() for i in marks] != [README_BEGIN, README_END]:
        raise run_results.ReportError(f'the README needs one line {README_BEGIN} and, after it, one line {README_END}')
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
        raise run_results.ReportError(f'the README has no {README_BEGIN} ... {README_END} lines')
    return ''.join(lines[:marks[0] + 1]) + block + ''.join(lines[marks[1]:])
