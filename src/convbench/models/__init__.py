"""The model zoo: every network of d2l's modern-CNN chapter, by name.

>>> from convbench.models import build, names
>>> net = build("vgg11", width=0.25)
"""

from convbench.models._registry import ModelSpec, build, check_knobs, names, resolve_input_size, spec

# Importing a family module registers its builders.
from convbench.models import lenet  # noqa: F401  (registers lenet, lenet_bn)

__all__ = ["ModelSpec", "build", "check_knobs", "names", "resolve_input_size", "spec"]
