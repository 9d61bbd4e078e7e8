"""PyTorch references for tests and benchmarks: imports torch when called (the product never does)."""

import types

VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_vgg16_stub(vgg_state_dict):
    """``{"torchvision": ..., "torchvision.models": ...}`` modules whose ``models.vgg16`` builds
    torchvision's VGG16 feature stack with ``vgg_state_dict`` ("features.N.weight" names).

    The `lpips` package imports torchvision, which from PyPI does not import beside our torch;
    put these in ``sys.modules`` before importing lpips.
    """
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    def vgg16(pretrained=False, **unused):  # pylint: disable=unused-argument
        layers, cin = [], 3
        for v in VGG16_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        features = nn.Sequential(*layers)
        features.load_state_dict({k[len("features."):]: torch.from_numpy(v.copy())
                                  for k, v in vgg_state_dict.items()})
        model = nn.Module()
        model.features = features
        return model

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg16 = vgg16
    return {"torchvision": tv, "torchvision.models": tv.models}
