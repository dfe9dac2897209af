"""Probe: batched nvJPEG decoding (torchvision.io.decode_jpeg on CUDA) and per-image GPU crop+resize throughput
on generated ImageNet-sized JPEGs, to decide whether the ImageNet pipeline should decode on the GPU."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from resnet.bench.pipeline import make_jpeg_folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpeg_folder(Path(tmp), 1024)
        files = sorted(str(p) for p in root.rglob("*.jpg"))
        t0 = time.perf_counter()
        datas = [read_file(f) for f in files]
        print(f"read {len(files)} files: {len(files) / (time.perf_counter() - t0):.0f} files/s, "
              f"mean {sum(d.numel() for d in datas) / len(datas) / 1024:.1f} KiB")
        for batch in (64, 128, 256):
            chunks = [datas[i:i + batch] for i in range(0, len(datas), batch)]
            for _ in range(2):
                decode_jpeg(chunks[0], device="cuda", mode=ImageReadMode.RGB)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                for c in chunks:
                    decode_jpeg(c, device="cuda", mode=ImageReadMode.RGB)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            print(f"decode_jpeg cuda batch {batch}: {reps * len(datas) / dt:.0f} img/s")
        imgs = decode_jpeg(datas[:256], device="cuda", mode=ImageReadMode.RGB)
        t0 = time.perf_counter()
        for _ in range(5):
            out = [F.interpolate(im[None, :, 10:300, 20:400].float(), size=(224, 224), mode="bilinear",
                                 antialias=True, align_corners=False) for im in imgs]
            torch.stack(out)
        torch.cuda.synchronize()
        print(f"per-image crop+resize (antialias) on GPU: {5 * 256 / (time.perf_counter() - t0):.0f} img/s")
        t0 = time.perf_counter()
        for _ in range(3):
            for d in datas[:256]:
                torchvision.io.decode_jpeg(d)
        print(f"decode_jpeg cpu, 1 thread: {3 * 256 / (time.perf_counter() - t0):.0f} img/s")


if __name__ == "__main__":
    main()
