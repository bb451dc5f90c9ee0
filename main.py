"""Memory Replay GANs: learn image classes one task at a time.

    python main.py --dataset mnist [--RA --RA_factor 1e-3 | --JTR] --result_path DIR [--test]

Task t (0-based) holds class t. Without replay (SFT) the generator forgets the
earlier classes; MeRGAN keeps a frozen copy of the previous generator and
replays its samples, as training data (JTR) or through replay alignment (RA).
"""
import argparse
import os
import sys

import evaluate
import model
import ops
import utils
from data import DataError, group_by_class, load_dataset
from training import PRECISIONS, Task, TaskSpec, Trainer

# split_replay_batch: MNIST/SVHN share one batch of replays among the t earlier
# classes (64 // t each); LSUN replays a full batch per earlier class.
DATASET_SETTINGS = {
    'mnist': dict(architecture='dcgan32', iters=4001, ra_factor=1e-3, split_replay_batch=True),
    'mnist_5k': dict(architecture='dcgan32', iters=4001, ra_factor=1e-3, split_replay_batch=True),
    'svhn': dict(architecture='dcgan32', iters=8001, ra_factor=1e-2, split_replay_batch=True),
    'lsun': dict(architecture='resnet64', iters=20001, ra_factor=1e-3, split_replay_batch=False),
}
DEFAULT_DATA_DIRS = {'mnist': 'dataset/mnist', 'svhn': 'dataset/svhn', 'lsun': 'dataset/lsun'}


# --- flags (shared with joint.py) -----------------------------------------------------

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be greater than 0, got {value}')
    return value


def build_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--dataset', required=True, choices=sorted(DATASET_SETTINGS))
    parser.add_argument('--data_dir', help='folder with the dataset files (default dataset/<name>)')
    parser.add_argument('--result_path', help='output folder (default results/<dataset>_<mode>)')
    parser.add_argument('--iters', type=positive_int,
                        help='generator iterations per task (default: the paper\'s, per dataset)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--sample_every', type=positive_int, default=500, help='iterations between sample grids')
    parser.add_argument('--ckpt_every', type=positive_int, default=500, help='iterations between resumable checkpoints')
    parser.add_argument('--log_every', type=positive_int, default=20, help='iterations between TensorBoard scalars')
    parser.add_argument('--resume', action='store_true', help='continue the run in --result_path')
    parser.add_argument('--overwrite', action='store_true', help='replace the run in --result_path')
    parser.add_argument('--deterministic', action='store_true', help='enable TensorFlow op determinism')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help='compute precision; mixed_bfloat16 keeps float32 weights (see README)')
    parser.add_argument('--test', action='store_true', help='evaluate the checkpoint of every task')
    evaluate.add_evaluation_flags(parser)
    return parser


def parse_flags(parser, argv, mode_of):
    """Parse and check flags; errors exit with code 2 before anything is written."""
    args = parser.parse_args(argv)
    try:
        args.mode = mode_of(args)
        settings = DATASET_SETTINGS[args.dataset]
        args.iters = args.iters or settings['iters']
        if args.data_dir is None:
            args.data_dir = DEFAULT_DATA_DIRS.get(args.dataset)
        if args.result_path is None:
            args.result_path = os.path.join('results', f'{args.dataset}_{args.mode}')
        if args.resume and args.overwrite:
            raise utils.UsageError('--resume and --overwrite exclude each other')
        problem = evaluate.validate_evaluation_flags(args)
        if problem:
            raise utils.UsageError(problem)
    except utils.UsageError as error:
        parser.error(str(error))
    return args


def sequential_mode(args):
    if args.RA and args.JTR:
        raise utils.UsageError('choose one replay strategy: --RA or --JTR')
    if args.RA_factor is not None and not args.RA:
        raise utils.UsageError('--RA_factor needs --RA')
    if args.RA:
        args.RA_factor = args.RA_factor or DATASET_SETTINGS[args.dataset]['ra_factor']
    return 'ra' if args.RA else 'jtr' if args.JTR else 'sft'


def main_parser():
    parser = build_parser('Sequential training of a conditional WGAN-GP with memory replay.')
    parser.add_argument('--RA', action='store_true', help='MeRGAN replay alignment')
    parser.add_argument('--RA_factor', type=positive_float, help='weight of the alignment loss')
    parser.add_argument('--JTR', action='store_true', help='MeRGAN joint training with replay')
    parser.add_argument('--num_tasks', type=positive_int, help='stop after the first N tasks (default: all)')
    return parser


# --- replay strategies: each adds loss terms, nothing else -------------------------------
# A strategy is chosen once. From task 2 on, its terms get a training.Replay batch:
# noise and labels of the earlier classes, and any generator's images for them.
# class_scale turns the reference code's per-class sums into one batched
# computation: t when one batch is split among t classes (MNIST, SVHN), else 1.

class SequentialFineTuning:
    """SFT: no replay at all (the forgetting baseline, and joint training)."""
    name = 'sft'
    critic_term_names = ()
    generator_term_names = ()

    def critic_terms(self, models, replay):
        return {}

    def generator_terms(self, models, replay):
        return {}


class ReplayAlignment(SequentialFineTuning):
    """RA: new and old generator must agree pixel-wise on earlier classes for the
    same z; the critic only sees the current class."""
    name = 'ra'
    generator_term_names = ('replay_alignment',)

    def __init__(self, factor):
        self.factor = factor

    def generator_terms(self, models, replay):
        loss = ops.replay_alignment_loss(replay.images(models.generator), replay.images(models.old_generator))
        return {'replay_alignment': self.factor * loss / replay.class_scale}


class JointTrainingWithReplay(SequentialFineTuning):
    """JTR: the old generator's replays stand in for real data of earlier classes.

    The paper describes training on the union of current real data and replays.
    We follow the reference code, which produced the paper's numbers: replays get
    their own WGAN and AC terms, new-G fakes for the same z and class as the fake
    side, no gradient penalty on them, summed over classes (x class_scale).
    """
    name = 'jtr'
    critic_term_names = ('jtr_critic',)
    generator_term_names = ('jtr_generator',)

    def critic_terms(self, models, replay):
        (old_scores, old_logits), (new_scores, _) = model.critic_pass(
            models.critic, replay.images(models.old_generator), replay.images(models.generator))
        loss = (ops.critic_wasserstein_loss(old_scores, new_scores)
                + ops.classification_loss(old_logits, replay.labels))
        return {'jtr_critic': replay.class_scale * loss}

    def generator_terms(self, models, replay):
        new_scores, new_logits = models.critic(replay.images(models.generator))
        loss = ops.generator_wasserstein_loss(new_scores) + ops.classification_loss(new_logits, replay.labels)
        return {'jtr_generator': replay.class_scale * loss}


def strategy_for(mode, ra_factor):
    if mode == 'ra':
        return ReplayAlignment(ra_factor)
    if mode == 'jtr':
        return JointTrainingWithReplay()
    return SequentialFineTuning()


# --- what one run trains ----------------------------------------------------------------

def sequential_tasks(offsets, num_tasks):
    return [Task(t + 1, TaskSpec(int(offsets[t]), int(offsets[t + 1]), t, t + 1, t), list(range(t + 1)), [t])
            for t in range(num_tasks)]


def run_identity(args, data):
    """The flags that make two runs the same run (checked on --resume)."""
    keys = ('dataset', 'mode', 'iters', 'seed', 'RA_factor', 'num_tasks', 'classes', 'deterministic', 'precision')
    identity = {key: getattr(args, key, None) for key in keys}
    identity['data'] = {'train_per_class': data.provenance.get('train_per_class')}
    return identity


def load_data(args):
    try:
        return load_dataset(args.dataset, args.data_dir)
    except DataError as error:
        utils.exit_with_usage_error(str(error))


def train_run(args, data, tasks, strategy):
    """Everything a training run does, for main.py and joint.py alike."""
    try:
        resuming = utils.claim_result_path(args.result_path, run_identity(args, data), args.resume, args.overwrite)
    except utils.UsageError as error:
        utils.exit_with_usage_error(str(error))
    if not resuming:
        utils.write_config(args.result_path, {
            'run': run_identity(args, data), 'args': vars(args), 'versions': utils.package_versions(),
            'settings': DATASET_SETTINGS[args.dataset], 'data': data.provenance,
            'tasks': [task._asdict() for task in tasks]})
    trainer = Trainer(args, data, strategy, DATASET_SETTINGS[args.dataset])
    trainer.train(tasks, resume=resuming)
    print(f'done: results in {args.result_path}')


def evaluation_flag_names():
    parser = argparse.ArgumentParser()
    evaluate.add_evaluation_flags(parser)
    return [action.dest for action in parser._actions if action.dest != 'help']


def test_run(args):
    """--test: grids and metrics for the end-of-task checkpoints of a finished run."""
    config = utils.read_config(args.result_path) if os.path.isdir(args.result_path) else None
    if config is None:
        utils.exit_with_usage_error(f'--test: {args.result_path} holds no run (no {utils.CONFIG_FILE})')
    if config['args']['dataset'] != args.dataset:
        utils.exit_with_usage_error(f"--test: {args.result_path} holds a {config['args']['dataset']} run, "
                                    f'not {args.dataset}')
    # The run's own settings, with this command's evaluation flags.
    run_args = argparse.Namespace(**{**config['args'], 'result_path': args.result_path,
                                     **{name: getattr(args, name) for name in evaluation_flag_names()}})
    data = load_data(run_args)
    tasks = [Task(t['number'], TaskSpec(*t['spec']), t['seen_classes'], t['new_classes'])
             for t in config['tasks']]
    trainer = Trainer(run_args, data, strategy_for('sft', None), DATASET_SETTINGS[run_args.dataset])
    if not trainer.test(tasks, evaluate):
        utils.exit_with_usage_error(f'--test: no end-of-task checkpoint in {args.result_path}/checkpoints/tasks')
    print(f'test grids and metrics in {os.path.join(args.result_path, "test")} and {args.result_path}/results.json')


def main(argv=None):
    args = parse_flags(main_parser(), argv, sequential_mode)
    if args.test:
        return test_run(args)
    data = load_data(args)
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    num_tasks = min(args.num_tasks or data.num_classes, data.num_classes)
    strategy = strategy_for(args.mode, args.RA_factor)
    train_run(args, data, sequential_tasks(offsets, num_tasks), strategy)


if __name__ == '__main__':
    sys.exit(main())
