"""The reproduction/ folder: run the paper's Table 1 protocol, keep a small summary of every run,
and make the report and the README's block from those summaries.

    python reproduce.py protocol --dataset mnist_5k --iters 1000 --tasks 10 [--runs sft ra] [--seeds 0 1 2]
                                 [--precision mixed_bfloat16] [--dry_run]
    python reproduce.py summarise RUN_DIR DEST_DIR --command "python main.py ..." [--command ...]
                                  [--wall_time SECONDS]
    python reproduce.py report                       # reproduction/report.md and its figures
    python reproduce.py readme [--write README.md]   # the README's block: print it, or put it in place

`make reproduce` runs `protocol`: each run of the protocol that has no
reproduction/<dataset>_<iters>/<run>/results.json yet is trained (--resume) into
results/reproduce_<dataset>_<iters>/<run>, tested, summarised; then the report is made again.
With --seeds, each run once per seed: seed 0 in <run>, seed k in <run>_seed<k>; the report
pools the seeds of a run into one cell. Runs in another precision than float32 form a group of
their own, <dataset>_<iters>_<precision>. No TensorFlow in this process: training and --test
run as main.py and joint.py commands.
"""
import argparse
import collections
import os
import shlex
import subprocess
import sys
import time

import exits
import run_folder
import utils
from reporting import figures, reproduction, run_results, summaries, tables

REPO = os.path.dirname(os.path.abspath(__file__))
REPRODUCTION_DIR = os.path.join(REPO, 'reproduction')

ProtocolRun = collections.namedtuple('ProtocolRun', 'script flags joint_classes')
# The paper's Table 1, the experiment this protocol repeats (not a list of every method: the
# registry in training/methods.py is that): joint training on 5 and on 10 classes (ITERS per
# class), then 10 sequential tasks of each method with the settings below.
# EWC runs at the best lambda of our sweep (reproduction/ewc_sweep_mnist_5k_1000): the paper's
# 1e9 freezes the generator with our Fisher estimate.
EWC_LAMBDA = '1e5'
DEFAULT_PRECISION = tables.PRECISIONS[0]
PROTOCOL = {
    'joint_5': ProtocolRun('joint.py', ('--classes', '5'), 5),
    'joint_10': ProtocolRun('joint.py', ('--classes', '10'), 10),
    'sft': ProtocolRun('main.py', (), None),
    'ewc': ProtocolRun('main.py', ('--EWC', '--EWC_lambda', EWC_LAMBDA), None),
    'dgr': ProtocolRun('main.py', ('--DGR',), None),
    'jtr': ProtocolRun('main.py', ('--JTR',), None),
    'ra': ProtocolRun('main.py', ('--RA',), None),
}


class ReproduceError(Exception):
    """A step that cannot go on; the message names the run or file."""


# --- the protocol --------------------------------------------------------------------------------

def run_folder_name(run, seed):
    """'ra' for seed 0, 'ra_seed2' for seed 2: the committed seed-0 runs keep their names."""
    return run if seed == 0 else f'{run}_seed{seed}'


def run_commands(run, dataset, iters, tasks, run_dir, test_flags=(), seed=0, precision=DEFAULT_PRECISION):
    """(training argv, test argv) of one protocol run, without the interpreter."""
    script, flags, classes = PROTOCOL[run]
    budget = ['--iters', str(iters * classes)] if classes else ['--iters', str(iters), '--num_tasks', str(tasks)]
    seeded = ['--seed', str(seed)] if seed else []
    precise = ['--precision', precision] if precision != DEFAULT_PRECISION else []
    train = [script, '--dataset', dataset, *flags, *budget, *seeded, *precise, '--result_path', run_dir, '--resume']
    test = [script, '--dataset', dataset, '--test', '--result_path', run_dir, *test_flags]
    return train, test


def shown(argv):
    return shlex.join(['python', *argv])


def execute(argv, results_root, run, step):
    """Run one command from the repository root with this interpreter; its time is logged
    even when it is interrupted, since --resume goes on from there."""
    start = time.monotonic()
    try:
        code = subprocess.call([sys.executable, *argv], cwd=REPO)
    finally:
        summaries.log_session(results_root, run, step, time.monotonic() - start)
    if code != 0:
        raise ReproduceError(f'{run}: `{shown(argv)}` exited with code {code}')


def run_protocol(dataset, iters, tasks, runs, reproduction_dir=REPRODUCTION_DIR, results_dir='results',
                 test_flags=(), dry_run=False, execute=execute, seeds=(0,), precision=DEFAULT_PRECISION):
    """Train, test and summarise every run (once per seed) not summarised yet, then make the
    report again. results_dir is relative to the repository root, where the commands run."""
    group = reproduction.group_name(dataset, iters, precision)
    results_root = os.path.join(results_dir, f'reproduce_{group}')
    log_dir = os.path.join(REPO, results_root)
    for run in runs:
        if PROTOCOL[run].joint_classes and PROTOCOL[run].joint_classes > tasks:
            print(f'{group}/{run}: skipped, more classes than --tasks {tasks}')
            continue
        for seed in seeds:
            name = run_folder_name(run, seed)
            dest = os.path.join(reproduction_dir, group, name)
            if os.path.isfile(os.path.join(dest, 'results.json')):
                print(f'{group}/{name}: summarised already, skipped')
                continue
            run_dir = os.path.join(results_root, name)
            train, test = run_commands(run, dataset, iters, tasks, run_dir, test_flags, seed, precision)
            print(f'{group}/{name}:\n  {shown(train)}\n  {shown(test)}', flush=True)
            if dry_run:
                continue
            started = os.path.isfile(os.path.join(REPO, run_dir, 'config.json'))
            if started and not run_folder.holds_checkpoint(os.path.join(REPO, run_dir)):
                # Stopped before its first checkpoint: --resume would refuse, and nothing there can be continued.
                train = ['--overwrite' if arg == '--resume' else arg for arg in train]
                print(f'{group}/{name}: {run_dir} holds no checkpoint yet; started again with --overwrite', flush=True)
            if started and name not in summaries.read_wall_times(log_dir):
                summaries.log_session(log_dir, name, 'train', None)  # trained before this log: time unknown
            execute(train, log_dir, name, 'train')
            execute(test, log_dir, name, 'test')
            total, notes = summaries.wall_time_summary(summaries.read_wall_times(log_dir)[name])
            summaries.summarise(os.path.join(REPO, run_dir), dest, [shown(train), shown(test)], total, notes)
            print(f'{group}/{name}: summarised', flush=True)
    if not dry_run:
        write_report(reproduction_dir)


# --- report.md and the README block ----------------------------------------------------------------

FIGURES = (('table1.png', 'Table 1: measured and paper mean accuracy after 5 and 10 tasks'),
           ('accuracy.png', 'Mean accuracy after each task'),
           ('figure3.png', "Figure 3: the first 10 fixed-noise samples of every class seen, after each "
                           "run's last tested task"),
           # Drawn by report.py --figure4 from run folders with checkpoints, which a summary lacks.
           ('figure4.png', "Figure 4: t-SNE of generated 0s and real 0s on the evaluation classifier's "
                           "features, after each run's last task"))


def write_group_figures(group_dir, run_dirs, runs, paper):
    """table1.png (when the paper has the dataset), accuracy.png and figure3.png."""
    measured = tables.measured_paper(runs, paper)
    if measured['table1']['datasets']:
        figures.write_chart(runs, os.path.join(group_dir, 'table1.png'), measured)
    figures.write_accuracy_plot(runs, os.path.join(group_dir, 'accuracy.png'), paper)
    figures.write_figure3(run_dirs, runs, os.path.join(group_dir, 'figure3.png'))


def budget_plot_name(dataset):
    return f'budgets_{dataset}.png'


def report_markdown(reproduction_dir, paper=None):
    """reproduction/report.md's text from the summaries and figures there; stable byte for byte."""
    paper = paper or run_results.load_paper()
    lines = ['# Reproduction runs', '',
             'Made by `python reproduce.py report` (the last step of `make reproduce`) from the run '
             'summaries in this folder; do not edit it by hand. README.md here explains the folder.', '']
    groups = reproduction.reproduction_groups(reproduction_dir)
    if not groups:
        lines += ['No run is summarised yet.', '']
    for group, group_runs in groups:
        names, run_dirs, runs = (list(column) for column in zip(*group_runs))
        lines += [f'## {reproduction.group_title(group)}', '',
                  tables.markdown_report(runs, names, paper).rstrip('\n'), '']
        for figure, caption in FIGURES:
            if os.path.isfile(os.path.join(reproduction_dir, group, figure)):
                lines += [f'![{caption}]({group}/{figure})', '']
        lines += ['| Run | Tasks tested | Wall time | Commands |', '|---|---|---|---|']
        for name, run_dir, results in zip(names, run_dirs, runs):
            seconds = summaries.wall_time_of(os.path.join(run_dir, 'command.txt'))
            wall_time = tables.MISSING if seconds is None else summaries.format_duration(seconds)
            lines.append(f"| {name} | {len(results['tasks'])} | {wall_time} "
                         f"| [{group}/{name}/command.txt]({group}/{name}/command.txt) |")
        lines.append('')
    for dataset, budgets in reproduction.budgets_by_dataset(groups).items():
        plot = budget_plot_name(dataset)
        if os.path.isfile(os.path.join(reproduction_dir, plot)):
            shown = ' and '.join(f'{iters:,}' for iters, _ in budgets)
            lines += [f'## {dataset} at {shown} iterations per task', '',
                      f'![Mean accuracy after each task of each method at {shown} iterations per task]({plot})', '']
    return '\n'.join(lines)


def write_report(reproduction_dir=REPRODUCTION_DIR, readme_path=os.path.join(REPO, 'README.md')):
    """Figures of every group, then report.md; says when the README's block is out of date."""
    if os.path.lexists(reproduction_dir) and not os.path.isdir(reproduction_dir):
        raise ReproduceError(f'--reproduction_dir {reproduction_dir} is not a folder')
    paper = run_results.load_paper()
    groups = reproduction.reproduction_groups(reproduction_dir)
    for group, group_runs in groups:
        _, run_dirs, runs = zip(*group_runs)
        write_group_figures(os.path.join(reproduction_dir, group), list(run_dirs), list(runs), paper)
    for dataset, budgets in reproduction.budgets_by_dataset(groups).items():
        figures.write_budget_plot(budgets, os.path.join(reproduction_dir, budget_plot_name(dataset)), paper)
    utils.make_folder(reproduction_dir)
    text = report_markdown(reproduction_dir, paper)
    utils.write_atomically(os.path.join(reproduction_dir, 'report.md'), lambda f: f.write(text))
    print(f'report: {os.path.join(reproduction_dir, "report.md")}')
    if os.path.isfile(readme_path):
        with open(readme_path) as f:
            current = reproduction.readme_section(f.read())
        if current is not None and current != reproduction.readme_block(reproduction_dir):
            print(f'note: the block in {readme_path} is out of date: python reproduce.py readme --write README.md')


def write_readme(readme_path, reproduction_dir=REPRODUCTION_DIR):
    """Put the block between the README's marker lines; True when the file changed."""
    try:
        with open(readme_path) as f:
            text = f.read()
    except OSError as error:
        raise ReproduceError(f'--write {readme_path}: {error.strerror or error}') from error
    updated = reproduction.replace_readme_section(text, reproduction.readme_block(reproduction_dir))
    if updated != text:
        utils.write_atomically(readme_path, lambda f: f.write(updated))
    return updated != text


# --- command line ------------------------------------------------------------------------------

def parser():
    main = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    commands = main.add_subparsers(dest='step', required=True)  # not 'command': summarise's flag
    protocol = commands.add_parser('protocol', allow_abbrev=False,
                                   help='train, test and summarise what is not summarised yet')
    protocol.add_argument('--dataset', default='mnist_5k')
    protocol.add_argument('--iters', type=int, default=1000, help='per task; joint runs get this per class')
    protocol.add_argument('--tasks', type=int, default=10, help='sequential runs stop after this many tasks')
    protocol.add_argument('--runs', nargs='+', choices=list(PROTOCOL), default=list(PROTOCOL))
    protocol.add_argument('--seeds', nargs='+', type=int, default=[0], metavar='SEED',
                          help='train each run once per seed (default: 0 only)')
    protocol.add_argument('--precision', choices=tables.PRECISIONS, default=DEFAULT_PRECISION,
                          help='compute precision of the training runs; not float32: a group of its own')
    protocol.add_argument('--test_flags', default='', help='extra --test flags, e.g. "--eval_samples 640"')
    protocol.add_argument('--results_dir', default='results', help='relative to the repository root')
    protocol.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
    summary = commands.add_parser('summarise', allow_abbrev=False, help="copy a tested run's summary files")
    summary.add_argument('run_dir')
    summary.add_argument('dest_dir')
    summary.add_argument('--command', action='append', default=[], required=True,
                         help='a command that made the run (repeat, in order)')
    summary.add_argument('--wall_time', type=float, help='seconds the commands took')
    summary.add_argument('--note', action='append', default=[], help='a line for command.txt (repeat)')
    report_command = commands.add_parser('report', allow_abbrev=False, help='reproduction/report.md and its figures')
    readme = commands.add_parser('readme', allow_abbrev=False,
                                 help="print the README's block, or --write it between the markers")
    readme.add_argument('--write', metavar='README', help='the README file to update in place')
    for sub in (protocol, report_command, readme):
        sub.add_argument('--reproduction_dir', default=REPRODUCTION_DIR)
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        folder = getattr(args, 'reproduction_dir', None)
        if folder and os.path.lexists(folder) and not os.path.isdir(folder):
            raise ReproduceError(f'--reproduction_dir {folder} is not a folder')
        if args.step == 'protocol':
            run_protocol(args.dataset, args.iters, args.tasks, args.runs, args.reproduction_dir,
                         args.results_dir, shlex.split(args.test_flags), args.dry_run, seeds=args.seeds,
                         precision=args.precision)
        elif args.step == 'summarise':
            for name in summaries.summarise(args.run_dir, args.dest_dir, args.command, args.wall_time, args.note):
                print(os.path.join(args.dest_dir, name))
        elif args.step == 'report':
            write_report(args.reproduction_dir)
        elif args.write:
            print(f"{args.write}: {'updated' if write_readme(args.write, args.reproduction_dir) else 'up to date'}")
        else:
            sys.stdout.write(reproduction.readme_block(args.reproduction_dir))
    except (run_results.ReportError, ReproduceError, summaries.SummaryError, utils.WriteFailed) as error:
        print(f'reproduce.py: error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    exits.stop_on_sigterm()
    with exits.command_line('reproduce.py'):
        sys.exit(main())
