"""ChestQC foundation: DICOM/picture reading, MONOCHROME1 inversion, spacing, orientation, the patent's
normalisation (Eq. 1 + Eq. 2), the synthetic phantom and the demo (the batch command: test_chest_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from scanai.chest.cli import demo
from scanai.chest.io import read_radiograph
from scanai.chest.phantom import make_chest_phantom, write_monochrome1_copy, write_phantom_dicom
from scanai.chest.preprocess import normalise, percentile_rescale, percentile_window, standardise
from scanai.core.errors import FileFormatError, InputError
from scanai.core.image import Geometry, Volume
from scanai.io.dicom import RADIOGRAPH_DIRECTIONS, read_dicom_image

REAL_DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FAKE_MONOCHROME1 = "Fake_MONOHR1.dcm"


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(size=256, spacing_mm=0.7, seed=3)


@pytest.fixture
def phantom_files(phantom, tmp_path):
    """(MONOCHROME2 path, MONOCHROME1 path) of the same phantom picture."""
    return (write_phantom_dicom(phantom, tmp_path / "mono2.dcm", "MONOCHROME2"),
            write_phantom_dicom(phantom, tmp_path / "mono1.dcm", "MONOCHROME1"))


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copy a DICOM file with ``edit(dataset)`` applied."""
    dataset = pydicom.dcmread(str(source))
    edit(dataset)
    dataset.save_as(str(target), enforce_file_format=True)
    return target


# ---------------------------------------------------------------- real chest DICOMs (../shared/data/chest)

def test_real_monochrome1_and_monochrome2_give_the_same_normalised_image(shared_data, tmp_path):
    chest = shared_data / "chest"
    original = read_radiograph(chest / REAL_DICOM)
    assert original.spacing_known and original.spacing_mm == pytest.approx((0.168, 0.168))
    assert original.metadata["spacing_source"] == "PixelSpacing"
    assert original.image.geometry.spacing_mm == pytest.approx((0.168, 0.168, 1.0))
    assert original.image.array.shape == (1, 1024, 1024)
    # A true MONOCHROME1 encoding of the same picture (stored values 255 - s) must read back identically.
    true_mono1 = read_radiograph(write_monochrome1_copy(chest / REAL_DICOM, tmp_path / "mono1.dcm"))
    assert true_mono1.metadata["photometric_interpretation"] == "MONOCHROME1" and true_mono1.metadata["inverted"]
    np.testing.assert_array_equal(true_mono1.image.array, original.image.array)
    np.testing.assert_allclose(normalise(true_mono1.image).array, normalise(original.image).array, atol=1e-6)
    assert true_mono1.spacing_mm == pytest.approx((0.168, 0.168))


def test_fake_monochrome1_stores_the_same_pixels_so_it_reads_as_the_negative(shared_data):
    """Fake_MONOHR1.dcm differs from the original by one byte (the 'MONOCHROME1' label): same stored pixels."""
    chest = shared_data / "chest"
    stored_original = pydicom.dcmread(str(chest / REAL_DICOM)).pixel_array
    stored_fake = pydicom.dcmread(str(chest / FAKE_MONOCHROME1)).pixel_array
    np.testing.assert_array_equal(stored_fake, stored_original)
    original = read_radiograph(chest / REAL_DICOM)
    fake = read_radiograph(chest / FAKE_MONOCHROME1)
    assert fake.metadata["photometric_interpretation"] == "MONOCHROME1" and fake.metadata["inverted"]
    assert fake.spacing_mm == pytest.approx((0.168, 0.168))
    # Inverted within the 8-bit range: 255 - s (pixel [60, 2] is 8 in the original).
    assert original.image.array[0, 60, 2] == 8 and fake.image.array[0, 60, 2] == 247
    np.testing.assert_array_equal(fake.image.array, 255 - original.image.array)
    np.testing.assert_allclose(normalise(fake.image).array, -normalise(original.image).array, atol=1e-5)


def test_wingspan_png_reads_grey_with_unknown_spacing(shared_data):
    png = sorted((shared_data / "chest" / "wingspan" / "png").glob("*.png"))[0]
    radiograph = read_radiograph(png)
    assert radiograph.image.array.shape == (1, 512, 512)
    assert radiograph.image.array.dtype == np.float32
    assert not radiograph.spacing_known
    assert radiograph.metadata["spacing_source"] == "unknown"
    assert radiograph.image.geometry.spacing_mm == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(radiograph.image.geometry.directions, RADIOGRAPH_DIRECTIONS)


# ---------------------------------------------------------------- normalisation (Eq. 1 + Eq. 2)

def test_percentile_rescale_matches_eq1_without_clipping():
    image = Volume(np.arange(100, dtype=float).reshape(1, 10, 10))
    low, high = percentile_window(image)
    assert (low, high) == pytest.approx((4.95, 94.05))
    rescaled = percentile_rescale(image).array
    np.testing.assert_allclose(rescaled, (image.array - 4.95) / 89.1, rtol=1e-6)
    assert np.percentile(rescaled, 5) == pytest.approx(0.0, abs=1e-6)
    assert np.percentile(rescaled, 95) == pytest.approx(1.0, abs=1e-6)
    assert rescaled.min() < 0 and rescaled.max() > 1  # the patent does not clip: values outside [0, 1] survive
    clipped = percentile_rescale(image, clip=True).array
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    assert np.count_nonzero(clipped == 0.0) == 5 and np.count_nonzero(clipped == 1.0) == 5


def test_normalise_statistics_and_clipping_effect(rng):
    raw = rng.gamma(2.0, 300.0, size=(1, 64, 80)) + 100.0
    image = Volume(raw)
    result = normalise(image).array
    assert result.dtype == np.float32
    assert float(result.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(result.std()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(result, (raw - raw.mean()) / raw.std(), atol=1e-5)  # Eq. 1 is affine
    # With clipping the tails collapse onto the percentile values before standardisation.
    low, high = np.percentile(raw, [5, 95])
    window = (np.clip(raw, low, high) - low) / (high - low)
    clipped = normalise(image, clip=True).array
    np.testing.assert_allclose(clipped, (window - window.mean()) / window.std(), atol=1e-5)
    assert np.count_nonzero(clipped == clipped.max()) >= 0.05 * raw.size - 1
    assert clipped.max() < result.max()  # the bright tail is cut
    # Invariant to a global affine intensity change a * x + b with a > 0 (spec §6.4 item 9).
    np.testing.assert_allclose(normalise(Volume(3.5 * raw - 40.0)).array, result, atol=1e-5)


def test_normalise_keeps_geometry_and_does_not_touch_input(rng):
    geometry = Geometry((0.2, 0.3, 1.0), (10.0, -5.0, 2.0), RADIOGRAPH_DIRECTIONS)
    raw = rng.normal(100.0, 20.0, size=(1, 30, 40))
    image = Volume(raw, geometry)
    before = raw.copy()
    result = normalise(image)
    assert result.geometry == geometry
    assert result.array.shape == raw.shape
    np.testing.assert_array_equal(image.array, before)
    assert standardise(image).geometry == geometry


@pytest.mark.parametrize("array, message", [
    (np.full((1, 8, 8), 7.0), "uniform"),
    (np.where(np.eye(8)[None] > 0, np.nan, 1.0) + np.arange(64).reshape(1, 8, 8), "NaN"),
    (np.concatenate([np.zeros(96), np.arange(1, 5)]).reshape(1, 10, 10), "contrast"),
])
def test_normalise_rejects_bad_images(array, message):
    with pytest.raises(InputError, match=message):
        normalise(Volume(array))


def test_normalise_rejects_bad_percentiles():
    with pytest.raises(InputError, match="percentiles"):
        normalise(Volume(np.arange(16.0).reshape(1, 4, 4)), low_percentile=95, high_percentile=5)


# ---------------------------------------------------------------- DICOM reader

def test_phantom_monochrome1_and_monochrome2_round_trip(phantom, phantom_files):
    mono2, mono1 = (read_radiograph(path) for path in phantom_files)
    assert mono1.metadata["inverted"] and not mono2.metadata["inverted"]
    np.testing.assert_array_equal(mono1.image.array, mono2.image.array)
    np.testing.assert_allclose(normalise(mono1.image).array, normalise(mono2.image).array, atol=1e-6)
    expected = np.rint(phantom.image * 4095)[None]
    np.testing.assert_array_equal(mono2.image.array, expected)
    assert mono2.spacing_known and mono2.spacing_mm == pytest.approx((0.7, 0.7))
    assert mono2.metadata["view_position"] == "PA" and mono2.metadata["modality"] == "DX"
    assert mono2.metadata["orientation_source"] == "PatientOrientation"
    np.testing.assert_allclose(mono2.image.geometry.directions, RADIOGRAPH_DIRECTIONS, atol=1e-12)
    assert mono1.metadata["study_instance_uid"] == mono2.metadata["study_instance_uid"]


def test_spacing_fallbacks(phantom_files, tmp_path):
    def drop(*keywords):
        def edit(dataset):
            for keyword in keywords:
                delattr(dataset, keyword)
        return edit

    source = phantom_files[0]
    imager = read_radiograph(_rewrite(source, tmp_path / "a.dcm", drop("PixelSpacing")))
    assert imager.spacing_mm == pytest.approx((0.7, 0.7))
    assert imager.metadata["spacing_source"] == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    detector = read_radiograph(_rewrite(source, tmp_path / "b.dcm",
                                        drop("PixelSpacing", "EstimatedRadiographicMagnificationFactor")))
    assert detector.spacing_mm == pytest.approx((0.77, 0.77)) and detector.spacing_known
    unknown = read_radiograph(_rewrite(source, tmp_path / "c.dcm", drop("PixelSpacing", "ImagerPixelSpacing")))
    assert not unknown.spacing_known and unknown.metadata["spacing_source"] == "unknown"
    assert unknown.image.geometry.spacing_mm == (1.0, 1.0, 1.0)


def test_modality_lut_and_inversion_commute(phantom, tmp_path):
    def rescale(dataset):
        dataset.RescaleSlope, dataset.RescaleIntercept = "2", "-100"

    mono2 = _rewrite(write_phantom_dicom(phantom, tmp_path / "m2.dcm"), tmp_path / "r2.dcm", rescale)
    mono1 = _rewrite(write_phantom_dicom(phantom, tmp_path / "m1.dcm", "MONOCHROME1"), tmp_path / "r1.dcm", rescale)
    volume2, meta2 = read_dicom_image(mono2)
    volume1, _ = read_dicom_image(mono1)
    stored = pydicom.dcmread(str(mono2)).pixel_array.astype(float)
    np.testing.assert_allclose(volume2.array[0], 2 * stored - 100)
    np.testing.assert_allclose(volume1.array, volume2.array)
    assert meta2["rescale_slope"] == 2.0 and meta2["rescale_intercept"] == -100.0


def test_default_orientation_is_upright_in_the_coronal_view(phantom_files, tmp_path):
    def no_orientation(dataset):
        del dataset.PatientOrientation

    radiograph = read_radiograph(_rewrite(phantom_files[0], tmp_path / "n.dcm", no_orientation))
    assert radiograph.metadata["orientation_source"].startswith("default")
    geometry = radiograph.image.geometry
    rows, cols = radiograph.image.array.shape[1:]
    top_left, bottom_right = geometry.ras_of_ijk(np.array([[0, 0, 0], [cols - 1, rows - 1, 0]]))
    assert top_left[0] > bottom_right[0]  # first column toward the patient's right (R = +x)
    assert top_left[2] > bottom_right[2]  # first row toward the head (S = +z)
    assert top_left[1] == pytest.approx(bottom_right[1])  # a coronal plane
    np.testing.assert_allclose(geometry.ras_of_ijk(np.array([(cols - 1) / 2, (rows - 1) / 2, 0])), 0, atol=1e-9)


def test_image_orientation_patient_is_converted_from_lps(phantom_files, tmp_path):
    def orient(dataset):
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # LPS: columns to patient left, rows to feet
        dataset.ImagePositionPatient = [-150, 20, 300]

    volume, meta = read_dicom_image(_rewrite(phantom_files[0], tmp_path / "o.dcm", orient))
    assert meta["orientation_source"] == "ImageOrientationPatient"
    np.testing.assert_allclose(volume.geometry.directions, RADIOGRAPH_DIRECTIONS, atol=1e-12)
    assert volume.geometry.origin_mm == pytest.approx((150.0, -20.0, 300.0))


def test_dicom_without_pixel_data_is_refused(phantom_files, tmp_path):
    def strip(dataset):
        del dataset.PixelData

    path = _rewrite(phantom_files[0], tmp_path / "nopixels.dcm", strip)
    with pytest.raises(FileFormatError, match=r"no image \(pixel data\)"):
        read_radiograph(path)


def test_non_dicom_and_missing_files_are_refused(tmp_path, rng):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(FileFormatError, match="not a DICOM file"):
        read_radiograph(garbage)
    no_extension = tmp_path / "notes"
    no_extension.write_text("this is not an image\n" * 20)
    with pytest.raises(FileFormatError):
        read_radiograph(no_extension)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_radiograph(tmp_path / "missing.dcm")
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(FileFormatError, match="not a supported"):
        read_radiograph(other)


def test_dicom_without_extension_is_detected(phantom_files, tmp_path):
    target = tmp_path / "IM0001"
    target.write_bytes(phantom_files[0].read_bytes())
    assert read_radiograph(target).metadata["format"] == "dicom"


def test_multiframe_and_colour_dicom_are_refused(phantom_files, tmp_path):
    def two_frames(dataset):
        dataset.NumberOfFrames = 2
        dataset.PixelData = dataset.PixelData * 2

    def colour(dataset):
        rows, cols = dataset.Rows, dataset.Columns
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
        dataset.PixelData = bytes(rows * cols * 3)

    with pytest.raises(InputError, match="2 frames"):
        read_radiograph(_rewrite(phantom_files[0], tmp_path / "mf.dcm", two_frames))
    with pytest.raises(InputError, match="colour"):
        read_radiograph(_rewrite(phantom_files[0], tmp_path / "rgb.dcm", colour))


def test_compressed_dicom_without_decoder_says_what_to_install(phantom_files, tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")

    def compress(dataset):
        dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
        dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64)])
        dataset["PixelData"].is_undefined_length = True
        dataset["PixelData"].VR = "OB"

    with pytest.raises(FileFormatError, match="install"):
        read_radiograph(_rewrite(phantom_files[0], tmp_path / "jls.dcm", compress))


# ---------------------------------------------------------------- pictures

def test_grey_stored_as_rgb_is_converted_by_luminance_and_true_colour_is_refused(tmp_path):
    import SimpleITK as sitk

    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 198, 202, 255  # grey, channels within 2 levels
    rgba[:5, :, :3] = 255
    rgba[10:, :, :3] = 20
    path = tmp_path / "grey_rgba.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgba, isVector=True), str(path))
    radiograph = read_radiograph(path)
    assert radiograph.image.array.shape == (1, 20, 30)
    assert radiograph.image.array[0, 7, 10] == pytest.approx(0.299 * 200 + 0.587 * 198 + 0.114 * 202, abs=1e-4)
    assert radiograph.image.array[0, 0, 0] == pytest.approx(255.0, abs=1e-3)
    assert not radiograph.spacing_known
    colour = rgba[..., :3].copy()
    colour[..., 0], colour[..., 2] = 200, 50  # orange: a photograph, not a radiograph
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "colour.png"))
    with pytest.raises(InputError, match="colour image"):
        read_radiograph(tmp_path / "colour.png")


# ---------------------------------------------------------------- CLI and demo

def test_demo_without_shared_data_runs_on_the_phantom(tmp_path):
    markdown = demo(tmp_path / "chest", None)
    assert markdown.startswith("## ")
    assert "(chest/phantom_mono2.png)" in markdown and "(chest/phantom_mono1.png)" in markdown
    assert (tmp_path / "chest" / "phantom_mono2.png").is_file()
    assert (tmp_path / "chest" / "phantom_mono2_normalised.nrrd").is_file()
    assert "max |difference| of the normalised images 0.00e+00" in markdown
    # then each image is graded (network, else classical detector) and drawn with its overlay
    graded = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:5] for line in markdown.splitlines()
              if line.startswith("| Synthetic phantom") and line.count(" | ") == 6}
    assert set(graded) == {"Synthetic phantom, DICOM MONOCHROME2", "Synthetic phantom, DICOM MONOCHROME1"}
    mono2 = graded["Synthetic phantom, DICOM MONOCHROME2"]
    assert mono2 == graded["Synthetic phantom, DICOM MONOCHROME1"] and mono2[0] in ("FIRST", "INTERMEDIATE", "SECOND")
    assert (tmp_path / "chest" / "phantom_mono2_overlay.png").is_file()


def test_phantom_ground_truth_is_consistent(phantom):
    masks = phantom.masks
    assert phantom.image.shape == (256, 256)
    assert not (masks["right_lung"] & masks["heart"]).any()
    lung = phantom.image[masks["right_lung"] & ~masks["ribs"]]
    tissue = phantom.image[masks["torso"] & ~masks["right_lung"] & ~masks["left_lung"] & ~masks["spine"]
                           & ~masks["ribs"]]
    assert np.median(lung) < np.median(tissue) - 0.2  # lungs are dark in MONOCHROME2
    columns = np.nonzero(masks["right_lung"].any(axis=0))[0]
    assert columns.mean() < 128  # the right lung is on the image left
