import numpy as np
import pytest
import scipy.fft
import torch

from optim.dct import basis, dct_chunks, idct_chunks, layout_for


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
    coeffs = dct_chunks(x, lay)  # (6, 64): blocks in row-major grid order
    block = x[8:16, 16:24].numpy()  # grid row 1, grid col 2 -> chunk 1 * 3 + 2
    expected = scipy.fft.dctn(block, norm="ortho").reshape(-1)
    assert np.allclose(coeffs[5].numpy(), expected, atol=1e-13)


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
    assert torch.allclose(idct_chunks(dct_chunks(x, lay), lay), x, atol=1e-12)


def test_transform_preserves_energy_including_padding():
    x = torch.randn(61, 67, dtype=torch.float64)
    coeffs = dct_chunks(x, layout_for(x.shape, 64))
    assert torch.allclose(coeffs.square().sum(), x.square().sum(), rtol=1e-12)


def test_bf16_input_is_transformed_in_fp32():
    x = torch.randn(64, 64).to(torch.bfloat16)
    coeffs = dct_chunks(x, layout_for((64, 64), 64))
    assert coeffs.dtype == torch.float32
    assert torch.allclose(idct_chunks(coeffs, layout_for((64, 64), 64)), x.float(), atol=1e-5)


def test_empty_tensors_cannot_be_chunked():
    with pytest.raises(ValueError):
        layout_for((0, 4), 64)
