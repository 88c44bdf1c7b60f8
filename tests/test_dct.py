import numpy as np
import pytest
import scipy.fft
import torch

from optim.dct import basis, block_positions, chunk_major_abs, dct_blocks, idct_blocks, layout_for


def test_basis_matches_scipy_orthonormal_dct_ii():
    expected = scipy.fft.dct(np.eye(8), norm="ortho", axis=0)
    assert np.allclose(basis(8, torch.float64, torch.device("cpu")).numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_basis_is_orthonormal_to_float64_precision(n):
    f = basis(n, torch.float64, torch.device("cpu"))
    assert torch.allclose(f @ f.T, torch.eye(n, dtype=torch.float64), atol=1e-14)


def test_block_coefficients_match_scipy_dctn():
    x = torch.randn(16, 24, dtype=torch.float64)
    lay = layout_for((16, 24), 8)
    coeffs = dct_blocks(x, lay)  # (1, 16, 24): each 8x8 block holds its own coefficients
    expected = scipy.fft.dctn(x[8:16, 16:24].numpy(), norm="ortho")
    assert np.allclose(coeffs[0, 8:16, 16:24].numpy(), expected, atol=1e-13)


def test_chunk_ids_and_indices_name_block_positions():
    lay = layout_for((2, 16, 24), 8)  # 2 x 2 x 3 blocks of 8 x 8
    c = torch.randn(lay.padded_shape, dtype=torch.float64)
    chunks = torch.tensor([0, 5, 11])
    indices = torch.tensor([[0, 1], [9, 63], [8, 62]])
    flat = block_positions(lay, chunks, indices)
    # chunk 5 is lead 0, block (1, 2): index 9 is row 1, col 1 of it -> (9, 17)
    assert flat[1, 0] == 9 * 24 + 17
    assert torch.equal(chunk_major_abs(c, lay)[chunks[:, None], indices], c.view(-1)[flat].abs())


def test_accumulating_form_scales_and_adds():
    lay = layout_for((16, 24), 8)
    x, acc = torch.randn(16, 24, dtype=torch.float64), torch.randn(lay.padded_shape, dtype=torch.float64)
    expected = 0.5 * acc + 2.0 * dct_blocks(x, lay)
    assert torch.allclose(dct_blocks(x, lay, out=acc, beta=0.5, alpha=2.0), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("n", "block", "count"),
    [(64, 64, 1), (10, 10, 1), (65, 33, 2), (100, 50, 2), (128, 64, 2), (4099, 64, 65)],
)
def test_long_dimensions_split_into_balanced_blocks(n, block, count):
    lay = layout_for((n, n), 64)
    assert (lay.chunk_rows, lay.grid_rows) == (block, count)


def test_vectors_are_chunked_as_one_row():
    lay = layout_for((200,), 64)
    assert (lay.chunk_rows, lay.chunk_cols, lay.grid_cols, lay.n_chunks) == (1, 50, 4, 4)


def test_leading_dimensions_are_a_batch_of_matrices():
    lay = layout_for((3, 5, 70, 9), 64)
    assert (lay.lead, lay.chunk_rows, lay.chunk_cols, lay.n_chunks) == (15, 35, 9, 30)


@pytest.mark.parametrize("shape", [(7,), (64,), (61, 67), (128, 96), (4099, 3), (2, 3, 70, 130)])
def test_round_trip_is_exact_for_awkward_shapes(shape):
    x = torch.randn(shape, dtype=torch.float64)
    lay = layout_for(shape, 64)
    assert torch.allclose(idct_blocks(dct_blocks(x, lay), lay), x, atol=1e-12)


def test_transform_preserves_energy_including_padding():
    x = torch.randn(61, 67, dtype=torch.float64)
    coeffs = dct_blocks(x, layout_for(x.shape, 64))
    assert torch.allclose(coeffs.square().sum(), x.square().sum(), rtol=1e-12)


def test_bf16_input_is_transformed_in_fp32():
    x = torch.randn(64, 64).to(torch.bfloat16)
    coeffs = dct_blocks(x, layout_for((64, 64), 64))
    assert coeffs.dtype == torch.float32
    assert torch.allclose(idct_blocks(coeffs, layout_for((64, 64), 64)), x.float(), atol=1e-5)


def test_empty_tensors_cannot_be_chunked():
    with pytest.raises(ValueError):
        layout_for((0, 4), 64)
