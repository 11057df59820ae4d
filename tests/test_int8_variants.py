import pytest
from onnxruntime.quantization import CalibrationMethod

from benchmarks.int8_variants import static_options


def test_variants_map_onto_quantize_static_options():
    assert static_options("8bit") == (False, {})
    assert static_options("7bit-entropy") == (True, {"calibrate_method": CalibrationMethod.Entropy})
    reduce_range, options = static_options("7bit-p99.9")
    assert reduce_range is True and options["calibrate_method"] == CalibrationMethod.Percentile
    assert options["extra_options"]["CalibPercentile"] == 99.9


@pytest.mark.parametrize(
    "variant, message",
    [
        ("6bit", "--variants: '6bit' must start with 7bit or 8bit"),
        ("7bit-minmax", "--variants: unknown calibration 'minmax' (pNN.N or entropy)"),
        ("7bit-pmax", "--variants: 'pmax' is not pNN.N (e.g. p99.9)"),
    ],
)
def test_bad_variants_stop_with_one_line(variant, message):
    with pytest.raises(SystemExit) as stop:
        static_options(variant)
    assert str(stop.value) == message
