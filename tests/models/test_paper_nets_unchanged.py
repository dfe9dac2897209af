"""The paper's nets are pinned: the Bag-of-Tricks options beside them must not change a parameter or an output."""

import hashlib

import pytest
import torch

import resnet

# Computed before the ResNet-C/D options existed (torch 2.14, seed 0): every tensor of the state dict, in order.
STATE_SHA256 = {
    "resnet50": "a6c42c9341686bfa7b6ae0815e03349ffd937b723b99372dd34571f73fbcbda5",
    "resnet56": "325414014309037d9fc275f0de2d2e2cc1ab563646278966bf5f713ed362854a",
}
# The first four logits of each of two random images (the output is compared with a tolerance: CPU kernels differ).
LOGITS = {
    "resnet50": (64, [[-4.762949466705322, -10.5479097366333, 5.588541030883789, -23.685009002685547],
                      [-4.657886028289795, -10.030125617980957, 5.100588321685791, -22.38187026977539]]),
    "resnet56": (32, [[-783.054931640625, -681.9716796875, 558.6994018554688, -4158.02392578125],
                      [-704.8447265625, -647.1582641601562, 549.2460327148438, -3783.208740234375]]),
}


@pytest.mark.parametrize("name", ["resnet50", "resnet56"])
def test_paper_net_has_the_same_weights_and_logits_as_before_the_bag_of_tricks_options(name, one_cpu_thread):
    torch.manual_seed(0)
    model = resnet.create_model(name).eval()
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.contiguous().numpy().tobytes())
    assert digest.hexdigest() == STATE_SHA256[name]
    size, expected = LOGITS[name]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)[:, :4]
    torch.testing.assert_close(logits, torch.tensor(expected), rtol=1e-4, atol=1e-3)
