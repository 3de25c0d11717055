"""Test configuration: every test and notebook runs in the smoke budget (seconds each).

Notebook kernels inherit this environment, so nbval executes them in smoke mode too.
An explicit MINICASTLING_BUDGET in the environment wins.
"""

import os

os.environ.setdefault("MINICASTLING_BUDGET", "smoke")
