"""TensorFlow's C++ start-up lines on a machine without a GPU (a red 'failed call to
cuInit' among them) read like failures to a new user: hide them unless the user
chose a TF_CPP_MIN_LOG_LEVEL. Imported before TensorFlow."""
import glob
import os

# Without an NVIDIA device, C++ errors at start-up are only about the missing GPU.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2' if glob.glob('/dev/nvidia[0-9]*') else '3')
