"""The Preprocessing record: round trip through a checkpoint, checks, normalisation, decision rule."""

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.preprocessing import Preprocessing, read_image


def _record(**changes):
    values = dict(
        mean=(0.5,),
        std=(0.25,),
        num_classes=2,
        image_mode="L",
        scale=0.5,
        crop_size=64,
        window=128,
        mask_mapping={"mask_format": "binary"},
        class_names=("background", "membrane"),
        decision="sigmoid",
        threshold=0.7,
    )
    return Preprocessing(**(values | changes))


def test_round_trip_through_plain_values():
    record = _record()
    plain = record.to_dict()
    assert isinstance(plain["mean"], (list, tuple)) and plain["scale"] == 0.5
    assert Preprocessing.from_dict(plain) == record
    assert Preprocessing.from_dict(torch.load(_saved(plain), weights_only=False)) == record


def _saved(plain):
    import io

    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"scale": 0}, "scale must be a factor"),
        ({"scale": float("nan")}, "scale must be a factor"),
        ({"mean": (0.5, 0.5)}, "one value per channel"),
        ({"image_mode": "CMYK"}, "image_mode must be"),
        ({"window": 0}, "crop_size and window"),
        ({"decision": "max"}, "decision must be one of"),
        ({"threshold": 1.0}, "threshold must lie in"),
        ({"num_classes": 3}, "'sigmoid' is for two classes"),
    ],
)
def test_bad_records_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _record(**changes)


def test_normalize_is_the_affine_map():
    record = _record(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), image_mode="RGB")
    image = torch.rand(3, 4, 5)
    expected = torch.stack(
        [(image[c] - m) / s for c, (m, s) in enumerate(zip(record.mean, record.std))]
    )
    torch.testing.assert_close(record.normalize(image), expected)


def test_decision_rule_threshold_and_argmax():
    p = torch.tensor([0.2, 0.6, 0.75, 0.95]).view(1, 1, 1, 4)
    probs = torch.cat([1 - p, p], dim=1)  # (1, 2, 1, 4)
    assert _record(threshold=0.7).labels_from_probabilities(probs).tolist() == [[[0, 0, 1, 1]]]
    assert _record(threshold=0.5).labels_from_probabilities(probs).tolist() == [[[0, 1, 1, 1]]]
    three = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    record = _record(num_classes=3, decision="argmax")
    assert torch.equal(record.labels_from_probabilities(three), three.argmax(1))


def test_read_image_grayscale_and_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png", "L")
    assert image.shape == (1, 3, 4)
    torch.testing.assert_close(image[0], torch.from_numpy(gray / 255.0).float())
    assert read_image(tmp_path / "g.png", "RGB").shape == (3, 3, 4)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(tmp_path / "broken.png")


def test_read_image_keeps_16_bit_precision(tmp_path):
    raw = np.array([[0, 255, 256, 65535]], np.uint16)  # 256 would clip to 255 in 8 bits
    Image.fromarray(raw).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png", "L")  # (1, 1, 4)
    torch.testing.assert_close(image[0], torch.tensor([[0, 255 / 65535, 256 / 65535, 1.0]]))


def test_describe_names_scale_and_rule():
    line = _record().describe()
    assert "grayscale" in line and "resized by 0.5" in line and "sigmoid > 0.7" in line
    assert "native resolution" in _record(scale=1.0).describe()
