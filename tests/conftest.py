import os
import sys

# tests import the modules at the repo root (data, ops, model, ...)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
