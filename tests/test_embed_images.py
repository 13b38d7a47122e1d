"""`RelSimModel.embed_images` with hostile input: unreadable files (with and without DataLoader workers), skipping
them, and single images that must not be iterated into rows or characters."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from modeling_relsim import ImageEmbeddings, ImageFailure, UnreadableImageError


@pytest.fixture
def files(images, tmp_path):
    """Three good PNGs, a file that is not an image and a truncated JPEG (its header still opens lazily)."""
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"good-{index}.png"))
        image.save(paths[-1])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    buffer = io.BytesIO()
    images[0].save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return {"good": paths, "corrupt": str(tmp_path / "corrupt.png"), "cut": str(tmp_path / "cut.jpg")}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_corrupt_file_raises_unreadable_image_error_naming_it(model, processor, files, num_workers):
    good = files["good"]
    with pytest.raises(UnreadableImageError, match=r"corrupt\.png") as error:
        model.embed_images([good[0], good[1], files["corrupt"], good[2]], processor, batch_size=2,
                           num_workers=num_workers)  # fmt: skip
    assert error.value.source == files["corrupt"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_lazily_opened_truncated_image_raises_unreadable_image_error(model, processor, files, num_workers):
    lazy = PIL.Image.open(files["cut"])  # the header reads fine; the pixels are cut off
    with pytest.raises(UnreadableImageError, match=r"cut\.jpg") as error:
        model.embed_images([files["good"][0], lazy], processor, num_workers=num_workers)
    assert error.value.source == files["cut"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_keeps_every_readable_image_and_lists_the_failures(model, processor, files, num_workers):
    good = files["good"]
    inputs = [good[0], files["corrupt"], good[1], PIL.Image.open(files["cut"]), good[2]]
    result = model.embed_images(inputs, processor, batch_size=2, num_workers=num_workers, on_error="skip")
    assert isinstance(result, ImageEmbeddings)
    assert result.embeddings.shape == (3, 384) and result.indices == [0, 2, 4]
    assert [(failure.index, failure.source) for failure in result.failures] == [
        (1, files["corrupt"]), (3, files["cut"])
    ]  # fmt: skip
    assert all(isinstance(failure, ImageFailure) and failure.reason for failure in result.failures)
    alone = torch.cat([model.embed_images([path], processor) for path in good])
    torch.testing.assert_close(result.embeddings, alone, atol=1e-5, rtol=0)


def test_skip_with_nothing_readable_returns_an_empty_result(model, processor, files):
    result = model.embed_images([files["corrupt"], files["cut"]], processor, on_error="skip")
    assert result.embeddings.shape == (0, 384) and result.indices == []
    assert [failure.index for failure in result.failures] == [0, 1]


def test_a_single_image_is_one_image(model, processor, files, images):
    path = files["good"][1]
    expected = model.embed_images([path], processor)
    array = np.array(PIL.Image.open(path))  # 64 x 64 x 3: once read as 64 rows
    for single in (path, array, torch.from_numpy(array).permute(2, 0, 1), PIL.Image.open(path)):
        embeddings = model.embed_images(single, processor)
        assert embeddings.shape == (1, 384), type(single).__name__
        torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    stack = np.stack([array, array[::-1]])
    assert model.embed_images(stack, processor).shape == (2, 384)


def test_what_is_not_an_image_or_a_list_of_images_is_refused(model, processor, files):
    with pytest.raises(TypeError, match="got a int"):
        model.embed_images(42, processor)
    with pytest.raises(TypeError, match="got a dict"):
        model.embed_images({"image": files["good"][0]}, processor)
    with pytest.raises(TypeError, match=r"images\[1\] is a int"):
        model.embed_images([files["good"][0], 7], processor)
    with pytest.raises(TypeError, match=r"images\[0\] is a ndarray of shape \(2, 8, 8, 3\)"):
        model.embed_images([np.zeros((2, 8, 8, 3), np.uint8)], processor)
    with pytest.raises(TypeError, match=r"shape \(8,\)"):
        model.embed_images(np.zeros(8, np.uint8), processor)
    with pytest.raises(ValueError, match="on_error must be one of"):
        model.embed_images(files["good"], processor, on_error="ignore")
