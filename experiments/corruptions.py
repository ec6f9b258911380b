"""Image corruptions of increasing severity, in NumPy, in the spirit of CIFAR-10-C.

Each corruption maps float images `(N, H, W)` in [0, 1] to corrupted images
in [0, 1], at severity 1 (mild) to 5 (strong). Hendrycks and Dietterich
(ICLR 2019) define 15 corruptions for colour photographs; these four are the
ones that carry over to 28x28 greyscale images, with parameters chosen so
that severity 5 is hard but still recognisable to a person.
"""

import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
# Parameter per severity 1..5.
PARAMETERS = {
    # standard deviation of additive Gaussian noise
    "gaussian_noise": (0.08, 0.16, 0.24, 0.32, 0.40),
    # standard deviation of the Gaussian blur kernel, in pixels
    "blur": (0.5, 0.8, 1.1, 1.5, 2.0),
    # rotation angle in degrees, clockwise or anticlockwise at random
    "rotation": (10, 20, 30, 45, 60),
    # factor the deviations from each image's mean are multiplied by
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),
}
CORRUPTIONS = tuple(PARAMETERS)


def gaussian_noise(images, sigma, rng):
    return np.clip(images + rng.normal(0.0, sigma, images.shape), 0.0, 1.0)


def blur(images, sigma, rng=None):
    """Separable Gaussian blur; pixels beyond the border count as black."""
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = images
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad)
        size = out.shape[axis]
        out = sum(
            weight * np.take(padded, np.arange(i, i + size), axis=axis)
            for i, weight in enumerate(kernel)
        )
    return np.clip(out, 0.0, 1.0)


def rotation(images, degrees, rng):
    """Rotates each image about its centre by +-`degrees`, bilinear, black fill."""
    count, height, width = images.shape
    angles = np.deg2rad(degrees) * rng.choice([-1.0, 1.0], size=count)
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    y, x = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")
    # Each output pixel reads the input at the inversely rotated position.
    source_y = cos * y - sin * x + cy
    source_x = sin * y + cos * x + cx
    top, left = np.floor(source_y).astype(int), np.floor(source_x).astype(int)
    dy, dx = source_y - top, source_x - left
    batch = np.arange(count)[:, None, None]

    def pixel(row, col):
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        values = images[batch, np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)]
        return np.where(inside, values, 0.0)

    out = (
        pixel(top, left) * (1 - dy) * (1 - dx)
        + pixel(top, left + 1) * (1 - dy) * dx
        + pixel(top + 1, left) * dy * (1 - dx)
        + pixel(top + 1, left + 1) * dy * dx
    )
    return np.clip(out, 0.0, 1.0)


def contrast(images, factor, rng=None):
    mean = images.mean(axis=(1, 2), keepdims=True)
    return np.clip((images - mean) * factor + mean, 0.0, 1.0)


def corrupt(images, name, severity, seed=0):
    """`images` under corruption `name` at `severity` (1-5), float32.

    Raises:
        ValueError: for an unknown corruption or severity.
    """
    if name not in PARAMETERS:
        raise ValueError(f"Unknown corruption {name!r}; choose from {CORRUPTIONS}.")
    if severity not in SEVERITIES:
        raise ValueError(f"Severity must be one of {SEVERITIES}, got {severity!r}.")
    function = {
        "gaussian_noise": gaussian_noise,
        "blur": blur,
        "rotation": rotation,
        "contrast": contrast,
    }[name]
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
    images = np.asarray(images, dtype="float64")
    return function(images, PARAMETERS[name][severity - 1], rng).astype("float32")
