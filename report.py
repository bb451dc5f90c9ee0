"""Compare measured runs with the paper: Table 1 (MNIST, SVHN) and Table 2 (LSUN) as Markdown,
the mean accuracy after each task and each class's accuracy after the last task (the tables of
reporting/tables.py), and the figures of reporting/figures.py (bar chart, accuracy after each
task, the paper's Figures 3 and 4).

    python report.py RESULT_DIR [RESULT_DIR ...] [--out report.png] [--markdown]
                     [--accuracy_plot PATH] [--figure3 PATH] [--figure4 PATH [--figure4_samples N]]

No TensorFlow here: only the files that `--test` writes (results.json, test/ grids) are read,
except by --figure4, which restores each run's generator after its last task.
"""
import argparse
import contextlib
import os
import sys

import exits
import utils
from reporting import figures
from reporting.run_results import ReportError, load_paper, load_results, paper_dataset
from reporting.tables import build_lsun_table, build_table, check_figure4_runs, markdown_report


# What each figure's writer can save: matplotlib's figures, and Figure 3, which PIL saves.
FIGURE_SUFFIXES = {'--out': ('.png', '.pdf', '.svg'), '--accuracy_plot': ('.png', '.pdf', '.svg'),
                   '--figure3': ('.png',), '--figure4': ('.png', '.pdf', '.svg')}


def output_problem(flag, path):
    """Why a figure could not be saved at `path`, checked before anything is read, else None."""
    suffixes = FIGURE_SUFFIXES[flag]
    folder = os.path.dirname(path) or '.'
    if os.path.splitext(path)[1].lower() not in suffixes:
        return f'{flag} {path}: the file name must end in {" or ".join(suffixes)}'
    if os.path.isdir(path):
        return f'{flag} {path} is a folder'
    if not os.path.isdir(folder):
        what = 'is not a folder' if os.path.exists(folder) else 'does not exist'
        return f'{flag} {path}: the folder {folder} {what}'
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description='Tables 1 and 2 of the MeRGAN paper, measured vs paper.',
                                     allow_abbrev=False)
    parser.add_argument('result_dirs', nargs='+', metavar='RESULT_DIR', help='folders holding results.json')
    parser.add_argument('--out', default='report.png', help='bar chart path (default report.png)')
    parser.add_argument('--markdown', action='store_true',
                        help='print only stable Markdown (no paths): Table 1 (and 2) of the measured '
                             'datasets and every run\'s accuracy after each task')
    parser.add_argument('--accuracy_plot', metavar='PATH', help='mean accuracy after each task, one line per method')
    parser.add_argument('--figure3', metavar='PATH',
                        help="the paper's Figure 3: the first 10 fixed-noise samples of every seen class "
                             "after each run's last tested task (needs its test/ grids)")
    parser.add_argument('--figure4', metavar='PATH',
                        help="the paper's Figure 4: a t-SNE of each run's generated images of class 0 after "
                             "its last task, one colour per run, and real ones, on the evaluation "
                             "classifier's features (needs the runs' checkpoints)")
    parser.add_argument('--figure4_samples', type=utils.positive_int, default=300, metavar='N',
                        help='generated images of class 0 per run in Figure 4 (default 300)')
    parser.add_argument('--classifier_dir', default='classifiers',
                        help="Figure 4: the evaluation classifier's cache, as for --test (default classifiers)")
    parser.add_argument('--eval_classifier', metavar='PATH',
                        help='Figure 4: your own Keras classifier instead, as for --test')
    args = parser.parse_args(argv)
    try:
        outputs = {'--out': args.out, '--accuracy_plot': args.accuracy_plot, '--figure3': args.figure3,
                   '--figure4': args.figure4}
        for flag, path in outputs.items():
            problem = path and output_problem(flag, path)
            if problem:
                raise ReportError(problem)
        runs = [load_results(d) for d in args.result_dirs]
        if args.figure4:
            check_figure4_runs(args.result_dirs, runs)
        if args.eval_classifier and not os.path.isfile(args.eval_classifier):
            raise ReportError(f'--eval_classifier: no such file {args.eval_classifier}')
    except ReportError as error:
        print(f'report.py: error: {error}', file=sys.stderr)
        return 2
    for results in runs:
        if paper_dataset(results['dataset']) is None:
            print(f"report.py: note: dataset {results['dataset']!r} has no counterpart in the paper; "
                  'its rows have no paper values', file=sys.stderr)
    paper = load_paper()
    if args.markdown:
        print(markdown_report(runs, [os.path.basename(os.path.normpath(d)) for d in args.result_dirs], paper),
              end='')
    else:
        print(build_table(runs, paper))
        print()
        print(build_lsun_table(runs, paper))
    writers = [('chart', args.out, lambda path: figures.write_chart(runs, path, paper)),
               ('accuracy plot', args.accuracy_plot, lambda path: figures.write_accuracy_plot(runs, path, paper)),
               ('figure 3', args.figure3, lambda path: figures.write_figure3(args.result_dirs, runs, path)),
               ('figure 4', args.figure4, lambda path: figures.write_figure4(
                   args.result_dirs, runs, path, samples=args.figure4_samples, classifier_dir=args.classifier_dir,
                   eval_classifier=args.eval_classifier))]
    where = sys.stderr if args.markdown else sys.stdout  # --markdown keeps stdout pure Markdown
    if not args.markdown:
        print()
    for name, path, write in writers:
        if path:
            try:
                with contextlib.redirect_stdout(sys.stderr):  # what Figure 4's classifier cache says
                    write(path)
            except ReportError as error:
                print(f'report.py: error: {error}', file=sys.stderr)
                return 2
            except OSError as error:  # a full disk, a read-only folder
                print(f'report.py: error: could not write {path} ({error.strerror or error})', file=sys.stderr)
                return 2
            print(f'{name}: {path}', file=where)
    return 0


if __name__ == '__main__':
    exits.stop_on_sigterm()
    with exits.command_line('report.py'):
        sys.exit(main())
