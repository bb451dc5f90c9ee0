"""Joint training, the upper bound: one conditional WGAN-GP on all classes at once.

    python joint.py --dataset mnist --result_path DIR [--classes N] [--test]

The same model, losses and compiled step as main.py, as a single task whose
real batches mix every class and whose fake labels are uniform over them.
"""
import sys

import main
from training import Task, TaskSpec

ITERATION_FACTOR = 10  # the reference trains joint models 10x a task's iterations


def joint_mode(args):
    if args.iters is None:
        args.iters = (main.DATASET_SETTINGS[args.dataset]['iters'] - 1) * ITERATION_FACTOR + 1
    return 'joint'


def joint_parser():
    parser = main.build_parser('Joint training of a conditional WGAN-GP on all classes (upper bound).')
    parser.add_argument('--classes', type=main.positive_int,
                        help='train on the first N classes (default: all); the paper reports 5 and 10')
    return parser


def joint_task(offsets, num_classes):
    """Task number = number of classes, so its results line up with 'after task N'."""
    classes = list(range(num_classes))
    spec = TaskSpec(0, int(offsets[num_classes]), 0, num_classes, 0)
    return Task(num_classes, spec, classes, classes)


def run(argv=None):
    args = main.parse_flags(joint_parser(), argv, joint_mode)
    if args.test:
        return main.test_run(args)
    data = main.load_data(args)
    _, _, offsets = main.group_by_class(data.train_x, data.train_y, data.num_classes)
    num_classes = min(args.classes or data.num_classes, data.num_classes)
    main.train_run(args, data, [joint_task(offsets, num_classes)], main.strategy_for('sft', None))


if __name__ == '__main__':
    sys.exit(run())
