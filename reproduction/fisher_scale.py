"""How large EWC's penalty is for a generator that learns class 1 and keeps class 0.

    python reproduction/fisher_scale.py RUN_DIR [--batches 10]

RUN_DIR is a conditional run (RA, JTR or SFT) with the end-of-task checkpoints of tasks 1
and 2. F is EWC's per-batch Fisher (training/ewc.py, the default estimate) of the
task-1 generator, with the task-1 critic; d is how far each weight moved from the end of
task 1 to the end of task 2. Printed: F's scale, d's scale, the penalty lambda/2 sum F d^2
each lambda would put on that move, and the share of the moved weights whose penalty
gradient lambda F |d| exceeds their typical loss gradient sqrt(F). findings.md cites it.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import quiet  # noqa: F401,E402  (before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import run_folder  # noqa: E402
import run_config  # noqa: E402
import runs  # noqa: E402
from data import load_dataset  # noqa: E402
from training import ewc, methods  # noqa: E402

LAMBDAS = (1e4, 1e5, 3e5, 1e6, 1e7, 1e9)


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def measure(run_dir, batches):
    """(F, d, the half sum of F d^2) of run_dir, as flat float64 arrays over the generator's weights."""
    saved = run_folder.read_config(run_dir)['args']
    flag = methods.METHODS[saved['method']].flag
    flags = ['--iters', str(saved['iters']), '--num_tasks', str(saved['num_tasks'] or 10), *([flag] if flag else [])]
    config = run_config.default_config(saved['dataset'], run_dir, flags=flags)
    data = load_dataset(config.dataset, config.data_dir)
    trainer = runs.make_trainer(config, data)
    generator = trainer.models.generator
    if not trainer.checkpoints.restore_task_end(2):
        raise SystemExit(f'{run_dir} has no checkpoint of the end of task 2')
    after_task_2 = flat([w.numpy() for w in generator.weights])
    if not trainer.checkpoints.restore_task_end(1):
        raise SystemExit(f'{run_dir} has no checkpoint of the end of task 1')
    squared = tf.function(lambda spec: ewc.fisher_squared_gradients(trainer, spec, per_sample=False))
    spec = trainer.spec_tensors(runs.tasks_of(config, data)[0])
    fisher = sum(flat([g.numpy() for g in squared(spec)]).astype(np.float64) for _ in range(batches)) / batches
    drift = after_task_2.astype(np.float64) - flat([w.numpy() for w in generator.weights])
    return fisher, drift, 0.5 * float(np.sum(fisher * drift ** 2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    parser.add_argument('run_dir')
    parser.add_argument('--batches', type=int, default=10)
    args = parser.parse_args(argv)
    fisher, drift, half_sum = measure(args.run_dir, args.batches)
    moved = drift != 0
    print(f'{fisher.size} generator weights, {int(moved.sum())} moved from the end of task 1 to the end of task 2')
    print(f'F: sum {fisher.sum():.3g}, mean {fisher.mean():.3g}, median {np.median(fisher):.3g}, '
          f'max {fisher.max():.3g}; sqrt(F) median {np.median(np.sqrt(fisher)):.3g}')
    print(f'|d|: rms {np.sqrt(np.mean(drift ** 2)):.3g}, median {np.median(np.abs(drift)):.3g}, '
          f'max {np.abs(drift).max():.3g}')
    print(f'sum F d^2 / 2 = {half_sum:.3g}')
    dominated = (np.sqrt(fisher) * np.abs(drift))[moved]
    for strength in LAMBDAS:
        print(f'lambda {strength:.0e}: penalty of this move {strength * half_sum:.3g}; '
              f'moved weights with lambda F |d| > sqrt(F): {100 * np.mean(strength * dominated > 1):.1f}%')


if __name__ == '__main__':
    main()
