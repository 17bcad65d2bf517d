import torch

from scenarios.transforms import permute_pixels, pixel_permutation, rotate_images, task_generator


def test_permutation_moves_the_same_pixels():
    x = torch.rand(5, 1, 28, 28)
    perm = pixel_permutation(784, task_generator(0, 2, 1))
    assert sorted(perm.tolist()) == list(range(784))
    px = permute_pixels(x, perm)
    assert torch.equal(px.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert not torch.equal(px, x)
    inverse = torch.argsort(perm)
    assert torch.equal(permute_pixels(px, inverse), x)


def test_permutation_keeps_channels_of_a_pixel_together():
    x = torch.rand(2, 3, 4, 4)
    perm = pixel_permutation(16, task_generator(0, 2, 0))
    px = permute_pixels(x, perm)
    for j in range(16):
        src = int(perm[j])
        assert torch.equal(px[:, :, j // 4, j % 4], x[:, :, src // 4, src % 4])


def test_permutation_of_flat_vectors():
    x = torch.arange(12.0).view(2, 6)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    assert torch.equal(permute_pixels(x, perm), x.flip(1))


def test_rotation_by_zero_is_identity():
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(rotate_images(x, 0.0), x)
    assert torch.allclose(rotate_images(x, 1e-9), x, atol=1e-5)


def test_rotation_by_90_moves_a_known_pixel():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 2, 20] = 1.0  # row 2, column 20: top right
    for angle, mode in ((90.0, "bilinear"), (90.0 + 1e-7, "bilinear"), (90.0 + 1e-7, "nearest")):
        r = rotate_images(x, angle, interpolation=mode)
        # counter-clockwise by 90 degrees: (row, col) -> (W-1-col, row)
        assert r[0, 0, 7, 2] > 0.99, mode
        assert abs(float(r.sum()) - 1.0) < 1e-4


def test_task_generator_depends_on_seed_purpose_and_task():
    draws = {
        (s, p, t): torch.randint(0, 10**9, (1,), generator=task_generator(s, p, t)).item()
        for s in (0, 1) for p in (1, 2) for t in (0, 1)
    }
    assert len(set(draws.values())) == len(draws)
    again = torch.randint(0, 10**9, (1,), generator=task_generator(1, 2, 0)).item()
    assert again == draws[(1, 2, 0)]
