"""``resnet import``: a torchvision, timm, MSRA or CIFAR checkpoint as a resnet weights file; ``resnet weights``:
the published weights known by name, and fetching them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnet.cliargs import positive_int
from resnet.errors import ConfigError


def register_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="convert torchvision/timm/CIFAR checkpoints to a resnet weights file",
        description="Read a weights file of another code base (torchvision or timm resnet18..152 .pth/.safetensors, "
                    "akamaster/pytorch_resnet_cifar10 .th) and write it as a .safetensors that load_model, eval, "
                    "predict and export read, with the layout and preprocessing the weights were trained with.")
    p.add_argument("src", help="the weights file to convert (its format is recognised from its contents), or a "
                               "published name such as torchvision:resnet50.IMAGENET1K_V2 (resnet weights lists them)")
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
    names = model.pretrained_cfg.get("label_names")  # published weights' class names travel with the file
    save_weights(model, out, metadata={"classes": json.dumps(names)} if names else None)
    opts = model.options
    print(f"{args.src} ({fmt}) -> {out}: {model.arch} ({model.depth} layers), {opts['num_classes']} classes, "
          f"{opts['in_chans']} input channels")
    return 0


WEIGHTS_EPILOG = """names: SOURCE:ARCH.TAG
  torchvision:resnet50.IMAGENET1K_V2  torchvision's weights, into torch's hub cache ($TORCH_HOME/hub/checkpoints),
                                      SHA-256 checked against the prefix in the file name
  timm:resnet50.a1_in1k               the Hugging Face Hub's timm/resnet50.a1_in1k (model.safetensors, config.json),
                                      into its cache (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT apply)
  msra:resnet50                       MSRA's original ResNet-50/101/152 (the paper's, v1 layout), detectron2's R-50.pkl,
                                      read with a restricted unpickler; BGR 0-255 mean subtraction, recorded

Every name is accepted wherever a weights file is: resnet import, train --init-from, detect train --init-from, eval,
predict, export, resnet.create_model(name, pretrained=...), resnet.import_weights. HF_HUB_OFFLINE=1 keeps every
source to its cache. Without network: download the file elsewhere and place it where the error line says; its hash
is checked there."""


def register_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights", help="list the published weights known by name; fetch them into the local cache",
        description="List the published weights that every command accepts by name (their source, layout, published "
                    "ImageNet top-1 and file size, and whether they are in the local cache), or fetch the NAMEs "
                    "given into their cache and print each file's path.",
        epilog=WEIGHTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="published names to fetch (default: list them all)")
    p.add_argument("--source", choices=("torchvision", "timm", "msra"), default=None, help="list this source only")
    p.set_defaults(handler=cmd_weights)


def _row(cells: tuple[str, ...]) -> str:
    return f"{cells[0]:<40} {cells[1]:<12} {cells[2]:<10} {cells[3]:<6} {cells[4]:>10} {cells[5]:>9}  {cells[6]}"


def cmd_weights(args: argparse.Namespace) -> int:
    from resnet.transfer.hub import PUBLISHED, cached, fetch

    if args.names:
        for name in args.names:
            print(f"{name}: {fetch(name)}")
        return 0
    print(_row(("name", "source", "arch", "layout", "top-1", "size", "cached")))
    for entry in PUBLISHED.values():
        if args.source and entry.source != args.source:
            continue
        top1 = "-" if entry.top1 is None else f"{entry.top1:.2f}" + (f" @{entry.top1_size}" if entry.top1_size != 224
                                                                           else "")
        size = f"{entry.size_mb:.1f} MB" if entry.size_mb is not None else "-"
        path = cached(entry)
        print(_row((entry.name, entry.source, entry.arch, entry.layout, top1, size, str(path) if path else "no")))
    return 0
