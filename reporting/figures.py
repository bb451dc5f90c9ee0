"""The report's figures: measured against paper mean accuracy as bars (Table 1), the mean
accuracy after each task, the paper's Figure 3 (samples of every seen class after the last
task) and Figure 4 (a t-SNE of one class's generated images, a colour per run, and real ones).
Their numbers come from run_results.py's look-ups and tables.py's cells.

No TensorFlow here except for the paper's Figure 4 (a t-SNE of generated images of one class):
it restores each run's generator and imports TensorFlow when it is drawn. The other figures
read only the files that `--test` writes (results.json, test/ grids).
"""
import os

import numpy as np
from PIL import Image, ImageDraw

from reporting import run_results, tables


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def chart_series(runs, paper):
    """The Table 1 columns, and per Table 1 row: label and {(column, tasks): (measured % or nan, paper %)}."""
    columns = tables.table1_columns(runs, paper)
    series = []
    for paper_name, paper_cells in paper['table1']['datasets'].items():
        for label, dataset in tables.table_rows(runs, paper_name):
            bars = {}
            for column in columns:
                for tasks in tables.TABLE1_HORIZONS:
                    values = tables.measured_values(runs, dataset, column, tasks, 'mean_accuracy')
                    bars[column, tasks] = (100 * np.mean(values) if values else np.nan,
                                           paper_cells.get(column.label, {}).get(str(tasks), np.nan))
            series.append((label, bars))
    return columns, series


def write_chart(runs, path, paper=None):
    """Grouped bars per column: paper and measured, after 5 and after 10 tasks; one panel per row."""
    plt = _pyplot()
    columns, series = chart_series(runs, paper or run_results.load_paper())
    fig, axes = plt.subplots(len(series), 1, figsize=(max(10, 1.6 * len(columns)), 3.2 * len(series)), squeeze=False)
    width = 0.2
    positions = np.arange(len(columns))
    styles = [(5, 'paper', '#9ecae1'), (5, 'measured', '#3182bd'),
              (10, 'paper', '#fdae6b'), (10, 'measured', '#e6550d')]
    for ax, (label, bars) in zip(axes[:, 0], series):
        for offset, (tasks, kind, color) in enumerate(styles):
            heights = [bars[c, tasks][0 if kind == 'measured' else 1] for c in columns]
            ax.bar(positions + (offset - 1.5) * width, np.nan_to_num(heights), width,
                   color=color, label=f'{kind}, after {tasks}')
        ax.set_xticks(positions, [str(c) for c in columns], fontsize=8)
        ax.set_ylim(0, 118)  # headroom above 100 for the legend
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel('mean accuracy (%)')
        ax.set_title(label)
        ax.legend(fontsize=7, ncol=4, loc='upper center')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The paper's methods keep these colours in every figure; other methods cycle through the rest.
PAPER_METHOD_COLORS = {'Joint': '#555555', 'SFT': '#d62728', 'EWC': '#9467bd', 'DGR': '#8c564b',
                       'MeRGAN-JTR': '#1f77b4', 'MeRGAN-RA': '#2ca02c'}
OTHER_COLORS = ('#ff7f0e', '#17becf', '#bcbd22', '#e377c2', '#7f7f7f', '#aec7e8', '#98df8a', '#c5b0d5')
ACCURACY_PLOT_INCHES = (7, 4.5)  # at 100 dpi: 700 x 450 pixels


def column_colors(columns):
    """{column: colour}: a paper method's own colour for its first column, the others in turn."""
    colors, others = {}, iter(OTHER_COLORS * (1 + len(columns) // len(OTHER_COLORS)))
    for column in columns:
        own = PAPER_METHOD_COLORS.get(column.label)
        colors[column] = own if own and own not in colors.values() else next(others)
    return colors


def accuracy_series(runs, paper=None):
    """{(dataset, column): [(after tasks, mean %, standard deviation % or None)]}; runs of one
    cell (seeds) are averaged."""
    series = {}
    columns = tables.table1_columns(runs, paper or run_results.load_paper())
    for dataset in sorted({r['dataset'] for r in runs}):
        for column in columns:
            points = []
            for t in range(1, run_results.horizon(runs) + 1):
                values = tables.measured_values(runs, dataset, column, t, 'mean_accuracy')
                if values:
                    mean, spread, _ = tables.cell_statistics(values)
                    points.append((t, 100 * mean, None if spread is None else 100 * spread))
            if points:
                series[dataset, column] = points
    return series


def write_accuracy_plot(runs, path, paper=None):
    """Mean accuracy after each task, one line per column, a band of one standard deviation
    where a cell has several seeds, the paper's values as open circles."""
    plt = _pyplot()
    paper = paper or run_results.load_paper()
    series = accuracy_series(runs, paper)
    colors = column_colors(list(dict.fromkeys(column for _, column in series)))
    several = len({dataset for dataset, _ in series}) > 1
    fig, ax = plt.subplots(figsize=ACCURACY_PLOT_INCHES)
    last_task = max(run_results.horizon(runs), 1)
    for (dataset, column), points in series.items():
        tasks, values, spreads = zip(*points)
        color = colors[column]
        ax.plot(tasks, values, marker='o', markersize=4, color=color,
                linestyle='--' if column.label == 'Joint' else '-',
                label=f'{column} ({dataset})' if several else str(column))
        if any(spread is not None for spread in spreads):
            low = [v - (s or 0) for v, s in zip(values, spreads)]
            high = [v + (s or 0) for v, s in zip(values, spreads)]
            ax.fill_between(tasks, low, high, color=color, alpha=0.2, linewidth=0)
        paper_cells = paper['table1']['datasets'].get(run_results.paper_dataset(dataset), {}).get(column.label, {})
        for paper_tasks, value in paper_cells.items():
            ax.plot(int(paper_tasks), value, marker='o', markersize=9, markerfacecolor='none',
                    color=color, linestyle='none')
            last_task = max(last_task, int(paper_tasks))
    ax.set_xticks(range(1, last_task + 1))
    ax.set_ylim(0, 102)
    ax.set_xlabel('after task')
    ax.set_ylabel('mean accuracy over seen classes (%)')
    ax.set_title('measured (lines, band: ±1 std over seeds); paper after 5 and 10 tasks (open circles)',
                 fontsize=9)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc='lower left')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def budget_series(budgets, paper=None):
    """{(column, iterations per task): [(after tasks, mean %)]} for the runs of one dataset at
    several budgets, given as [(iterations, runs)]. Columns are taken over the runs of every
    budget, so that a method whose options differ somewhere is told apart the same way at
    each budget; seeds of one cell are averaged."""
    every = [results for _, runs in budgets for results in runs]
    columns = tables.table1_columns(every, paper or run_results.load_paper())
    series = {}
    for iters, runs in budgets:
        for column in columns:
            cell = [results for results in runs if tables.column_of(results, every) == column]
            points = []
            for t in range(1, run_results.horizon(runs) + 1):
                records = [run_results.record_after(results, t) for results in cell]
                values = [record['mean_accuracy'] for record in records
                          if record is not None and record.get('mean_accuracy') is not None]
                if values:
                    points.append((t, 100 * tables.cell_statistics(values)[0]))
            if points:
                series[column, iters] = points
    return series


def write_budget_plot(budgets, path, paper=None):
    """Each method's mean accuracy after each task at every budget of one dataset: a colour per
    method, solid for the largest budget and dashed for the others (the dose-response)."""
    plt = _pyplot()
    series = budget_series(budgets, paper)
    colors = column_colors(list(dict.fromkeys(column for column, _ in series)))
    largest = max(iters for iters, _ in budgets)
    fig, ax = plt.subplots(figsize=ACCURACY_PLOT_INCHES)
    for (column, iters), points in sorted(series.items(), key=lambda item: -item[0][1]):
        tasks, values = zip(*points)
        ax.plot(tasks, values, marker='o' if iters == largest else 's', markersize=4, color=colors[column],
                linestyle='-' if iters == largest else '--', label=f'{column}, {iters:,} it.')
    ax.set_xticks(range(1, max((t for points in series.values() for t, _ in points), default=1) + 1))
    ax.set_ylim(0, 102)
    ax.set_xlabel('after task')
    ax.set_ylabel('mean accuracy over seen classes (%)')
    ax.set_title('iterations per task: solid the largest budget, dashed the others', fontsize=9)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc='lower left', ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- Figure 3: the first fixed-noise samples of every seen class after the last task ---------
# --test tiles each class's 100 fixed-noise samples into a 10x10 grid, row-major, so its first
# row holds samples 0..9, the same noise for every class and every run.
GRID_COLUMNS = 10
FIGURE3_HEADER = 16  # pixels above each panel for its label
FIGURE3_GAP = 8  # white pixels between panels


def grid_first_row(path):
    """The first row of a --test grid as uint8 RGB (tile x 10 tiles), or None if the file is missing."""
    if not os.path.isfile(path):
        return None
    with Image.open(path) as image:
        pixels = np.asarray(image.convert('RGB'))
    tile = pixels.shape[1] // GRID_COLUMNS
    return pixels[:tile]


def figure3_rows(result_dir, results):
    """One row per class seen at the run's last tested task, None where its grid is missing."""
    if not results['tasks']:
        return []
    last = results['tasks'][-1]
    return [grid_first_row(os.path.join(result_dir, 'test', f"task_{last['task']}_class_{c}.png"))
            for c in last['seen_classes']]


def figure3_image(panels):
    """panels: [(label, rows)], rows uint8 RGB strips or None (left white). One panel per run, side
    by side, a label above each; returns the figure as a uint8 RGB array."""
    strips = [row for _, rows in panels for row in rows if row is not None]
    tile = strips[0].shape[0] if strips else 32
    width = GRID_COLUMNS * tile
    height = FIGURE3_HEADER + max((len(rows) for _, rows in panels), default=0) * tile
    canvas = Image.new('RGB', (max(len(panels) * (width + FIGURE3_GAP) - FIGURE3_GAP, 1), height), 'white')
    for index, (label, rows) in enumerate(panels):
        left = index * (width + FIGURE3_GAP)
        header = Image.new('RGB', (width, FIGURE3_HEADER), 'white')  # the label is clipped to its panel
        ImageDraw.Draw(header).text((2, 2), label, fill='black')
        canvas.paste(header, (left, 0))
        for position, row in enumerate(rows):
            if row is not None:
                strip = Image.fromarray(row)
                if strip.size != (width, tile):
                    strip = strip.resize((width, tile), Image.NEAREST)
                canvas.paste(strip, (left, FIGURE3_HEADER + position * tile))
    return np.asarray(canvas)


def write_figure3(result_dirs, runs, path, labels=None):
    """The paper's Figure 3 for these runs: rows are the classes seen, columns the first 10 samples."""
    labels = labels or [tables.run_label(results, runs) for results in runs]
    panels = [(label, figure3_rows(d, results)) for label, d, results in zip(labels, result_dirs, runs)]
    Image.fromarray(figure3_image(panels)).save(path, optimize=True)


# --- Figure 4: t-SNE of generated images of one class, a colour per run, and real ones ------
FIGURE4_CLASS = 0  # the paper's Figure 4 embeds zeros
FIGURE4_SAMPLES = 300  # generated images per run (real ones: as many, capped by the test split)
FIGURE4_INCHES = (7, 6)  # at 100 dpi: 700 x 600 pixels
FIGURE4_SEED = 0
TSNE_PERPLEXITY = 30.0  # scikit-learn's default


def tsne_points(features, seed=FIGURE4_SEED, perplexity=TSNE_PERPLEXITY):
    """scikit-learn's t-SNE of feature rows (N, D) to points (N, 2); the same points for the same seed."""
    from sklearn.manifold import TSNE  # only Figure 4 needs scikit-learn
    from threadpoolctl import threadpool_limits
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 4:
        raise ValueError(f't-SNE needs a (points, features) array of at least 4 points, got shape {features.shape}')
    # scikit-learn refuses a perplexity at or above the number of points; it looks at 3x perplexity neighbours
    perplexity = min(perplexity, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed)
    # One thread: OpenMP threads wait for each other at each of t-SNE's ~1000 steps, which on a
    # busy 2-core machine took 47 s for 150 points against 0.3 s on one thread.
    with threadpool_limits(1):
        return tsne.fit_transform(features)


def embed_groups(groups, seed=FIGURE4_SEED):
    """[(label, features)] -> [(label, points)]: one t-SNE over every group, so that where the
    groups lie relative to each other means something."""
    points = tsne_points(np.concatenate([features for _, features in groups]), seed)
    ends = np.cumsum([len(features) for _, features in groups])
    return [(label, points[end - len(features):end]) for (label, features), end in zip(groups, ends)]


def figure4_features(result_dirs, class_id, samples, classifier_dir, eval_classifier=None):
    """The evaluation classifier's features of each run's `samples` images of `class_id` after
    its last task, and of as many real test images; ReportError naming a folder it cannot use.
    The runs share one dataset, read from the first run's config."""
    import quiet  # noqa: F401  (before TensorFlow loads)
    import runs
    import utils
    from evaluation.classifier import EvaluationError, extract_features, load_or_train_classifier
    from data import DataError, load_dataset
    try:
        config, _ = runs.read_saved_run(result_dirs[0])
        data = load_dataset(config.dataset, config.data_dir)
        classifier = load_or_train_classifier(data, classifier_dir, user_model_path=eval_classifier)
        generated = [runs.last_task_class_images(d, class_id, samples, data) for d in result_dirs]
    except (DataError, EvaluationError, utils.UsageError) as error:
        raise run_results.ReportError(f'--figure4: {error}') from error
    real = data.test_x[data.test_y == class_id][:samples]
    width = classifier.features.output_shape[-1]

    def features(images):  # DGR may draw no image of the class at all
        return extract_features(classifier.features, images) if len(images) else np.zeros((0, width))

    return [features(images) for images in generated], features(real)


def plot_figure4(groups, path, title):
    """groups: [(label, points (n, 2))], the real images last (in black); one scatter per group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE4_INCHES)
    palette = plt.get_cmap('tab10').colors
    for index, (label, points) in enumerate(groups):
        real = index == len(groups) - 1
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.5 if real else 0.7, linewidths=0,
                   color='black' if real else palette[index % len(palette)], label=label)
    ax.set_xticks([])  # t-SNE's axes carry no units
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, markerscale=2, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_figure4(result_dirs, runs, path, samples=FIGURE4_SAMPLES, classifier_dir='classifiers',
                  eval_classifier=None, class_id=FIGURE4_CLASS, labels=None):
    """The paper's Figure 4 for these runs (one dataset): a t-SNE on the evaluation classifier's
    features of each run's generated images of `class_id` after its last task, and real ones."""
    labels = labels or [tables.run_label(results, runs) for results in runs]
    generated, real = figure4_features(result_dirs, class_id, samples, classifier_dir, eval_classifier)
    groups = [(label if len(features) == samples else f'{label} ({len(features)} of {samples})', features)
              for label, features in zip(labels, generated)]
    groups.append(('real', real))
    try:
        points = embed_groups(groups)
    except ValueError as error:  # too few points, e.g. one run and --figure4_samples 1
        raise run_results.ReportError(f'--figure4: {error}; ask for more with --figure4_samples') from error
    title = f"class {class_id} after each run's last task: t-SNE of the evaluation classifier's features"
    plot_figure4(points, path, title)
