"""Models of the normkit.torch equivalence tests and the end-to-end timing
(python/bench_models.py), with random weights: nothing is downloaded.

    resnet50_like   torchvision's ResNet-50 architecture (Bottleneck blocks,
                    conv + BatchNorm + ReLU), or a narrower/shallower one
    style_transfer  Johnson et al.'s image transformation network:
                    conv + InstanceNorm2d(affine) + ReLU, residual blocks,
                    upsampling
    unet            a diffusion-style UNet: residual blocks of
                    GroupNorm + SiLU + conv with a time embedding
    transformer     nn.TransformerEncoderLayer stack (LayerNorm)
"""
import torch
from torch import nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + idt)


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width=64, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, inp = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            for j in range(n):
                blocks.append(Bottleneck(inp, planes, 2 if (j == 0 and i > 0) else 1))
                inp = planes * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def resnet50_like(layers=(3, 4, 6, 3), width=64, num_classes=1000):
    return ResNet(layers, width, num_classes)


def torchvision_resnet50():
    """torchvision.models.resnet50 with random weights, or None without torchvision."""
    try:
        import torchvision
    except ImportError:
        return None
    return torchvision.models.resnet50(weights=None) if hasattr(torchvision.models, "ResNet50_Weights") \
        else torchvision.models.resnet50(pretrained=False)


class ConvIN(nn.Module):
    def __init__(self, inp, out, k, stride=1, upsample=1, relu=True, reflect=True):
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(k // 2) if reflect else nn.ZeroPad2d(k // 2)
        self.conv = nn.Conv2d(inp, out, k, stride)
        self.norm = nn.InstanceNorm2d(out, affine=True)
        self.relu = relu

    def forward(self, x):
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        y = self.norm(self.conv(self.pad(x)))
        return F.relu(y) if self.relu else y


class StyleResidual(nn.Module):
    def __init__(self, c, reflect):
        super().__init__()
        self.a = ConvIN(c, c, 3, reflect=reflect)
        self.b = ConvIN(c, c, 3, relu=False, reflect=reflect)

    def forward(self, x):
        return x + self.b(self.a(x))


class StyleTransfer(nn.Module):
    def __init__(self, width=32, residual=5, reflect=True):
        super().__init__()
        w, r = width, reflect
        self.net = nn.Sequential(
            ConvIN(3, w, 9, reflect=r), ConvIN(w, 2 * w, 3, 2, reflect=r),
            ConvIN(2 * w, 4 * w, 3, 2, reflect=r),
            *[StyleResidual(4 * w, r) for _ in range(residual)],
            ConvIN(4 * w, 2 * w, 3, upsample=2, reflect=r),
            ConvIN(2 * w, w, 3, upsample=2, reflect=r),
            nn.ReflectionPad2d(4) if r else nn.ZeroPad2d(4), nn.Conv2d(w, 3, 9))

    def forward(self, x):
        return self.net(x)


def style_transfer(width=32, residual=5, reflect=True):
    """reflect=False pads with zeros (reflection_pad2d has no bf16 CPU kernel in 1.13)."""
    return StyleTransfer(width, residual, reflect)


def randomize_norms(model, seed=2):
    """Random affine parameters (weight in [0.8, 1.2], bias of deviation 0.1:
    near PyTorch's initialisation, so a deep residual network stays well
    conditioned) and running statistics (mean of deviation 0.2, variance in
    [0.5, 1.5]) in every norm layer, so that neither eval nor the
    running-statistics update is the identity."""
    g = torch.Generator().manual_seed(seed)
    rand = {"weight": (0.4, 0.8, False), "bias": (0.1, 0.0, True),
            "running_var": (1.0, 0.5, False), "running_mean": (0.2, 0.0, True)}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                for name, (scale, shift, normal) in rand.items():
                    t = getattr(m, name, None)
                    if isinstance(t, torch.Tensor):
                        r = (torch.randn if normal else torch.rand)(t.shape, generator=g)
                        t.copy_(r * scale + shift)
    return model


class ResBlock(nn.Module):
    """GroupNorm + SiLU + conv, twice, plus the projected time embedding."""

    def __init__(self, inp, out, tdim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, inp)
        self.conv1 = nn.Conv2d(inp, out, 3, padding=1)
        self.temb = nn.Linear(tdim, out)
        self.norm2 = nn.GroupNorm(groups, out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1)
        self.skip = nn.Conv2d(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x, t):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(t))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    def __init__(self, width=64, groups=32, tdim=128):
        super().__init__()
        w = width
        self.tdim = tdim
        self.t_mlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(3, w, 3, padding=1)
        self.down1 = ResBlock(w, w, tdim, groups)
        self.pool1 = nn.Conv2d(w, w, 3, 2, 1)
        self.down2 = ResBlock(w, 2 * w, tdim, groups)
        self.pool2 = nn.Conv2d(2 * w, 2 * w, 3, 2, 1)
        self.mid = ResBlock(2 * w, 2 * w, tdim, groups)
        self.up2 = ResBlock(4 * w, 2 * w, tdim, groups)
        self.up1 = ResBlock(3 * w, w, tdim, groups)
        self.out_norm = nn.GroupNorm(groups, w)
        self.out = nn.Conv2d(w, 3, 3, padding=1)

    def forward(self, x, t):
        half = self.tdim // 2
        freq = torch.exp(-torch.arange(half, dtype=torch.float32) * (9.21 / half))
        ang = t.float()[:, None] * freq[None]
        temb = self.t_mlp(torch.cat([ang.sin(), ang.cos()], 1).to(x.dtype))
        h0 = self.down1(self.inp(x), temb)
        h1 = self.down2(self.pool1(h0), temb)
        h = self.mid(self.pool2(h1), temb)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up2(torch.cat([h, h1], 1), temb)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up1(torch.cat([h, h0], 1), temb)
        return self.out(F.silu(self.out_norm(h)))


def unet(width=64, groups=32):
    return UNet(width, groups)


def transformer(d_model=256, nhead=8, ff=1024, layers=2):
    return nn.Sequential(*[nn.TransformerEncoderLayer(d_model, nhead, ff, dropout=0.0,
                                                      batch_first=True)
                           for _ in range(layers)])
