"""``python -m convbench.models``: rewrite models/networks.json from the registry.

Run it after adding a network or changing a builder's knobs or input sizes; a test fails until the
file matches the registry.
"""

import json

from convbench.models import interface
from convbench.networks import CATALOG_PATH

CATALOG_PATH.write_text(json.dumps(interface(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
print(f"wrote {CATALOG_PATH}")
