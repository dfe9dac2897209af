"""``resnet import``: a torchvision, timm or CIFAR checkpoint as a resnet weights file."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnet.cliargs import positive_int
from resnet.errors import ConfigError


def register_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="convert torchvision/timm/CIFAR checkpoints to a resnet weights file",
        description="Read a weights file of another code base (torchvision or timm resnet18..152 .pth/.safetensors, "
                    "akamaster/pytorch_resnet_cifar10 .th) and write it as a .safetensors that load_model, eval, "
                    "predict and export read, with the layout and preprocessing the weights were trained with.")
    p.add_argument("src", help="the weights file to convert (its format is recognised from its contents)")
    p.add_argument("--arch", default=None, help="architecture (default: the depth the file holds)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="another class count: the classifier is re-initialised")
    p.add_argument("--in-chans", type=positive_int, default=None,
                   help="another number of input channels: the first conv's kernels are summed (1) or repeated")
    p.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from resnet.models.weights import save_weights
    from resnet.transfer.importer import import_model

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise ConfigError(f"--out {out}: the weights file must end in .safetensors")
    model, fmt = import_model(args.src, args.arch, num_classes=args.num_classes, in_chans=args.in_chans)
    save_weights(model, out)
    opts = model.options
    print(f"{args.src} ({fmt}) -> {out}: {model.arch} ({model.depth} layers), {opts['num_classes']} classes, "
          f"{opts['in_chans']} input channels")
    return 0
