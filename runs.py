"""Run plumbing for main.py and joint.py: the tasks of a run, claiming the result folder,
training a run, testing a run (the flags and configs are run_config.py's). No method's
mathematics here."""
import dataclasses
import os
import platform
import sys

import exits
import run_folder
import saved_config
import utils
from data import DataError, check_every_class, group_by_class, load_dataset
from evaluation import evaluate
from evaluation.classifier import EvaluationError
from run_config import DATASETS, TrainConfig, parse_request
from training import distribution, methods
from training.callbacks import NonFiniteLoss, ProgressReporter
from training.run_generator import RunGenerator, latest_checkpoint
from training.trainer import Task, TaskSpec, Trainer


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
    """The run's tasks; UsageError when it asks for more classes than the dataset has."""
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    joint = config.method == methods.JointTraining.name
    flag, count = ('--classes', config.classes) if joint else ('--num_tasks', config.num_tasks)
    if count is not None and count > data.num_classes:
        raise utils.UsageError(f'{flag} {count}: {data.name} has {data.num_classes} classes')
    count = count or data.num_classes
    return [joint_task(offsets, count)] if joint else sequential_tasks(offsets, count)


def load_data(config):
    """The run's dataset, every class with training and test images; exits with code 2 otherwise."""
    try:
        data = load_dataset(config.dataset, config.data_dir)
        check_every_class(data)
        return data
    except DataError as error:
        utils.exit_with_usage_error(str(error))


def make_trainer(config, data):
    method = methods.method_for(config.method, config.method_options)
    try:
        return Trainer(config, data, method, config.settings)
    except distribution.DistributionError as error:
        utils.exit_with_usage_error(str(error))


def record_distribution(result_path, trainer):
    """config.json says where the run trains now (--resume may change it); the chief writes it."""
    if trainer.distribution.is_chief:
        saved = run_folder.read_config(result_path)
        run_folder.write_config(result_path, {**saved, 'distribution': trainer.distribution.record()})


# --- training and testing a run ------------------------------------------------------------------

def train(request):
    """Everything a training run does, for main.py and joint.py alike. Nothing is written
    before the flags, the data, the result folder and (multi_worker) the cluster are checked."""
    config = request.config
    data = load_data(config)
    try:
        tasks = tasks_of(config, data)
        if not distribution.chief_process(config.distribute):
            start_cluster(request)
            return train_worker(config, data, tasks, request.resume)
        claim = claim_run_folder(request, data)
        start_cluster(request)
        lock = run_folder.RunLock(config.result_path).acquire()  # noqa: F841  (held until the process ends)
    except utils.UsageError as error:
        utils.exit_with_usage_error(str(error))
    trainer = None
    try:
        prepare_run_folder(config, data, tasks, claim)
        trainer = make_trainer(config, data)
        record_distribution(config.result_path, trainer)
        trainer.train(tasks, resume=claim == 'resume')
    except NonFiniteLoss as error:
        print(f'error: training stopped: {error}. Nothing was written from it. {resume_hint(config)}; '
              'a smaller factor or another seed needs a new run.', file=sys.stderr)
        sys.exit(1)
    except utils.WriteFailed as error:
        utils.exit_with_usage_error(f'{error}. {resume_hint(config)} once the problem (a full disk?) is fixed.')
    except utils.UsageError as error:
        utils.exit_with_usage_error(str(error))
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (exits.Terminated)
        where = f'in task {int(trainer.task_index) + 1}' if trainer else 'before training began'
        exits.exit_interrupted(interrupt, f'{where}. {resume_hint(config)}.')
    except Exception as error:
        if not (config.distribute == 'multi_worker' and distribution.lost_peer(error)):
            raise
        exit_lost_peer(error, f'{resume_hint(config)}, on every task')
    print(f'done: results in {config.result_path}'
          + (f' (weights {weights_fingerprint(trainer)})' if trainer.distribution.workers > 1 else ''))


def claim_run_folder(request, data):
    """'new', 'resume' or 'overwrite' for the result folder; reads only. UsageError when the
    folder cannot take the run, or --overwrite would delete a path the command line names."""
    config = request.config
    claim = run_folder.claim_result_path(config.result_path, config.identity(data), request.resume,
                                         request.overwrite, methods.METHODS[config.method].older_run_options())
    if claim == 'overwrite':
        evaluation = request.evaluation
        run_folder.check_clearing_spares(config.result_path, {
            '--data_dir': config.data_dir, '--classifier_dir': evaluation.classifier_dir,
            '--eval_classifier': evaluation.eval_classifier, '--inception_weights': evaluation.inception_weights})
    problem = claim != 'overwrite' and run_folder.misplaced_entry(config.result_path)
    if problem:
        raise utils.UsageError(problem)
    return claim


def start_cluster(request):
    """--distribute multi_worker: every task up before anything is written; exits with code 2
    when one does not start in time or this task's port is taken."""
    config = request.config
    try:
        distribution.start_cluster(config.distribute, config.devices, request.cluster_timeout)
    except distribution.DistributionError as error:
        utils.exit_with_usage_error(str(error))
    except KeyboardInterrupt as interrupt:
        exits.exit_interrupted(interrupt, 'while waiting for the other tasks: nothing was written.')


def prepare_run_folder(config, data, tasks, claim):
    """Cleared for --overwrite; config.json for a new run."""
    if claim == 'overwrite':
        run_folder.clear_run_folder(config.result_path)
    if claim != 'resume':
        run_folder.write_config(config.result_path, {
            **run_folder.RUN_MARKER, 'run': config.identity(data), 'args': dataclasses.asdict(config),
            'versions': package_versions(),
            'settings': dataclasses.asdict(config.settings), 'data': data.provenance,
            'tasks': [task_record(task) for task in tasks]})


def train_worker(config, data, tasks, resume):
    """A multi_worker process other than the chief: trains in step with it, reads the chief's
    checkpoint to resume (the result folder must be shared), writes nothing."""
    trainer = make_trainer(config, data)
    try:
        if resume:
            trainer.checkpoints.restore_latest()
        trainer.fit(tasks, [ProgressReporter(config.iters)])
    except KeyboardInterrupt as interrupt:
        exits.exit_interrupted(interrupt, f'in task {int(trainer.task_index) + 1}: start every task again with '
                                          '--resume to continue from the chief\'s last checkpoint.')
    except Exception as error:
        if not distribution.lost_peer(error):
            raise
        exit_lost_peer(error, 'Start every task again with --resume to continue from the chief\'s last checkpoint')
    print(f'worker done: weights {weights_fingerprint(trainer)}')


def exit_lost_peer(error, hint):
    """Another task of the cluster stopped: one line, not TensorFlow's page of graph nodes."""
    print(f'error: training stopped: another task of the cluster stopped or cannot be reached '
          f'({type(error).__name__}). {hint}.', file=sys.stderr)
    sys.exit(1)


def weights_fingerprint(trainer):
    models = trainer.models
    return distribution.weights_fingerprint(models.generator.weights + models.critic.weights)


def resume_hint(config):
    latest = latest_checkpoint(config.result_path)
    if latest is None:
        return 'No checkpoint was written yet: add --overwrite to the same command to start over'
    return f'The last checkpoint ({latest}) is intact: add --resume to continue from it'


def package_versions():
    import keras
    import numpy as np
    import scipy
    import tensorflow as tf
    return {'python': platform.python_version(), 'tensorflow': tf.__version__,
            'keras': keras.__version__, 'numpy': np.__version__, 'scipy': scipy.__version__}


def task_record(task):
    return {'number': task.number, 'spec': task.spec._asdict(), 'seen_classes': task.seen_classes,
            'new_classes': task.new_classes}


def read_saved_run(result_path):
    """The TrainConfig and tasks saved in a run folder; UsageError naming the folder if it holds
    none, and naming the key when its config.json was edited into something no run is."""
    saved = run_folder.read_config(result_path) if os.path.isdir(result_path) else None
    if saved is None:
        raise utils.UsageError(f'{result_path} holds no run (no {run_folder.CONFIG_FILE})')
    path = os.path.join(result_path, run_folder.CONFIG_FILE)
    if run_folder.newer_format(saved):
        raise utils.UsageError(run_folder.newer_format_message(path, run_folder.newer_format(saved)))
    if not isinstance(saved, dict) or 'args' not in saved:
        raise utils.UsageError(f'{path} is not a config of this project or is damaged (no "args")')
    args, spelled = saved['args'], {}
    if isinstance(args, dict):
        spelled = {new: old for old, new in run_folder.RENAMED_KEYS.items() if old in args}
        args = run_folder.renamed_keys(args)
    problem = saved_config.args_problem(args, dataclasses.fields(TrainConfig), DATASETS, spelled)
    if problem:
        raise utils.UsageError(f'{path}: {problem} (edited by hand?)')
    config = TrainConfig(**{**args, 'result_path': result_path})
    # options added after the run was made: the values it ran with
    older = methods.METHODS[config.method].older_run_options()
    config = dataclasses.replace(config, method_options={**older, **config.method_options})
    try:
        tasks = [Task(number=t['number'], spec=TaskSpec(**t['spec']), seen_classes=t['seen_classes'],
                      new_classes=t['new_classes']) for t in saved['tasks']]
    except (KeyError, TypeError) as error:
        raise utils.UsageError(f'{path}: "tasks" is not a list of task records of this project '
                               f'({type(error).__name__}: {error})') from error
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


def restored_generator(config, data):
    """The run's generator and sampling networks, to restore from its checkpoints: no optimiser,
    no train step. Evaluation runs on one device."""
    config = dataclasses.replace(config, distribute='none', devices=None)
    return RunGenerator.build(config, data, methods.method_for(config.method, config.method_options))


def last_task_class_images(result_path, class_id, count, data):
    """uint8 images of `class_id` from a saved run's generator after its last task, drawn as
    --test draws them (DGR's may be fewer: only those its solver labels so). `data` is the
    run's dataset. UsageError naming the folder when its last task has no checkpoint."""
    config, tasks = read_saved_run(result_path)
    if config.dataset != data.name:
        raise utils.UsageError(f'{result_path} holds a {config.dataset} run, not {data.name}')
    generator = restored_generator(config, data)
    last = tasks[-1]
    if not generator.restore_task_end(last.number):
        path = run_folder.task_checkpoint_path(result_path, last.number)
        raise utils.UsageError(f'{result_path} has no end-of-task checkpoint of its last task, task {last.number} '
                               f'(no {path}.index)')
    broken = generator.non_finite_networks()
    if broken:
        raise utils.UsageError(f'{result_path}: the task {last.number} checkpoint holds NaN or infinite '
                               f'weights ({", ".join(broken)})')
    return generator.sampler(last)(class_id, count)


def test(request):
    """--test: grids and metrics for the end-of-task checkpoints of a run."""
    if not distribution.chief_process(request.config.distribute):
        print('--test evaluates on one device: the chief does it, this worker has nothing to do')
        return
    result_path = request.config.result_path
    config, tasks = saved_run(result_path, request.config.dataset)
    data = load_data(config)
    evaluation = dataclasses.replace(request.evaluation, seed=config.seed)
    problem = evaluate.output_problem(result_path, evaluation, data.name)  # before minutes of evaluation
    if problem:
        utils.exit_with_usage_error(f'--test: {problem}')
    try:
        tested = evaluate.evaluate_run(restored_generator(config, data), tasks, evaluation)
    except (EvaluationError, utils.UsageError, utils.WriteFailed) as error:
        utils.exit_with_usage_error(f'--test: {error}')
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (exits.Terminated)
        exits.exit_interrupted(interrupt, 'during --test: results.json holds the tasks it finished; '
                                          'run --test again for all of them.')
    if not tested:
        utils.exit_with_usage_error(f'--test: no end-of-task checkpoint in {result_path}/checkpoints/tasks')
    print(f'test grids and metrics in {os.path.join(result_path, "test")} and {result_path}/results.json')


def run(parser, argv, joint=False):
    request = parse_request(parser, argv, joint)
    return test(request) if request.test else train(request)
