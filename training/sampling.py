"""How images of one class are drawn from a generator for evaluation: in batches made
up as in training, because batch norm normalises with the batch's own statistics."""
import numpy as np

import model
import utils

BATCH_SIZE = 64          # the paper's batch, for training and for sampling alike
SAMPLER_DRAW_FACTOR = 5  # DGR's sampler draws at most 5x the images it was asked for


def generate_in_batches(generate, labels, rng):
    """uint8 images for `labels` (a whole number of batches), one batch of BATCH_SIZE a call."""
    batches = []
    for start in range(0, len(labels), BATCH_SIZE):
        z = rng.standard_normal((BATCH_SIZE, model.Z_DIM)).astype(np.float32)
        batches.append(generate(z, labels[start:start + BATCH_SIZE]).numpy())
    return utils.to_uint8(np.concatenate(batches))


def trains_mixed_batches(task):
    """True when the task's fake batches mix classes (joint training)."""
    return task.spec.fake_label_high - task.spec.fake_label_low > 1


class Sampler:
    """generate(class_id, count) -> uint8 images of the class. class_shares: None, or for a
    sampler that cannot choose the class it draws (DGR), {class: share of its draws}."""
    class_shares = None

    def __call__(self, class_id, count):
        raise NotImplementedError


class ClassBatchSampler(Sampler):
    """For a generator trained on batches of one class each (a sequential task, its
    current class or one replayed class): every batch holds one class."""

    def __init__(self, generate, seed):
        self.generate, self.seed = generate, seed

    def __call__(self, class_id, count):
        rng = np.random.default_rng([self.seed, class_id, count])
        labels = np.full(-(-count // BATCH_SIZE) * BATCH_SIZE, class_id, np.int32)
        return generate_in_batches(self.generate, labels, rng)[:count]


class PerCountSampler(Sampler):
    """A sampler whose images of every class are made together, once per count; a
    subclass says how in make_all(count) -> {class: uint8 images}."""

    def __init__(self, generate, classes, seed):
        self.generate, self.classes, self.seed = generate, [int(c) for c in classes], seed
        self.made = {}

    def __call__(self, class_id, count):
        if count not in self.made:
            self.made[count] = self.make_all(count)
        return self.made[count][int(class_id)]

    def make_all(self, count):
        raise NotImplementedError


class MixedBatchSampler(PerCountSampler):
    """For a generator trained on batches mixing `classes` (joint training).

    Images come from batches of shuffled, balanced labels of all the classes, as
    in training, and are handed out per class. One generation per count serves
    every class, so evaluating k classes costs no more than with single-class batches.
    """

    def make_all(self, count):
        rng = np.random.default_rng([self.seed, count, len(self.classes)])
        labels = rng.permutation(np.repeat(self.classes, count))
        padding = rng.choice(self.classes, -len(labels) % BATCH_SIZE)  # fills the last batch
        labels = np.concatenate([labels, padding]).astype(np.int32)
        images = generate_in_batches(self.generate, labels, rng)
        return {c: images[labels == c][:count] for c in self.classes}


class SolverSampler(PerCountSampler):
    """generate(class_id, count) for an unconditional generator and a solver.

    Draws batches of BATCH_SIZE (the training batch, for batch-norm statistics) until
    every seen class has `count` images the solver labels with it, or until
    SAMPLER_DRAW_FACTOR times the images asked for were drawn. A class may come back
    short, even empty: evaluation reports it missing. class_shares: each class's share
    of all images drawn, by the solver's label.
    """

    def __init__(self, generate, label, classes, seed):
        super().__init__(generate, classes, seed)
        self.label = label
        self.class_shares = {}  # filled as it draws

    def make_all(self, count):
        rng = np.random.default_rng([self.seed, count, len(self.classes), 7])
        kept = {c: [] for c in self.classes}
        counts = {}
        limit = SAMPLER_DRAW_FACTOR * count * len(self.classes)
        drawn = 0
        while drawn < limit and any(sum(len(b) for b in kept[c]) < count for c in self.classes):
            z = rng.standard_normal((BATCH_SIZE, model.Z_DIM)).astype(np.float32)
            images = self.generate(z, np.zeros(BATCH_SIZE, np.int32))
            labels = self.label(images).numpy()
            images = utils.to_uint8(images.numpy())
            drawn += BATCH_SIZE
            for label in labels:
                counts[int(label)] = counts.get(int(label), 0) + 1
            for c in self.classes:
                kept[c].append(images[labels == c])
        self.class_shares = {c: counts.get(c, 0) / drawn for c in sorted(counts)}
        shape = (0, *images.shape[1:])
        return {c: np.concatenate(kept[c])[:count] if kept[c] else np.zeros(shape, np.uint8) for c in self.classes}
