"""A faithful re-implementation of the official Primitives-PS CPU generator (numpy + OpenCV).

It reproduces ``pretrain/noise_dataset.py`` of FriedRonaldo/Primitives-PS call for call: the same numpy random
calls in the same order (so a ``RandomState`` seeded like the official process's global state yields the very same
images), OpenCV's ``line / circle / ellipse / rectangle`` drawing, the 256-pixel constants and every quirk described
in METHODS.md section 1.2. It exists as the baseline for benchmarks (``provider=baseline-official``) and for the
statistical tests of :class:`fastgan.synth.PrimitivesPS`; it is not used to make training data.

Needs ``opencv-python-headless`` (``pip install fastgan[official]``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

# The official shape list: the line has probability 1/7, the other three 2/7 each.
SHAPES = ("line", "circle", "circle", "ellipse", "ellipse", "rectangle", "rectangle")
VARIANTS = ("pinknoise", "primitives", "primitives-s", "primitives-ps")


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the official Primitives-PS generator needs OpenCV: pip install opencv-python-headless "
                          "(or pip install fastgan[official])") from exc
    return cv2


def renormalize(x: np.ndarray) -> np.ndarray:
    """Joint min-max to [0, 255], truncated to uint8 (the official ``renormalize(x, 'int')``)."""
    lo, hi = np.min(x), np.max(x)
    return (255 * ((x - lo) / (hi - lo))).astype(np.uint8)


def pink_noise(rng: np.random.RandomState, size: int, alpha: float = 0.5, beta: float = 3.5,
               eps: float = 1e-6) -> np.ndarray:
    """One spectral channel: white noise -> FFT -> 1 / ((f_row^a + eps) + (f_col^b + eps)) -> real part of the IFFT."""
    white = rng.randn(size, size)
    spectrum = np.fft.fft2(white)
    freq = np.abs(np.fft.fftfreq(size, d=0.2))
    freq[0] = 0.1 * freq[1]
    a, b = rng.rand(2) * (beta - alpha) + alpha
    rows = np.float_power(freq, a) + eps
    cols = np.float_power(freq, b) + eps
    weight = 1 / (rows[:, None] + cols[None, :])
    return np.fft.ifft2(weight * spectrum).real


def rgb_pink_noise(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Three independent spectral channels stacked as H x W x 3 (float64, not yet normalised)."""
    return np.stack([pink_noise(rng, size) for _ in range(3)], axis=2)


def _colour(rng: np.random.RandomState) -> tuple:
    return tuple(rng.randint(0, 255, size=(3,), dtype=np.uint8).tolist())


def draw_particle(rng: np.random.RandomState, canvas: np.ndarray, index: int, iterations: int = 100) -> np.ndarray:
    """Shape number ``index`` of the coarse-to-fine schedule, drawn opaque onto ``canvas`` (H x W x 3)."""
    cv2 = _cv2()
    size = canvas.shape[0]
    kind = SHAPES[rng.randint(len(SHAPES))]
    colour = _colour(rng)
    max_size = int(np.round(size // 5 * (iterations - index) / iterations + 2))
    if kind == "line":
        x1, x2, y1, y2 = rng.randint(0, 255, size=(4,), dtype=np.uint8).tolist()
        # the official quirk: x and y sorted independently, so every segment runs top-left to bottom-right
        start = (min(x1, x2), min(y1, y2))
        end = (max(x1, x2), max(y1, y2))
        thickness = rng.randint(1, max_size)
        return cv2.line(canvas, start, end, colour, thickness)
    if kind == "circle":
        x, y = rng.randint(low=0, high=size, size=(2,), dtype=np.uint8).tolist()
        radius = rng.randint(low=1, high=max_size, dtype=np.uint8).tolist()
        return cv2.circle(canvas, (x, y), radius, colour, -1)
    if kind == "ellipse":
        x, y = rng.randint(low=0, high=size, size=(2,), dtype=np.uint8).tolist()
        r1, r2 = rng.randint(low=1, high=max_size, size=(2,), dtype=np.uint8).tolist()
        angle = rng.randint(0, 180)
        return cv2.ellipse(canvas, (x, y), (r1, r2), angle, 0, 360, colour, -1)
    x1, y1 = rng.randint(0, 255 - max_size, size=(2,), dtype=np.uint8).tolist()
    h, w = rng.randint(1, max_size, size=(2,), dtype=np.uint8).tolist()
    return cv2.rectangle(canvas, (x1, y1), (x1 + h, y1 + w), colour, -1)


def draw_salient(rng: np.random.RandomState, canvas: np.ndarray) -> np.ndarray:
    """The large central object (never a line); the rectangle ignores the drawn centre, as in the original."""
    cv2 = _cv2()
    size = canvas.shape[0]
    kind = SHAPES[rng.randint(1, len(SHAPES))]
    colour = _colour(rng)
    x, y = rng.randint(size // 2 - size // 10, size // 2 + size // 10, size=(2,), dtype=np.uint8).tolist()
    if kind == "circle":
        radius = rng.randint(size // 4, 3 * size // 8, dtype=np.uint8).tolist()
        return cv2.circle(canvas, (x, y), radius, colour, -1)
    if kind == "ellipse":
        r1, r2 = rng.randint(size // 4, 3 * size // 8, size=(2,), dtype=np.uint8).tolist()
        return cv2.ellipse(canvas, (x, y), (r1, r2), 0, 0, 360, colour, -1)
    x1, y1 = rng.randint(size // 8, size // 2, size=(2,), dtype=np.uint8).tolist()
    h, w = rng.randint(3 * size // 8, 3 * size // 4, size=(2,), dtype=np.uint8).tolist()
    return cv2.rectangle(canvas, (x1, y1), (x1 + h, y1 + w), colour, -1)


def _textured_saliency(rng: np.random.RandomState, canvas: np.ndarray) -> np.ndarray:
    size = canvas.shape[0]
    mask = draw_salient(rng, np.zeros((size, size, 3))) > 0  # per channel: a zero colour channel stays unmasked
    inside = renormalize(rgb_pink_noise(rng, size))
    return np.where(mask, inside.astype(np.float64), canvas.astype(np.float64))


def _flat_canvas(rng: np.random.RandomState, size: int) -> np.ndarray:
    grey = rng.randint(0, 255, size=(3,), dtype=np.uint8).tolist()
    # the original adds back_colors[0] to every channel: a grey background
    return np.zeros((size, size, 3)) + grey[0]


def generate(rng: np.random.RandomState, size: int = 256, variant: str = "primitives-ps",
             iterations: int = 100) -> np.ndarray:
    """One H x W x 3 image as the official code returns it: float64 holding integers in [0, 255].

    pinknoise = ``renormalize(generate_rgb_noise())``, primitives-ps = ``pink_leaves``, primitives-s =
    ``dead_leaves`` (flat grey background, shapes, solid salient object), primitives = dead leaves without the
    salient object.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "pinknoise":
        return renormalize(rgb_pink_noise(rng, size)).astype(np.float64)
    if variant == "primitives-ps":
        canvas = np.ascontiguousarray(renormalize(rgb_pink_noise(rng, size)))
        for i in range(iterations):
            canvas = draw_particle(rng, canvas, i, iterations)
        return _textured_saliency(rng, canvas)
    canvas = _flat_canvas(rng, size)
    for i in range(iterations):
        canvas = draw_particle(rng, canvas, i, iterations)
    if variant == "primitives-s":
        canvas = draw_salient(rng, canvas)
    return canvas


class OfficialGenerator:
    """The official generator behind the same ``images(start, count)`` interface as ``PrimitivesPS``.

    Image k draws from ``RandomState([seed_lo, seed_hi, k_lo, k_hi])``, so it depends only on (seed, k). Only
    resolutions up to 256 work, like the original (it draws uint8 coordinates).
    """

    def __init__(self, resolution: int = 256, variant: str = "primitives-ps", seed: int = 0,
                 num_shapes: int = 100):
        if not 8 <= resolution <= 256:
            raise ValueError(f"the official generator supports resolutions 8..256 (it draws uint8 coordinates), "
                             f"got {resolution}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if num_shapes < 1:
            raise ValueError(f"num_shapes must be at least 1, got {num_shapes}")
        _cv2()
        self.resolution, self.variant, self.seed, self.num_shapes = resolution, variant, int(seed), num_shapes

    def rng(self, index: int) -> np.random.RandomState:
        m = 0xFFFFFFFF
        return np.random.RandomState([self.seed & m, self.seed >> 32, index & m, index >> 32])

    def image(self, index: int) -> np.ndarray:
        """uint8 3 x H x W image number ``index``."""
        img = generate(self.rng(index), self.resolution, self.variant, self.num_shapes)
        return np.ascontiguousarray(img.astype(np.uint8).transpose(2, 0, 1))

    def images(self, start: int, count: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 (count, 3, H, W) images start .. start + count - 1."""
        if out is None:
            out = np.empty((count, 3, self.resolution, self.resolution), dtype=np.uint8)
        for k in range(count):
            out[k] = self.image(start + k)
        return out


def _pool_worker(args):
    resolution, variant, seed, num_shapes, start, count = args
    return OfficialGenerator(resolution, variant, seed, num_shapes).images(start, count)


def images_parallel(gen: OfficialGenerator, start: int, count: int, workers: int) -> np.ndarray:
    """The official generator over a process pool (how its DataLoader workers would run it)."""
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, -(-count // (4 * workers)))
    jobs = [(gen.resolution, gen.variant, gen.seed, gen.num_shapes, s, min(chunk, start + count - s))
            for s in range(start, start + count, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(_pool_worker, jobs)))
