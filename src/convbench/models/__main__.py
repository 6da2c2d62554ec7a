"""``python -m convbench.models``: rewrite models/networks.json from the registry.

Run it after adding a network or changing a builder's knobs or input sizes; a test fails until the
file matches the registry.
"""

import json

from convbench._io import write_text_atomic
from convbench.models import interface
from convbench.networks import CATALOG_PATH

write_text_atomic(CATALOG_PATH, json.dumps(interface(), indent=2, sort_keys=True) + "\n")
print(f"wrote {CATALOG_PATH}")
