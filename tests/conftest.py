import os

import torch
from hypothesis import HealthCheck, settings

# tiny models: one thread avoids OpenMP oversubscription on 2-core machines
torch.set_num_threads(1)

settings.register_profile(
    "default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("quick", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CI (CI=true): the same examples on every run, so a landing is decided by the code, not by the draw.
# Random exploration happens locally (the default profile) and in the "soak" profile:
#   HYPOTHESIS_PROFILE=soak python -m pytest -q -p no:cacheprovider tests/
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, print_blob=True)
settings.register_profile("soak", parent=settings.get_profile("default"), max_examples=1000)
_default = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "default"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))
