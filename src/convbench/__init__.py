"""convbench: train, compare and reproduce the classic convolutional networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convbench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
