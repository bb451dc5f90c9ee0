"""TensorFlow's C++ start-up lines on a CPU-only machine (a red 'failed call to
cuInit' among them) read like failures to a new user: hide them unless the user
chose a TF_CPP_MIN_LOG_LEVEL. Imported before TensorFlow."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
