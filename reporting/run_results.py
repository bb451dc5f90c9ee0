"""A run's results.json as the reports read it: loaded, checked field by field (an unusable
file raises ReportError naming it and the field), older files brought up to date, and the
questions every table and figure asks of it (after how many tasks a record comes, which of
the paper's datasets it is compared with). No TensorFlow.
"""
import json
import os

import run_folder

PAPER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'paper_results.json')

# results.json written before it recorded the label knew only these methods (frozen: new
# methods record their label)
LABELS_OF_UNLABELLED_RUNS = {'joint': 'Joint', 'sft': 'SFT', 'ewc': 'EWC', 'dgr': 'DGR', 'jtr': 'MeRGAN-JTR',
                             'ra': 'MeRGAN-RA'}


class ReportError(Exception):
    """Unusable input; the message says which file and why."""


def load_paper(path=PAPER_PATH):
    with open(path) as f:
        return json.load(f)


def load_results(result_dir):
    """The results.json of one run, checked for the fields this report reads; written by an
    older version, its 'mode' becomes 'method' and it gets its label."""
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
    if not isinstance(results, dict):
        raise ReportError(f'{path}: not a results.json of this project')
    results = run_folder.renamed_keys(results)
    if results.get('run') is not None and not isinstance(results['run'], dict):
        raise ReportError(f'{path}: "run" is {json.dumps(results["run"])}, not an object')
    results['run'] = run_folder.renamed_keys(results.get('run') or {})
    if not {'dataset', 'method', 'tasks'} <= results.keys():
        raise ReportError(f'{path}: needs "dataset", "method" and "tasks"')
    problem = field_problem(results, RESULT_FIELDS, '')
    if problem:
        raise ReportError(f'{path}: {problem}')
    if 'label' not in results:
        if results['method'] not in LABELS_OF_UNLABELLED_RUNS:
            raise ReportError(f'{path}: no "label" for method {results["method"]!r}; run --test again '
                              'to record it')
        results['label'] = LABELS_OF_UNLABELLED_RUNS[results['method']]
    for index, record in enumerate(results['tasks']):
        if not isinstance(record, dict) or not {'task', 'seen_classes', 'mean_accuracy'} <= record.keys():
            raise ReportError(f'{path}: each task record needs "task", "seen_classes" and "mean_accuracy"')
        problem = field_problem(record, TASK_FIELDS, f'tasks[{index}].')
        if problem:
            raise ReportError(f'{path}: {problem}')
    return results


# The fields the tables and figures read, and what each must be (absent or null: not measured).
RESULT_FIELDS = {'dataset': 'text', 'method': 'text', 'label': 'text', 'tasks': 'list'}
TASK_FIELDS = {'task': 'whole', 'seen_classes': 'wholes', 'mean_accuracy': 'number',
               'accuracy_per_class': 'numbers', 'reverse_accuracy': 'number or null',
               'classifier_fid': 'number or null', 'inception_fid': 'number or null',
               'generated_class_share': 'numbers or null', 'solver_accuracy_per_class': 'numbers or null'}


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_numbers(value):
    """{class: number or null}, as accuracy_per_class."""
    return isinstance(value, dict) and all(x is None or is_number(x) for x in value.values())


KINDS = {'text': lambda v: isinstance(v, str), 'list': lambda v: isinstance(v, list),
         'whole': is_whole, 'number': is_number,
         'wholes': lambda v: isinstance(v, list) and all(map(is_whole, v)),
         'number or null': lambda v: v is None or is_number(v), 'numbers': is_numbers,
         'numbers or null': lambda v: v is None or is_numbers(v)}
KIND_NAMES = {'text': 'a string', 'list': 'a list', 'whole': 'a whole number', 'number': 'a number',
              'wholes': 'a list of whole numbers', 'number or null': 'a number or null',
              'numbers': 'an object of numbers', 'numbers or null': 'an object of numbers or null'}


def field_problem(record, fields, prefix):
    """The first field of `record` that is present but not what the report reads, named."""
    for key, kind in fields.items():
        if key in record and not KINDS[kind](record[key]):
            return f'"{prefix}{key}" is {json.dumps(record[key])}, not {KIND_NAMES[kind]}'
    return None


def paper_dataset(name):
    """The paper's dataset a measured one is compared with (mnist_5k -> MNIST)."""
    for paper_name in ('MNIST', 'SVHN', 'LSUN'):
        if name.lower().startswith(paper_name.lower()):
            return paper_name
    return None


def is_joint(results):
    return results['method'] == 'joint'


def tasks_done(results, record):
    """How many tasks a record comes after: a joint run counts its seen classes instead."""
    return len(record['seen_classes']) if is_joint(results) else record['task']


def record_after(results, tasks):
    """The task record after `tasks` tasks, or None."""
    for record in results['tasks']:
        if tasks_done(results, record) == tasks:
            return record
    return None


def horizon(runs):
    return max((tasks_done(r, record) for r in runs for record in r['tasks']), default=0)

