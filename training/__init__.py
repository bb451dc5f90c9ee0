"""The method: continual-learning methods on one training loop, the GAN objective, the run's generator as evaluation restores it."""
