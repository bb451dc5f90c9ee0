"""The --test flags and the evaluation of one task: the metrics of metrics.py for the generator
after a task, scored by the evaluation classifier of classifier.py, as one results.json record
(results.py writes the files).
"""
import functools
import os
import time
import warnings

import numpy as np

import model
import run_folder
import utils
from evaluation import metrics, results
from evaluation.classifier import (EvaluationError, cache_problem, first_line, load_or_train_classifier,
                                   load_user_model)


def add_evaluation_flags(parser):
    group = parser.add_argument_group('evaluation (--test)')
    group.add_argument('--eval_samples', type=int, default=6400,
                       help='generated images per class for accuracy (paper: 100 batches of 64)')
    group.add_argument('--reverse_samples', type=int, default=1000,
                       help='generated images per class to train the reverse classifier (0: skip)')
    group.add_argument('--reverse_epochs', type=int, default=3, help='epochs of the reverse classifier')
    group.add_argument('--fid_samples', type=int, default=1000,
                       help='images per class for FID, capped by the real test images of a class (0: skip)')
    group.add_argument('--eval_classifier', metavar='PATH',
                       help='your own Keras classifier (float32 NHWC in [-1, 1] -> class scores)')
    group.add_argument('--classifier_dir', default='classifiers',
                       help='cache of the trained evaluation classifier, one per dataset')
    group.add_argument('--retrain_classifier', action='store_true', help='retrain even if cached')
    group.add_argument('--inception_weights', metavar='PATH',
                       help='local InceptionV3 no-top weights file; adds Inception FID (needs --fid_samples)')
    group.add_argument('--export_samples', type=int, default=0, metavar='N',
                       help='save N generated images per seen class after each task (npz)')


def validate_evaluation_flags(args):
    """An error message for impossible evaluation flags, else None."""
    if args.eval_samples < 1:
        return f'--eval_samples must be at least 1, got {args.eval_samples}'
    for name in ('reverse_samples', 'fid_samples', 'export_samples'):
        if getattr(args, name) < 0:
            return f'--{name} must not be negative, got {getattr(args, name)}'
    if args.reverse_samples > 0 and args.reverse_epochs < 1:
        return f'--reverse_epochs must be at least 1, got {args.reverse_epochs}'
    if args.fid_samples == 1:
        return '--fid_samples must be 0 (skip) or at least 2: a covariance needs two images'
    if args.inception_weights is not None and args.fid_samples == 0:
        return '--inception_weights is for Inception FID, which --fid_samples 0 turns off'
    for name in ('eval_classifier', 'inception_weights'):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            return f'--{name}: no such file {path}'
    if os.path.exists(args.classifier_dir) and not os.path.isdir(args.classifier_dir):
        return f'--classifier_dir: {args.classifier_dir} exists and is not a folder'
    return None


def check_evaluation_files(args, network_builder=None):
    """An error message naming --eval_classifier or --inception_weights if it cannot be loaded, else None.

    Loads the classifier and builds InceptionV3 with the weights (a second or two each), so a
    wrong file stops the command before training or minutes of evaluation. Nothing is kept.
    """
    classifier_path = args.eval_classifier
    if classifier_path:
        try:
            load_user_model(classifier_path)
        except EvaluationError as error:
            return f'--eval_classifier: {error}'
    weights_path = args.inception_weights
    if weights_path:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # wrong files warn per layer; the error says it once
                (network_builder or metrics.build_inception)(weights_path)
        except Exception as error:  # h5py, keras and the OS raise unrelated types for a bad file
            return f'--inception_weights: {weights_path} is not InceptionV3 no-top weights ({first_line(error)})'
    return None


def output_problem(result_path, evaluation, dataset):
    """Why --test could not keep what it computes, checked before the evaluation starts, else
    None: an entry of the wrong kind (test/ a file, results.json a folder), a folder it cannot
    write in, a classifier cache it could not keep. A full disk still shows when writing."""
    problem = run_folder.misplaced_entry(result_path)
    for folder in (result_path, os.path.join(result_path, 'test')):
        if not problem and os.path.isdir(folder):
            problem = utils.writable_folder_problem(folder)
    if not problem and evaluation.eval_classifier is None:
        problem = cache_problem(evaluation.classifier_dir, dataset, evaluation.retrain_classifier)
    return problem


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, round(time.perf_counter() - start, 2)


def _reverse_entry(generate, seen, data, args, not_computed):
    if args.reverse_samples == 0:
        return None, None
    if len(seen) == 1:
        # a classifier that only ever saw that class is trivially 100% right
        not_computed['reverse_accuracy'] = 'one seen class'
        return None, None
    reverse, seconds = _timed(metrics.reverse_accuracy, generate, seen, data, args.reverse_samples,
                              args.reverse_epochs, args.seed)
    if reverse is None:
        not_computed['reverse_accuracy'] = 'no generated images to train on'
    return reverse, seconds


def _fid_entries(generate, seen, data, classifier, args, not_computed, samples):
    """(classifier FID, seconds), (Inception FID, seconds), both on the same images."""
    entries = {'classifier_fid': (None, None), 'inception_fid': (None, None)}
    if args.fid_samples == 0:
        return entries['classifier_fid'], entries['inception_fid']
    (real_x, fake_x), generating_s = _timed(metrics.fid_images, generate, seen, data, args.fid_samples)
    # asked per class: at most the real test images a class has (mnist_5k: 100)
    samples['fid_per_class'] = min([args.fid_samples] + [int(np.count_nonzero(data.test_y == c)) for c in seen])
    samples['fid_real_images'], samples['fid_generated_images'] = len(real_x), len(fake_x)
    spaces = {'classifier_fid': functools.partial(metrics.classifier_features, classifier)}
    if args.inception_weights:
        spaces['inception_fid'] = functools.partial(metrics.inception_features, args.inception_weights)

    def measure(space):  # building the network counts in its time
        return metrics.fid_or_reason(space(), real_x, fake_x)

    for name, space in spaces.items():
        (value, why), seconds = _timed(measure, space)
        entries[name] = (value, round(seconds + generating_s, 2))  # each pays the shared generation
        if why:
            not_computed[name] = why
    return entries['classifier_fid'], entries['inception_fid']


def evaluate_task(generate, task, seen_classes, data, classifier, args, method_metrics=None):
    """task_record, and its summary printed."""
    record = task_record(generate, task, seen_classes, data, classifier, args, method_metrics)
    print(results.format_task_summary(record, data.class_names))
    return record


def task_record(generate, task, seen_classes, data, classifier, args, method_metrics=None):
    """One results.json task record for the generator after `task`, with the method's own
    numbers (method_metrics) added. generate: a sampler (training.sampling), or any
    generate(class_id, count).

    'missing_classes': classes the sampler returned no image of (they score 0);
    'not_computed': why a metric is None when not by a flag; 'generated_class_share' is copied
    from the sampler's `class_shares` when it keeps them.
    """
    seen = [int(c) for c in seen_classes]
    (per_class, counts), accuracy_s = _timed(metrics.generated_accuracy_and_counts, generate, seen,
                                             classifier, args.eval_samples)
    not_computed = {}
    samples = {'accuracy_per_class': args.eval_samples, 'reverse_per_class': None, 'fid_per_class': None}
    reverse, reverse_s = _reverse_entry(generate, seen, data, args, not_computed)
    if reverse is not None:
        samples['reverse_per_class'] = args.reverse_samples
    (fid, fid_s), (inception, inception_s) = _fid_entries(generate, seen, data, classifier, args,
                                                         not_computed, samples)
    record = {'task': int(task), 'seen_classes': seen,
              'accuracy_per_class': {str(c): a for c, a in per_class.items()},
              'mean_accuracy': float(np.mean(list(per_class.values()))),
              'missing_classes': [c for c in seen if counts[c] == 0],
              'reverse_accuracy': reverse, 'classifier_fid': fid, 'inception_fid': inception,
              'not_computed': not_computed, 'samples': samples,
              'timing_s': {'accuracy': accuracy_s, 'reverse_accuracy': reverse_s,
                           'classifier_fid': fid_s, 'inception_fid': inception_s}}
    shares = getattr(generate, 'class_shares', None)  # read last: a sampler may count as it generates
    if shares is not None:
        record['generated_class_share'] = {str(c): float(share) for c, share in shares.items()}
    record.update(method_metrics or {})
    return record


def evaluate_run(run_generator, tasks, evaluation):
    """--test: grids and metrics for every end-of-task checkpoint of a run, results files;
    returns how many checkpoints were found. run_generator: the run's RunGenerator. The
    results files are written after each task, before its summary is printed: an interrupt
    or a closed stdout keeps what is done."""
    config, data = run_generator.config, run_generator.data
    fixed_noise = run_folder.load_or_create_fixed_noise(config.result_path, config.seed, model.Z_DIM)
    classifier = None
    records = []
    skipped, reached = [], 0  # reached: the position of the last task with a checkpoint
    for position, task in enumerate(tasks, 1):
        if not run_generator.restore_task_end(task.number):
            skipped.append(task.number)
            continue
        broken = run_generator.non_finite_networks()
        if broken:
            raise EvaluationError(f'the task {task.number} checkpoint holds NaN or infinite weights '
                                  f'({", ".join(broken)}): nothing to evaluate')
        reached = position
        run_generator.save_class_grids(task, fixed_noise, lambda c: f'test/task_{task.number}_class_{c}.png')
        if classifier is None:
            classifier = load_or_train_classifier(data, evaluation.classifier_dir, evaluation.retrain_classifier,
                                                  evaluation.eval_classifier)
        sampler = run_generator.sampler(task)
        records.append(task_record(sampler, task.number, task.seen_classes, data, classifier, evaluation,
                                   run_generator.method.task_metrics(run_generator, task)))
        if evaluation.export_samples:
            results.export_samples(sampler, task.seen_classes, evaluation.export_samples,
                                   os.path.join(config.result_path, 'test', f'samples_task_{task.number}.npz'))
        results.write_results(config.result_path, run_info(run_generator), records, classifier=classifier)
        print(results.format_task_summary(records[-1], data.class_names))
    if skipped:
        print(skipped_message(config.result_path, tasks, skipped, max(reached, run_generator.tasks_trained())))
    return len(records)


def run_info(run_generator):
    config = run_generator.config
    return {'dataset': config.dataset, 'method': config.method, 'label': run_generator.method.label,
            'iters': config.iters, 'seed': config.seed, 'num_tasks': config.num_tasks,
            'classes': config.classes, 'precision': config.precision, **config.method_options}


def skipped_message(result_path, tasks, skipped, trained):
    """Why tasks have no end-of-task checkpoint: training has not reached them yet (running, or
    stopped: --resume trains them), or the run went past them (`trained` tasks) and the
    checkpoint is gone, which --resume does not write again."""
    numbers = [task.number for task in tasks]
    gone = [n for n in skipped if numbers.index(n) < trained]
    later = [n for n in skipped if n not in gone]
    lines = []
    if gone:
        paths = ', '.join(f'{run_folder.task_checkpoint_path(result_path, n)}.index' for n in gone)
        lines.append(f'--test: skipped {plural("task", gone)}: the run went past {"them" if len(gone) > 1 else "it"}, '
                     f'but the end-of-task checkpoint is missing ({paths}); --resume does not write it again, '
                     'only training the run again (--overwrite) does')
    if later:
        holder = run_folder.lock_holder(os.path.join(result_path, run_folder.LOCK_FILE))
        why = (f'training is still running (PID {holder})' if holder else
               'the run stopped before them; --resume trains them')
        lines.append(f'--test: skipped {plural("task", later)}: no end-of-task checkpoint yet ({why})')
    return '\n'.join(lines)


def plural(word, numbers):
    return f'{word}{"s" if len(numbers) > 1 else ""} {", ".join(map(str, numbers))}'
