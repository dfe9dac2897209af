"""Object detection on the paper's networks (Sec. 4.3, Appendix A): Faster R-CNN from torchvision with our residual
and plain nets as backbones, trained through the same engine as classification.

Batch format (torchvision's detection convention, what the models consume): a batch is ``(images, targets)``;

- ``images``: a list of float32 tensors (3, H, W) on [0, 1], one per image; sizes may differ;
- ``targets``: a list of dicts, one per image:

  - ``"boxes"``: (N, 4) float32 xyxy in pixels of the image as given (after the loader's resize and flip);
  - ``"labels"``: (N,) int64 in 1..K (0 is the background); ``categories[label - 1]`` is its category;
  - ``"image_id"``: int, the dataset's own image id (COCO's ``id``; VOC: position in the split file);
  - ``"area"``: (N,) float32, the boxes' areas;
  - ``"iscrowd"``: (N,) int64, all 0: crowd regions and VOC difficult objects are left out of the targets (the
    metrics still see them, from the dataset's records);
  - ``"orig_size"``: (2,) int64, (height, width) of the image file, to map boxes back for the metrics.

  ``N`` may be 0 (a negative image).

Data side: :mod:`~resnet.detection.data` (records, cleaning, :func:`~resnet.detection.sources.open_detection` for
COCO JSON and PASCAL VOC), :mod:`~resnet.detection.scenes` (the embedded digits scenes, no download),
:mod:`~resnet.detection.transforms` (resize and flip with boxes), :mod:`~resnet.detection.loaders` (training
stream, evaluation loader), :mod:`~resnet.detection.metrics` (COCOeval, VOC 2007 AP).
"""
