"""The house: no import cycle among the project's modules, no module reaching into another's
private names, and the paper tooling free of TensorFlow."""
import ast
import os
import subprocess
import sys

from helpers import ROOT

PACKAGES = ('training', 'evaluation', 'reporting')


def project_modules():
    """{dotted name: path} of every module of the project (not the tests)."""
    modules = {}
    for folder in ('', *PACKAGES):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith('.py') and name != '__init__.py':
                dotted = '.'.join(filter(None, [folder, name[:-3]]))
                modules[dotted] = os.path.join(ROOT, folder, name)
    return modules


def imports_of(path, modules):
    """(project modules `path` imports, anywhere in it; names it imports that start with '_')."""
    found, private = set(), []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
                private += [f'{node.module}.{a.name}' for a in node.names if a.name.startswith('_')]
            found |= {f'{node.module}.{a.name}' for a in node.names if f'{node.module}.{a.name}' in modules}
    return found, private


def test_no_module_imports_in_a_cycle_or_takes_private_names():
    modules = project_modules()
    assert {'training.methods', 'training.trainer', 'evaluation.evaluate', 'reporting.tables'} <= modules.keys()
    graph, private = {}, []
    for name, path in modules.items():
        graph[name], taken = imports_of(path, modules)
        private += [f'{name} imports {p}' for p in taken]
    assert not private

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [cycle_from(name) for name in graph if cycle_from(name)]
    assert not cycles, ' -> '.join(cycles[0])


def test_the_paper_tooling_and_the_run_folder_load_no_tensorflow():
    probe = ('import sys; import report, reproduce, run_folder, data; '
             'from reporting import run_results, tables, figures, reproduction, summaries; '
             'print("tensorflow" in sys.modules, "keras" in sys.modules)')
    done = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['False', 'False']
