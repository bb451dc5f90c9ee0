"""Writing stand-in run folders, without TensorFlow (the reporting tests run without it)."""
import os


def write_files(folder, files):
    """Each {relative path: text} under folder, with the folders it needs."""
    for name, content in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(content)
