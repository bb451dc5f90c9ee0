"""Run plumbing for main.py and joint.py: the dataset table, flags defined once,
frozen configs built once from them, the tasks of a run, claiming the result
folder, training a run, testing a run. No method's mathematics here."""
import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass

import distribution
import evaluate
import strategies
import utils
from callbacks import NonFiniteLoss, ProgressReporter, non_finite_networks
from classifier import EvaluationError
from data import DataError, group_by_class, load_dataset
from training import PRECISIONS, Task, TaskSpec, Trainer


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
    mode: str                  # a strategies.STRATEGIES name, or 'joint'
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
    # Where the run trains (distribution.py): not part of its identity, --resume may change it.
    distribute: str = 'none'
    devices: int | None = None

    @property
    def settings(self):
        return DATASETS[self.dataset]

    def identity(self, data):
        """What makes two runs the same run (checked on --resume)."""
        keys = ('dataset', 'mode', 'iters', 'seed', 'num_tasks', 'classes', 'deterministic', 'precision')
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


# --- flags ----------------------------------------------------------------------------------

def seed_value(text):
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f'must be between 0 and 2**32 - 1, got {value}')
    return value


def build_parser(description):
    """The flags main.py and joint.py share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--dataset', required=True, choices=sorted(DATASETS))
    parser.add_argument('--data_dir', help='folder with the dataset files (default dataset/<name>)')
    parser.add_argument('--result_path', help='output folder (default results/<dataset>_<mode>)')
    parser.add_argument('--iters', type=utils.positive_int,
                        help='generator iterations per task (default: the paper\'s, per dataset)')
    parser.add_argument('--seed', type=seed_value, default=0)
    parser.add_argument('--sample_every', type=utils.positive_int, default=500, help='iterations between sample grids')
    parser.add_argument('--ckpt_every', type=utils.positive_int, default=500, help='iterations between resumable checkpoints')
    parser.add_argument('--log_every', type=utils.positive_int, default=20, help='iterations between TensorBoard scalars')
    parser.add_argument('--resume', action='store_true', help='continue the run in --result_path')
    parser.add_argument('--overwrite', action='store_true', help='replace the run in --result_path')
    parser.add_argument('--deterministic', action='store_true', help='enable TensorFlow op determinism')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help='compute precision; mixed_bfloat16 keeps float32 weights (see README)')
    parser.add_argument('--test', action='store_true', help='evaluate the checkpoint of every task')
    parser.add_argument('--distribute', choices=distribution.KINDS, default='none',
                        help='train on one device, on the GPUs of this machine (mirrored) or on the '
                             'machines in TF_CONFIG (multi_worker); the global batch is split among them')
    parser.add_argument('--devices', type=utils.positive_int,
                        help='with --distribute mirrored: the first N GPUs, or N logical CPU devices without a GPU')
    evaluate.add_evaluation_flags(parser)
    return parser


def sequential_parser():
    parser = build_parser('Sequential training of a conditional WGAN-GP with memory replay.')
    strategies.add_method_flags(parser)
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
            mode, options = 'joint', {}
            default_iters = (settings.iters - 1) * JOINT_ITERATION_FACTOR + 1
        else:
            mode, options = strategies.method_from_args(args, settings)
            default_iters = settings.iters
        if args.resume and args.overwrite:
            raise utils.UsageError('--resume and --overwrite exclude each other')
        problem = distribution.validate(args.distribute, args.devices) or evaluate.validate_evaluation_flags(args)
        if not problem and args.test:  # before minutes of evaluation, not after
            problem = evaluate.check_evaluation_files(args)
        if problem:
            raise utils.UsageError(problem)
        result_path = os.path.join('results', f'{args.dataset}_{mode}') if args.result_path is None else args.result_path
        if not result_path.strip():
            raise utils.UsageError('--result_path must not be empty')
    except utils.UsageError as error:
        parser.error(str(error))
    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir if args.data_dir is not None else settings.data_dir,
        result_path=result_path, mode=mode, method_options=options, iters=args.iters or default_iters,
        seed=args.seed, sample_every=args.sample_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
        deterministic=args.deterministic, precision=args.precision,
        num_tasks=args.num_tasks, classes=args.classes, distribute=args.distribute, devices=args.devices)
    return Request(config, evaluation_config(args, args.seed), args.test, args.resume, args.overwrite)


def evaluation_config(source, seed):
    """EvalConfig from anything with the evaluation flags as attributes."""
    names = [field.name for field in dataclasses.fields(EvalConfig) if field.name != 'seed']
    return EvalConfig(**{name: getattr(source, name) for name in names}, seed=seed)


def default_config(dataset, result_path, joint=False, flags=(), **overrides):
    """The config the command line would make, for tests, bench and scripts."""
    parser = joint_parser() if joint else sequential_parser()
    request = parse_request(parser, ['--dataset', dataset, '--result_path', str(result_path), *flags], joint)
    return dataclasses.replace(request.config, **overrides)


# --- what one run trains ----------------------------------------------------------------------

def sequential_tasks(offsets, num_tasks):
    """Task t (0-based) holds class t; the old generator replays classes 0 .. t-1."""
    return [Task(number=t + 1, spec=TaskSpec(real_start=int(offsets[t]), real_end=int(offsets[t + 1]),
                                             fake_label_low=t, fake_label_high=t + 1, earlier_classes=t),
                 seen_classes=list(range(t + 1)), new_classes=[t])
            for t in range(num_tasks)]


def joint_task(offsets, num_classes):
    """One task over the first num_classes classes, numbered by its class count so that
    its results line up with 'after task N'."""
    classes = list(range(num_classes))
    spec = TaskSpec(real_start=0, real_end=int(offsets[num_classes]), fake_label_low=0,
                    fake_label_high=num_classes, earlier_classes=0)
    return Task(number=num_classes, spec=spec, seen_classes=classes, new_classes=classes)


def tasks_of(config, data):
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    if config.mode == 'joint':
        return [joint_task(offsets, min(config.classes or data.num_classes, data.num_classes))]
    return sequential_tasks(offsets, min(config.num_tasks or data.num_classes, data.num_classes))


def load_data(config):
    try:
        return load_dataset(config.dataset, config.data_dir)
    except DataError as error:
        utils.exit_with_usage_error(str(error))


def make_trainer(config, data):
    strategy = strategies.strategy_for(config.mode, config.method_options)
    try:
        return Trainer(config, data, strategy, config.settings)
    except distribution.DistributionError as error:
        utils.exit_with_usage_error(str(error))


def record_distribution(result_path, trainer):
    """config.json says where the run trains now (--resume may change it); the chief writes it."""
    if trainer.distribution.is_chief:
        saved = utils.read_config(result_path)
        utils.write_config(result_path, {**saved, 'distribution': trainer.distribution.record()})


# --- training and testing a run ------------------------------------------------------------------

def train(request):
    """Everything a training run does, for main.py and joint.py alike."""
    config = request.config
    data = load_data(config)
    tasks = tasks_of(config, data)
    if not distribution.chief_process(config.distribute):
        return train_worker(config, data, tasks, request.resume)
    try:
        claim = utils.claim_result_path(config.result_path, config.identity(data), request.resume,
                                        request.overwrite,
                                        strategies.strategy_class(config.mode).older_run_options())
        lock = utils.RunLock(config.result_path).acquire()  # noqa: F841  (held until the process ends)
    except utils.UsageError as error:
        utils.exit_with_usage_error(str(error))
    if claim == 'overwrite':
        utils.clear_run_folder(config.result_path)
    resuming = claim == 'resume'
    if not resuming:
        utils.write_config(config.result_path, {
            **utils.RUN_MARKER, 'run': config.identity(data), 'args': dataclasses.asdict(config), 'versions': utils.package_versions(),
            'settings': dataclasses.asdict(config.settings), 'data': data.provenance,
            'tasks': [task_record(task) for task in tasks]})
    trainer = make_trainer(config, data)
    record_distribution(config.result_path, trainer)
    try:
        trainer.train(tasks, resume=resuming)
    except NonFiniteLoss as error:
        print(f'error: training stopped: {error}. Nothing was written from it. {resume_hint(trainer)}; '
              'a smaller factor or another seed needs a new run.', file=sys.stderr)
        sys.exit(1)
    except utils.WriteFailed as error:
        utils.exit_with_usage_error(f'{error}. {resume_hint(trainer)} once the problem (a full disk?) is fixed.')
    except utils.UsageError as error:
        utils.exit_with_usage_error(str(error))
    except KeyboardInterrupt:
        print(f'\ninterrupted in task {int(trainer.task_index) + 1}. {resume_hint(trainer)}.', file=sys.stderr)
        sys.exit(130)
    print(f'done: results in {config.result_path}'
          + (f' (weights {weights_fingerprint(trainer)})' if trainer.distribution.workers > 1 else ''))


def train_worker(config, data, tasks, resume):
    """A multi_worker process other than the chief: trains in step with it, reads the chief's
    checkpoint to resume (the result folder must be shared), writes nothing."""
    trainer = make_trainer(config, data)
    if resume:
        trainer.checkpoints.restore_latest()
    trainer.fit(tasks, [ProgressReporter(config.iters)])
    print(f'worker done: weights {weights_fingerprint(trainer)}')


def weights_fingerprint(trainer):
    models = trainer.models
    return distribution.weights_fingerprint(models.generator.weights + models.critic.weights)


def resume_hint(trainer):
    latest = trainer.checkpoints.latest_description()
    if latest is None:
        return 'No checkpoint was written yet: add --overwrite to the same command to start over'
    return f'The last checkpoint ({latest}) is intact: add --resume to continue from it'


def task_record(task):
    return {'number': task.number, 'spec': task.spec._asdict(), 'seen_classes': task.seen_classes,
            'new_classes': task.new_classes}


def read_saved_run(result_path):
    """The TrainConfig and tasks saved in a run folder; UsageError naming the folder if it holds none."""
    saved = utils.read_config(result_path) if os.path.isdir(result_path) else None
    if saved is None:
        raise utils.UsageError(f'{result_path} holds no run (no {utils.CONFIG_FILE})')
    try:
        config = TrainConfig(**{**saved['args'], 'result_path': result_path})
        tasks = [Task(number=t['number'], spec=TaskSpec(**t['spec']), seen_classes=t['seen_classes'],
                      new_classes=t['new_classes']) for t in saved['tasks']]
    except (KeyError, TypeError) as error:
        raise utils.UsageError(f'{result_path}/{utils.CONFIG_FILE} is not a config of this project or is '
                               f'damaged ({type(error).__name__}: {error})') from error
    return config, tasks


def saved_run(result_path, dataset):
    """The TrainConfig and tasks saved in a run folder; exits with code 2 if there is none."""
    try:
        config, tasks = read_saved_run(result_path)
    except utils.UsageError as error:
        utils.exit_with_usage_error(f'--test: {error}')
    if config.dataset != dataset:
        utils.exit_with_usage_error(f'--test: {result_path} holds a {config.dataset} run, not {dataset}')
    return config, tasks


def last_task_class_images(result_path, class_id, count, data):
    """uint8 images of `class_id` from a saved run's generator after its last task, drawn as
    --test draws them (DGR's may be fewer: only those its solver labels so). `data` is the
    run's dataset. UsageError naming the folder when its last task has no checkpoint."""
    config, tasks = read_saved_run(result_path)
    if config.dataset != data.name:
        raise utils.UsageError(f'{result_path} holds a {config.dataset} run, not {data.name}')
    trainer = make_trainer(dataclasses.replace(config, distribute='none', devices=None), data)
    last = tasks[-1]
    if not trainer.checkpoints.restore_task_end(last.number):
        raise utils.UsageError(f'{result_path} has no end-of-task checkpoint of its last task, task {last.number} '
                               f'(no {trainer.checkpoints.task_path(last.number)}.index)')
    broken = non_finite_networks(trainer)
    if broken:
        raise utils.UsageError(f'{result_path}: the task {last.number} checkpoint holds NaN or infinite '
                               f'weights ({", ".join(broken)})')
    return trainer.strategy.sampler(trainer, last)(class_id, count)


def test(request):
    """--test: grids and metrics for the end-of-task checkpoints of a run."""
    if not distribution.chief_process(request.config.distribute):
        print('--test evaluates on one device: the chief does it, this worker has nothing to do')
        return
    result_path = request.config.result_path
    config, tasks = saved_run(result_path, request.config.dataset)
    config = dataclasses.replace(config, distribute='none', devices=None)  # evaluation runs on one device
    data = load_data(config)
    evaluation = dataclasses.replace(request.evaluation, seed=config.seed)
    try:
        tested = evaluate.evaluate_run(make_trainer(config, data), tasks, evaluation)
    except (EvaluationError, utils.UsageError) as error:
        utils.exit_with_usage_error(f'--test: {error}')
    if not tested:
        utils.exit_with_usage_error(f'--test: no end-of-task checkpoint in {result_path}/checkpoints/tasks')
    print(f'test grids and metrics in {os.path.join(result_path, "test")} and {result_path}/results.json')


def run(parser, argv, joint=False):
    request = parse_request(parser, argv, joint)
    return test(request) if request.test else train(request)
