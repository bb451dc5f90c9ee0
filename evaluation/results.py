"""What --test leaves behind: results.json, results.csv and the forgetting plots of a run, the
summary printed after each task, and generated samples saved as npz (--export_samples)."""
import csv
import json
import math
import os

import numpy as np

import utils
from evaluation.classifier import EvalClassifier
from evaluation.metrics import generated_set


def format_task_summary(record, class_names):
    def percent(value):
        return '–' if value is None else f'{100 * value:.1f}%'

    def number(value):
        return '–' if value is None else f'{value:.2f}'

    lines = [f"after task {record['task']}: accuracy of generated images per class"]
    names = {c: c if class_names[int(c)] == c else f'{c} {class_names[int(c)]}' for c in record['accuracy_per_class']}
    missing = {str(c) for c in record.get('missing_classes', [])}
    lines += [f'  {names[c]:>14}: {percent(a)}' + ('  (never generated)' if c in missing else '')
              for c, a in record['accuracy_per_class'].items()]
    lines.append(f"  mean {percent(record['mean_accuracy'])} | reverse accuracy "
                 f"{percent(record['reverse_accuracy'])} | classifier FID {number(record['classifier_fid'])}"
                 f" | Inception FID {number(record['inception_fid'])}")
    if 'solver_mean_accuracy' in record:
        lines.append(f"  solver accuracy on real held-out images: mean {percent(record['solver_mean_accuracy'])}; "
                     + ', '.join(f'{c}: {percent(a)}' for c, a in record['solver_accuracy_per_class'].items()))
    lines += [f'  {name} not computed: {why}' for name, why in record.get('not_computed', {}).items()]
    return '\n'.join(lines)


def export_samples(generate, seen_classes, count, path):
    """Save up to `count` generated uint8 images per seen class with their labels as an npz."""
    x, y = generated_set(generate, seen_classes, count) or (np.zeros((0,), np.uint8), np.zeros(0, np.int64))
    utils.make_folder(os.path.dirname(os.path.abspath(path)))
    utils.write_atomically(path, lambda f: np.savez_compressed(f, x=x, y=y), binary=True)


def finite_or_null(value):
    """NaN and infinity are not JSON: they become null, in nested records too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def write_results(result_path, run_info, task_records, classifier=None):
    """results.json, results.csv and the two plots; run_info must name 'dataset', 'method' and
    'label' (the method's label in tables).

    classifier: the EvalClassifier (or its identity dict) whose numbers these are.
    """
    if isinstance(classifier, EvalClassifier):
        classifier = dict(classifier.identity, test_accuracy=classifier.test_accuracy)
    results = {'dataset': run_info['dataset'], 'method': run_info['method'], 'label': run_info['label'],
               'run': dict(run_info),
               'classifier': classifier, 'tasks': list(task_records)}
    utils.make_folder(result_path)
    results = finite_or_null(json.loads(json.dumps(results, default=str)))  # numpy numbers as JSON sees them
    utils.write_atomically(os.path.join(result_path, 'results.json'),
                           lambda f: json.dump(results, f, indent=2, allow_nan=False))
    utils.write_atomically(os.path.join(result_path, 'results.csv'), lambda f: write_csv(f, task_records))
    plot_accuracy_matrix(task_records, os.path.join(result_path, 'accuracy_matrix.png'))
    plot_mean_accuracy(task_records, os.path.join(result_path, 'mean_accuracy.png'))


def write_csv(f, task_records):
    writer = csv.writer(f)
    writer.writerow(['task', 'class', 'accuracy'])
    for record in task_records:
        for class_id, accuracy in record['accuracy_per_class'].items():
            writer.writerow([record['task'], class_id, f'{accuracy:.6f}'])


def save_figure(fig, path):
    utils.write_atomically(path, lambda f: fig.savefig(f, format='png', dpi=100), binary=True)


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy_matrix(task_records, path):
    """Rows: after task t; columns: class; blank where a class was not yet seen."""
    plt = _pyplot()
    classes = sorted({int(c) for r in task_records for c in r['accuracy_per_class']})
    matrix = np.full((len(task_records), len(classes)), np.nan)
    for row, record in enumerate(task_records):
        for c, accuracy in record['accuracy_per_class'].items():
            matrix[row, classes.index(int(c))] = 100 * accuracy
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.45 * len(task_records)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap='viridis', vmin=0, vmax=100, aspect='auto')
    for (row, col), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(col, row, f'{value:.0f}', ha='center', va='center', fontsize=7,
                    color='black' if value > 60 else 'white')
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    ax.set_yticks(range(len(task_records)), [str(r['task']) for r in task_records])
    ax.set_xlabel('class')
    ax.set_ylabel('after task')
    ax.set_title('accuracy of generated images (%)')
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_mean_accuracy(task_records, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r['task'] for r in task_records], [100 * r['mean_accuracy'] for r in task_records],
            marker='o')
    ax.set_ylim(0, 100)
    ax.set_xlabel('after task')
    ax.set_ylabel('mean accuracy over seen classes (%)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
