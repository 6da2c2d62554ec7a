"""The model zoo: every network of d2l's modern-CNN chapter, by name.

>>> from convbench.models import build, names
>>> net = build("vgg11", width=0.25)

A network of your own project registers with the same decorator (``register``) in a file a study
names (convbench.user_networks).
"""

from convbench.models._registry import (
    ModelSpec,
    build,
    check_knobs,
    interface,
    names,
    register,
    resolve_input_size,
    spec,
)

# Importing a family module registers its builders.
from convbench.models import lenet  # noqa: F401  (registers lenet, lenet_bn)
from convbench.models import mlp  # noqa: F401  (registers mlp)
from convbench.models import alexnet  # noqa: F401  (registers alexnet)
from convbench.models import vgg  # noqa: F401  (registers vgg11, vgg13, vgg16, vgg19)
from convbench.models import nin  # noqa: F401  (registers nin)
from convbench.models import googlenet  # noqa: F401  (registers googlenet, mini_inception)
from convbench.models import resnet  # noqa: F401  (registers resnet18, resnet34, mini_resnet)
from convbench.models import densenet  # noqa: F401  (registers densenet)

__all__ = ["ModelSpec", "build", "check_knobs", "interface", "names", "register", "resolve_input_size", "spec"]
