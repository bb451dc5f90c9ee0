"""A run's configuration: the dataset table, the flags main.py and joint.py share (defined
once), and the frozen configs and Request parsed from them. Impossible flags are usage
errors (exit code 2) before anything is written."""
import argparse
import dataclasses
import os
from dataclasses import dataclass

import model
import run_folder
import utils
from evaluation import evaluate
from training import distribution, methods


@dataclass(frozen=True)
class DatasetSettings:
    architecture: str
    iters: int                 # the paper's generator iterations per task
    ra_factor: float           # the paper's RA_factor
    split_replay_batch: bool   # MNIST/SVHN share one replay batch among the t earlier
                               # classes (64 // t each); LSUN replays a batch per class
    data_dir: str | None       # default --data_dir; None: the loader knows where to look


DATASETS = {
    'mnist': DatasetSettings('dcgan32', 4001, 1e-3, True, 'dataset/mnist'),
    'mnist_5k': DatasetSettings('dcgan32', 4001, 1e-3, True, None),
    'svhn': DatasetSettings('dcgan32', 8001, 1e-2, True, 'dataset/svhn'),
    'lsun': DatasetSettings('resnet64', 20001, 1e-3, False, 'dataset/lsun'),
    # not in the paper: MNIST's settings; the loader finds Debian's dataset-fashion-mnist files
    'fashion_mnist': DatasetSettings('dcgan32', 4001, 1e-3, True, None),
}
JOINT_ITERATION_FACTOR = 10  # the reference trains joint models 10x a task's iterations


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes and where it writes."""
    dataset: str
    data_dir: str | None
    result_path: str
    method: str                # a methods.METHODS name ('joint' for joint.py)
    method_options: dict       # the method's own options, e.g. {'RA_factor': 1e-3}
    iters: int
    seed: int
    sample_every: int
    ckpt_every: int
    log_every: int
    deterministic: bool
    precision: str
    num_tasks: int | None      # main.py: stop after the first N tasks
    classes: int | None        # joint.py: train on the first N classes
    # Where the run trains (training/distribution.py): not part of its identity, --resume may change it.
    distribute: str = 'none'
    devices: int | None = None

    @property
    def settings(self):
        return DATASETS[self.dataset]

    def identity(self, data):
        """What makes two runs the same run (checked on --resume)."""
        keys = ('dataset', 'method', 'iters', 'seed', 'num_tasks', 'classes', 'deterministic', 'precision')
        identity = {key: getattr(self, key) for key in keys}
        identity.update(self.method_options)
        identity['data'] = {'train_per_class': data.provenance.get('train_per_class')}
        return identity


@dataclass(frozen=True)
class EvalConfig:
    """The --test flags (evaluate.add_evaluation_flags), and the run's seed."""
    eval_samples: int
    reverse_samples: int
    reverse_epochs: int
    fid_samples: int
    eval_classifier: str | None
    classifier_dir: str
    retrain_classifier: bool
    inception_weights: str | None
    export_samples: int
    seed: int


@dataclass(frozen=True)
class Request:
    """One command line: what to do with which run."""
    config: TrainConfig
    evaluation: EvalConfig
    test: bool
    resume: bool
    overwrite: bool
    cluster_timeout: float = distribution.CLUSTER_TIMEOUT_SECONDS  # --distribute multi_worker's start-up


# --- flags ----------------------------------------------------------------------------------

def seed_value(text):
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f'must be between 0 and 2**32 - 1, got {value}')
    return value


def build_parser(description):
    """The flags main.py and joint.py share."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument('--dataset', required=True, choices=sorted(DATASETS))
    parser.add_argument('--data_dir', help='folder with the dataset files (default dataset/<name>)')
    parser.add_argument('--result_path', help='output folder (default results/<dataset>_<method>)')
    parser.add_argument('--iters', type=utils.positive_int,
                        help='generator iterations per task (default: the paper\'s, per dataset)')
    parser.add_argument('--seed', type=seed_value, default=0)
    parser.add_argument('--sample_every', type=utils.positive_int, default=500, help='iterations between sample grids')
    parser.add_argument('--ckpt_every', type=utils.positive_int, default=500, help='iterations between resumable checkpoints')
    parser.add_argument('--log_every', type=utils.positive_int, default=20, help='iterations between TensorBoard scalars')
    parser.add_argument('--resume', action='store_true', help='continue the run in --result_path')
    parser.add_argument('--overwrite', action='store_true', help='replace the run in --result_path')
    parser.add_argument('--deterministic', action='store_true', help='enable TensorFlow op determinism')
    parser.add_argument('--precision', choices=(*model.PRECISIONS, model.AUTO_PRECISION), default='float32',
                        help='compute precision; mixed_bfloat16 keeps float32 weights; auto: mixed_bfloat16 '
                             'where the hardware has bfloat16 units, else float32 (see README)')
    parser.add_argument('--test', action='store_true', help='evaluate the checkpoint of every task')
    parser.add_argument('--distribute', choices=distribution.KINDS, default='none',
                        help='train on one device, on the GPUs of this machine (mirrored) or on the '
                             'machines in TF_CONFIG (multi_worker); the global batch is split among them')
    parser.add_argument('--devices', type=utils.positive_int,
                        help='with --distribute mirrored: the first N GPUs, or N logical CPU devices without a GPU')
    parser.add_argument('--cluster_timeout', type=utils.positive_float, metavar='SECONDS',
                        help='with --distribute multi_worker: wait this long for the other tasks of TF_CONFIG '
                             f'to start (default {distribution.CLUSTER_TIMEOUT_SECONDS})')
    evaluate.add_evaluation_flags(parser)
    return parser


def sequential_parser():
    parser = build_parser('Sequential training of a conditional WGAN-GP with memory replay.')
    methods.add_method_flags(parser)
    parser.add_argument('--num_tasks', type=utils.positive_int, help='stop after the first N tasks (default: all)')
    parser.set_defaults(classes=None)  # joint.py's
    return parser


def joint_parser():
    parser = build_parser('Joint training of a conditional WGAN-GP on all classes (upper bound).')
    parser.add_argument('--classes', type=utils.positive_int,
                        help='train on the first N classes (default: all); the paper reports 5 and 10')
    parser.set_defaults(num_tasks=None)  # main.py's
    return parser


def parse_request(parser, argv, joint=False):
    """Flags to a Request; impossible flags exit with code 2 before anything is written."""
    args = parser.parse_args(argv)
    settings = DATASETS[args.dataset]
    try:
        if joint:
            method, options = methods.JointTraining.name, {}
            default_iters = (settings.iters - 1) * JOINT_ITERATION_FACTOR + 1
        else:
            method, options = methods.method_from_args(args, settings)
            default_iters = settings.iters
        if args.resume and args.overwrite:
            raise utils.UsageError('--resume and --overwrite exclude each other')
        if args.cluster_timeout is not None and args.distribute != 'multi_worker':
            raise utils.UsageError('--cluster_timeout needs --distribute multi_worker')
        problem = distribution.validate(args.distribute, args.devices) or evaluate.validate_evaluation_flags(args)
        if not problem and args.test:  # before minutes of evaluation, not after
            problem = evaluate.check_evaluation_files(args)
        if problem:
            raise utils.UsageError(problem)
        result_path = os.path.join('results', f'{args.dataset}_{method}') if args.result_path is None else args.result_path
        if not result_path.strip():
            raise utils.UsageError('--result_path must not be empty')
        precision = chosen_precision(args.precision, result_path, args.resume)
    except utils.UsageError as error:
        parser.error(str(error))
    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir if args.data_dir is not None else settings.data_dir,
        result_path=result_path, method=method, method_options=options, iters=args.iters or default_iters,
        seed=args.seed, sample_every=args.sample_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
        deterministic=args.deterministic, precision=precision,
        num_tasks=args.num_tasks, classes=args.classes, distribute=args.distribute, devices=args.devices)
    return Request(config, evaluation_config(args, args.seed), args.test, args.resume, args.overwrite,
                   args.cluster_timeout or distribution.CLUSTER_TIMEOUT_SECONDS)


def chosen_precision(flag, result_path, resume):
    """--precision auto keeps, on --resume, the precision the run was started in (config.json
    records it), so that a run continued on other hardware does not change precision."""
    if flag != model.AUTO_PRECISION:
        return flag
    saved = run_folder.read_config(result_path) if resume and os.path.isdir(result_path) else None
    identity = saved.get('run') if isinstance(saved, dict) else None
    saved_precision = identity.get('precision') if isinstance(identity, dict) else None
    return saved_precision if saved_precision in model.PRECISIONS else model.auto_precision()


def evaluation_config(source, seed):
    """EvalConfig from anything with the evaluation flags as attributes."""
    names = [field.name for field in dataclasses.fields(EvalConfig) if field.name != 'seed']
    return EvalConfig(**{name: getattr(source, name) for name in names}, seed=seed)


def default_config(dataset, result_path, joint=False, flags=(), **overrides):
    """The config the command line would make, for tests, bench and scripts."""
    parser = joint_parser() if joint else sequential_parser()
    request = parse_request(parser, ['--dataset', dataset, '--result_path', str(result_path), *flags], joint)
    return dataclasses.replace(request.config, **overrides)
