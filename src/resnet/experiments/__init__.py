"""The paper's studies, each a small module over the training engine.

    from resnet.experiments import Context, run_experiment
    run_experiment("degradation", Context(dataset="digits", scale="smoke", out=Path("out")))

Studies: degradation (Fig. 1, 6), depth (Table 6), shortcuts (Table 3), responses (Fig. 7), norms, init,
preact (Identity Mappings), and all. ``resnet experiment --help`` lists them with their scales.
"""

from resnet.experiments.common import SCALES, Context
from resnet.experiments.suite import STUDIES, STUDY_NAMES, run_experiment

__all__ = ["SCALES", "STUDIES", "STUDY_NAMES", "Context", "run_experiment"]
