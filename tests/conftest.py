import os

import torch
from hypothesis import HealthCheck, settings

# tiny models: one thread avoids OpenMP oversubscription on 2-core machines
torch.set_num_threads(1)

settings.register_profile(
    "default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("quick", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
