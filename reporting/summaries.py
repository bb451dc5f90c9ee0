"""A run's summary in reproduction/: the few files a reader needs to check its numbers
(config.json, results.json, results.csv, command.txt and the top rows of the last task's
test grids), and the wall-time log that command.txt's time comes from. No TensorFlow."""
import glob
import json
import os
import re

from PIL import Image

import run_folder
import utils
from reporting import figures, run_results

SUMMARY_FILES = ('config.json', 'results.json', 'results.csv')
GRID_ROWS_KEPT = 2  # of each last-task 10x10 test grid: 20 samples, enough for Figure 3, a few kB
WALL_TIME_LOG = 'wall_times.json'  # beside the run folders, never inside one


class SummaryError(Exception):
    """A summary that cannot be written or read; the message names the run or file."""


def format_duration(seconds):
    """3720 -> '1 h 02 min'; 200 -> '3 min 20 s'; 45 -> '45 s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f'{hours} h {minutes:02d} min'
    return f'{minutes} min {seconds:02d} s' if minutes else f'{seconds} s'


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
        raise SummaryError(f'{run_dir}: no {", ".join(missing)} (train it, then run --test)')
    problem = destination_problem(run_dir, dest_dir)
    if problem:
        raise SummaryError(f'{problem}; nothing was written')
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
        raise SummaryError(f'could not write the summary into {dest_dir} ({error.strerror or error})') from error
    except utils.WriteFailed as error:
        raise SummaryError(f'summarise: {error}') from error
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


# --- the wall-time log ------------------------------------------------------------------------

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
