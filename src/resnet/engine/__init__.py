"""Training and evaluation engine: loop, evaluator, schedules, checkpoints, distributed set-up."""
