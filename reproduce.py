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
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

from PIL import Image

import exits
import run_folder
import utils
from reporting import figures, reproduction, run_results, tables

REPO = os.path.dirname(os.path.abspath(__file__))
REPRODUCTION_DIR = os.path.join(REPO, 'reproduction')
SUMMARY_FILES = ('config.json', 'results.json', 'results.csv')
GRID_ROWS_KEPT = 2  # of each last-task 10x10 test grid: 20 samples, enough for Figure 3, a few kB
WALL_TIME_LOG = 'wall_times.json'  # beside the run folders, never inside one

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


def format_duration(seconds):
    """3720 -> '1 h 02 min'; 200 -> '3 min 20 s'; 45 -> '45 s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f'{hours} h {minutes:02d} min'
    return f'{minutes} min {seconds:02d} s' if minutes else f'{seconds} s'


# --- summaries ---------------------------------------------------------------------------------

def command_text(commands, wall_time_s=None, notes=()):
    lines = ['# The commands that made this run, in order, from the repository root', *commands]
    if wall_time_s is not None:
        readable = f' ({format_duration(wall_time_s)})' if wall_time_s >= 60 else ''
        lines.append(f'# wall time: {wall_time_s:.0f} s{readable}')
    lines += [f'# {note}' for note in notes]
    return '\n'.join(lines) + '\n'


def wall_time_of(command_file):
    """The seconds on command.txt's '# wall time:' line, or None."""
    if not os.path.isfile(command_file):
        return None
    with open(command_file) as f:
        match = re.search(r'^# wall time: (\d+) s', f.read(), re.MULTILINE)
    return int(match.group(1)) if match else None


def copy_grid_rows(source, dest, rows=GRID_ROWS_KEPT):
    """The first `rows` rows of tiles of a 10-column test grid, same pixels and mode."""
    with Image.open(source) as grid:
        tile = grid.width // figures.GRID_COLUMNS
        top = grid.crop((0, 0, grid.width, min(rows * tile, grid.height)))
    utils.write_atomically(dest, lambda f: top.save(f, format='PNG', optimize=True), binary=True)


def copy_file(source, dest):
    """shutil.copyfile through a temporary file: a full disk leaves the earlier summary's file."""
    with open(source, 'rb') as f:
        content = f.read()
    utils.write_atomically(dest, lambda f: f.write(content), binary=True)


def summarise(run_dir, dest_dir, commands, wall_time_s=None, notes=()):
    """Copy a tested run's summary into dest_dir: config.json, results.json, results.csv, a
    command.txt (with the wall time, the notes and the seed) and the top rows of its last
    task's test grids; never checkpoints, noise or npz. dest_dir is new, empty or an earlier
    summary: never a run folder or its own source, checked before anything is written.
    Returns the files written, relative to dest_dir."""
    results = run_results.load_results(run_dir)
    missing = [name for name in SUMMARY_FILES if not os.path.isfile(os.path.join(run_dir, name))]
    if missing:
        raise ReproduceError(f'{run_dir}: no {", ".join(missing)} (train it, then run --test)')
    problem = destination_problem(run_dir, dest_dir)
    if problem:
        raise ReproduceError(f'{problem}; nothing was written')
    last = results['tasks'][-1] if results['tasks'] else {'task': None, 'seen_classes': []}
    grids = [f"test/task_{last['task']}_class_{c}.png" for c in last['seen_classes']]
    grids = [grid for grid in grids if os.path.isfile(os.path.join(run_dir, grid))]
    seed = results.get('run', {}).get('seed')
    try:
        utils.make_folder(os.path.join(dest_dir, 'test'))
        for stale in glob.glob(os.path.join(dest_dir, 'test', 'task_*_class_*.png')):
            os.remove(stale)  # an earlier summary's last task may have been another
        for name in SUMMARY_FILES:
            copy_file(os.path.join(run_dir, name), os.path.join(dest_dir, name))
        for grid in grids:
            copy_grid_rows(os.path.join(run_dir, grid), os.path.join(dest_dir, grid))
        utils.write_atomically(os.path.join(dest_dir, 'command.txt'),
                               lambda f: f.write(command_text(commands, wall_time_s, [*notes, f'seed: {seed}'])))
    except OSError as error:
        raise ReproduceError(f'could not write the summary into {dest_dir} ({error.strerror or error})') from error
    except utils.WriteFailed as error:
        raise ReproduceError(f'summarise: {error}') from error
    return sorted(SUMMARY_FILES + ('command.txt',)) + grids


def destination_problem(run_dir, dest_dir):
    """Why a summary of run_dir must not go into dest_dir, else None: the two are one folder or
    one holds the other, or dest_dir holds what a summary does not write (a run folder, say)."""
    source, dest = os.path.realpath(run_dir), os.path.realpath(dest_dir)
    if os.path.commonpath([source, dest]) in (source, dest):
        return f'{dest_dir} and {run_dir} are the same folder or one holds the other: a summary needs a folder apart'
    if not os.path.isdir(dest_dir):
        return f'{dest_dir} is a file' if os.path.lexists(dest_dir) else None
    entries = set(os.listdir(dest_dir))
    foreign = sorted(entries - {*SUMMARY_FILES, 'command.txt', 'test'})
    test = os.path.join(dest_dir, 'test')
    if 'test' in entries and not (os.path.isdir(test) and all(
            re.fullmatch(r'task_\d+_class_\d+\.png', name) for name in os.listdir(test))):
        foreign.append('test/ with other files')
    if not foreign:
        return None
    try:
        is_run = run_folder.is_run_config(run_folder.read_config(dest_dir))
    except run_folder.UsageError:
        is_run = False
    if is_run:
        return f'{dest_dir} is a run folder (it holds {", ".join(foreign)}): a summary never replaces a run'
    return (f'{dest_dir} holds what a summary does not write ({", ".join(foreign)}): choose a new or empty '
            'folder, or an earlier summary')


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


def read_wall_times(results_root):
    path = os.path.join(results_root, WALL_TIME_LOG)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def log_session(results_root, run, step, seconds):
    """Add one session's time; seconds None marks time spent before this log existed."""
    log = read_wall_times(results_root)
    log.setdefault(run, []).append({'step': step, 'seconds': None if seconds is None else round(seconds, 1)})
    os.makedirs(results_root, exist_ok=True)
    with open(os.path.join(results_root, WALL_TIME_LOG), 'w') as f:
        json.dump(log, f, indent=2, sort_keys=True)


def wall_time_summary(sessions):
    """(total seconds of the logged sessions, notes for command.txt)."""
    timed = [s for s in sessions if s['seconds'] is not None]
    total = sum(s['seconds'] for s in timed)
    steps = [f"{step} {sum(s['seconds'] for s in timed if s['step'] == step):.0f} s in "
             f"{sum(s['step'] == step for s in timed)} session(s)" for step in ('train', 'test')]
    notes = ['; '.join(steps) + ' (sessions of reproduce.py; the machine may have been shared)']
    if any(s['seconds'] is None for s in sessions):
        notes.append('training began before reproduce.py kept time: the wall time is a lower bound')
    return total, notes


def execute(argv, results_root, run, step):
    """Run one command from the repository root with this interpreter; its time is logged
    even when it is interrupted, since --resume goes on from there."""
    start = time.monotonic()
    try:
        code = subprocess.call([sys.executable, *argv], cwd=REPO)
    finally:
        log_session(results_root, run, step, time.monotonic() - start)
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
            if name not in read_wall_times(log_dir) and os.path.isfile(os.path.join(REPO, run_dir, 'config.json')):
                log_session(log_dir, name, 'train', None)  # trained before this log: time unknown
            execute(train, log_dir, name, 'train')
            execute(test, log_dir, name, 'test')
            total, notes = wall_time_summary(read_wall_times(log_dir)[name])
            summarise(os.path.join(REPO, run_dir), dest, [shown(train), shown(test)], total, notes)
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
            seconds = wall_time_of(os.path.join(run_dir, 'command.txt'))
            wall_time = tables.MISSING if seconds is None else format_duration(seconds)
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
            for name in summarise(args.run_dir, args.dest_dir, args.command, args.wall_time, args.note):
                print(os.path.join(args.dest_dir, name))
        elif args.step == 'report':
            write_report(args.reproduction_dir)
        elif args.write:
            print(f"{args.write}: {'updated' if write_readme(args.write, args.reproduction_dir) else 'up to date'}")
        else:
            sys.stdout.write(reproduction.readme_block(args.reproduction_dir))
    except (run_results.ReportError, ReproduceError, utils.WriteFailed) as error:
        print(f'reproduce.py: error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    exits.stop_on_sigterm()
    with exits.command_line('reproduce.py'):
        sys.exit(main())
