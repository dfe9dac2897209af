"""``python -m resnet``: what torchrun launches (``torchrun --nproc_per_node N -m resnet train ...``)."""

from resnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
