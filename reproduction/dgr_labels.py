"""Whose error is a DGR class's low accuracy: the solver's labels or the generator's images?

    python reproduction/dgr_labels.py RUN_DIR [--count 1000]

RUN_DIR is a DGR run folder with the end-of-task checkpoint of its last task. Printed, after
that task: (1) the solver on the real held-out images, per class, how many it labels so,
their precision and the recall; (2) for each class, `count` generated images that the
solver labels with it (as --test draws them): how the evaluation classifier labels them
and its mean softmax confidence on the images where it disagrees with the solver.
findings.md (the 4,001-iteration DGR) cites it.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import quiet  # noqa: F401,E402  (before TensorFlow loads)
import numpy as np  # noqa: E402

import runs  # noqa: E402
from data import load_dataset  # noqa: E402
from evaluation.classifier import load_or_train_classifier, to_float  # noqa: E402


def labelling_quality(predicted, truth, classes):
    """{class: (images labelled with it, precision, recall)}; precision is nan for a class
    that no image is labelled with."""
    table = {}
    for c in classes:
        labelled = predicted == c
        precision = float(np.mean(truth[labelled] == c)) if labelled.any() else float('nan')
        table[c] = (int(labelled.sum()), precision, float(np.mean(predicted[truth == c] == c)))
    return table


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def second_opinion(solver_class, logits, num_classes):
    """How a second classifier labels images that the solver labels `solver_class`: the share
    of each class, and its mean confidence where it disagrees (nan when it never does)."""
    probabilities = softmax(logits)
    labels = probabilities.argmax(axis=1)
    disagree = labels != solver_class
    confidence = float(probabilities.max(axis=1)[disagree].mean()) if disagree.any() else float('nan')
    return np.bincount(labels, minlength=num_classes) / len(labels), confidence


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    parser.add_argument('run_dir')
    parser.add_argument('--count', type=int, default=1000, help='generated images per class')
    args = parser.parse_args(argv)
    config, tasks = runs.read_saved_run(args.run_dir)
    data = load_dataset(config.dataset, config.data_dir)
    generator = runs.restored_generator(config, data)
    last = tasks[-1]
    if not generator.restore_task_end(last.number):
        raise SystemExit(f'{args.run_dir} has no checkpoint of the end of task {last.number}')
    classes = last.seen_classes
    real = data.test_x.astype(np.float32) / 127.5 - 1.0
    predicted = np.concatenate([generator.method.solver_label(real[i:i + 500]).numpy()
                                for i in range(0, len(real), 500)])
    print(f'after task {last.number}: the solver on the {len(real)} real held-out images')
    for c, (labelled, precision, recall) in labelling_quality(predicted, data.test_y, classes).items():
        print(f'  {c}: labels {labelled} so, precision {100 * precision:.1f}%, recall {100 * recall:.1f}%')
    classifier = load_or_train_classifier(data, 'classifiers')
    sampler = generator.sampler(last)
    print(f'the evaluation classifier on {args.count} generated images the solver labels c: '
          f'% of each class {list(classes)}, confidence where it disagrees')
    for c in classes:
        logits = classifier.model.predict(to_float(sampler(c, args.count)), batch_size=500, verbose=0)
        shares, confidence = second_opinion(c, logits, data.num_classes)
        print(f'  {c}: ' + ' '.join(f'{100 * shares[k]:5.1f}' for k in classes) + f' | {confidence:.3f}')


if __name__ == '__main__':
    main()
