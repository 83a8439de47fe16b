"""DVC stage entry points, one module per stage (``python -m stages.<stage>``).

Python imports this package before any stage module: the check that this is the project's Python runs
here, before a stage's first import of numpy, psutil or TensorFlow could fail with a bare traceback.
"""

from regbench.environment import require_project_environment

require_project_environment()
