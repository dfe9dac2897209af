"""Object detection on the paper's networks (Sec. 4.3, Appendix A): Faster R-CNN from torchvision with our residual
and plain nets as backbones, trained through the same engine as classification."""
