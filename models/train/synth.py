"""Synthetic radiographs of long bones, with and without fractures.

Pure numpy; every random choice comes from the `numpy.random.Generator` that
the caller passes in, so a seed gives the same images on every machine that
runs the pinned numpy.

An image is a 256x256 float32 array in 0..1, bright = dense (what the
inference pipeline produces after the VOI window). It is built as a projection:

  soft tissue: a smooth background plus, around each bone, the chord of a
               wide soft-tissue cylinder;
  bone:        a hollow cylinder (capsule with rounded ends), projected, so the
               cortex shows as two bright rims around a darker medulla;
               1 bone (65 %) or 2 (35 %: parallel like radius/ulna, or crossing);
  fracture:    (positives only, in one bone) a line across the bone at a random
               point and an oblique angle: a lucent gap (thin dark line, with
               a wavy course), a displaced step (the distal fragment shifted
               sideways), or both;
  distractors: faint thin dark lines through the soft tissue (skin folds,
               clothing), in positives and negatives alike;
  acquisition: random window (contrast and brightness), gamma, blur, Gaussian
               plus signal-dependent noise, quantised to 16 bits.

The fracture mask marks the fracture line inside the bone, a few pixels wide.
`cell_target` turns it into the 32x32 (stride 8) heatmap target.
"""

from __future__ import annotations

import math

import numpy as np

SIZE = 256
STRIDE = 8


def _chord(r, dist):
    """Length of the chord at distance `dist` from the centre of a circle of radius r."""
    return 2.0 * np.sqrt(np.clip(r * r - dist * dist, 0.0, None))


def _blur(img, sigma):
    """Separable Gaussian blur with edge padding."""
    if sigma <= 0.05:
        return img
    rad = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, rad, mode="edge")
    h = sum(k[i] * p[:, i:i + img.shape[1]] for i in range(2 * rad + 1))
    v = sum(k[i] * h[i:i + img.shape[0], :] for i in range(2 * rad + 1))
    return v


class _Bone:
    def __init__(self, rng, centre, theta, r_out):
        self.p = np.asarray(centre, dtype=np.float64)
        self.theta = theta
        self.u = np.array([math.cos(theta), math.sin(theta)])  # along the shaft (x, y)
        self.n = np.array([-math.sin(theta), math.cos(theta)])  # across the shaft
        self.r_out = r_out
        self.r_in = r_out * (1.0 - rng.uniform(0.22, 0.42))  # cortex 22-42 % of radius
        self.half_len = rng.uniform(70.0, 220.0)
        self.flare = rng.uniform(0.0, 0.35)  # metaphyseal widening towards the ends
        self.rho_c = rng.uniform(0.65, 1.0)  # cortical density
        self.rho_m = self.rho_c * rng.uniform(0.15, 0.45)  # medullary density

    def coords(self, xx, yy, shift=0.0):
        """Along-shaft s and distance-to-axis for each pixel (axis shifted sideways by `shift`)."""
        px = self.p[0] + shift * self.n[0]
        py = self.p[1] + shift * self.n[1]
        dx, dy = xx - np.float32(px), yy - np.float32(py)
        s = dx * np.float32(self.u[0]) + dy * np.float32(self.u[1])
        across = dx * np.float32(self.n[0]) + dy * np.float32(self.n[1])
        beyond = np.maximum(np.abs(s) - np.float32(self.half_len), 0.0)  # past the rounded end
        dist = np.sqrt(across * across + beyond * beyond)
        return s, dist

    def radius_at(self, s):
        t = np.minimum(np.abs(s) * np.float32(1.0 / self.half_len), 1.0)
        return 1.0 + np.float32(self.flare) * (t * t * t)

    def density(self, xx, yy, shift=0.0):
        s, dist = self.coords(xx, yy, shift)
        f = self.radius_at(s)
        ro, ri = self.r_out * f, self.r_in * f
        outer, inner = _chord(ro, dist), _chord(ri, dist)
        # projected path length through cortex and medulla, normalised by the diameter
        return (self.rho_c * (outer - inner) + self.rho_m * inner) / (2.0 * self.r_out)

    def inside(self, xx, yy, margin=0.0):
        s, dist = self.coords(xx, yy)
        return dist <= self.r_out * self.radius_at(s) + margin


def _visible_point(bone, rng, lo=28.0, hi=SIZE - 28.0):
    """An along-shaft position on the bone whose axis point lies well inside the image."""
    for _ in range(50):
        s = rng.uniform(-0.8, 0.8) * bone.half_len
        q = bone.p + s * bone.u
        if lo <= q[0] <= hi and lo <= q[1] <= hi:
            return s
    # fall back to the axis point nearest the image centre
    c = np.array([SIZE / 2, SIZE / 2])
    s = float(np.dot(c - bone.p, bone.u))
    return float(np.clip(s, -0.8 * bone.half_len, 0.8 * bone.half_len))


def generate(rng: np.random.Generator, fracture: bool):
    """One image. Returns (image float32 [256,256] in 0..1, mask float32 [256,256] in {0,1})."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    xx += 0.5
    yy += 0.5

    # --- bones -------------------------------------------------------------
    theta = rng.uniform(0.0, math.pi)
    centre = np.array([SIZE / 2, SIZE / 2]) + rng.uniform(-55.0, 55.0, size=2)
    r1 = rng.uniform(9.0, 24.0)
    bones = [_Bone(rng, centre, theta, r1)]
    if rng.uniform() < 0.35:
        r2 = rng.uniform(7.0, 20.0)
        if rng.uniform() < 0.7:  # a parallel pair (forearm, lower leg)
            t2 = theta + rng.uniform(-0.15, 0.15)
            gap = r1 + r2 + rng.uniform(5.0, 25.0)
            side = 1.0 if rng.uniform() < 0.5 else -1.0
            c2 = centre + side * gap * bones[0].n + rng.uniform(-30, 30) * bones[0].u
        else:  # a crossing one
            t2 = theta + rng.uniform(0.5, math.pi - 0.5)
            c2 = centre + rng.uniform(-40.0, 40.0, size=2)
        bones.append(_Bone(rng, c2, t2, r2))

    # --- soft tissue ---------------------------------------------------------
    img = np.full((SIZE, SIZE), rng.uniform(0.0, 0.15), dtype=np.float32)
    for _ in range(2):  # slow background variation
        fx, fy = (float(v) / SIZE for v in rng.uniform(-1.5, 1.5, size=2))
        img += rng.uniform(0.0, 0.05) * np.cos(2 * math.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * math.pi))
    rho_s = rng.uniform(0.15, 0.45)
    b0 = bones[0]
    r_soft = b0.r_out * rng.uniform(2.5, 4.5)
    _, dist0 = b0.coords(xx, yy)
    img += rho_s * _chord(r_soft, dist0) / (2.0 * r_soft)
    # distractors: faint thin dark lines through the soft tissue
    for _ in range(rng.integers(0, 4)):
        a = rng.uniform(0, math.pi)
        c = [float(v) for v in rng.uniform(0, SIZE, size=2)]
        e = (xx - c[0]) * -math.sin(a) + (yy - c[1]) * math.cos(a)
        img -= rng.uniform(0.01, 0.05) * np.exp(-((e / rng.uniform(0.6, 1.8)) ** 2))

    # --- the fracture ----------------------------------------------------------
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    fb = int(rng.integers(0, len(bones))) if fracture else -1
    for i, bone in enumerate(bones):
        if i != fb:
            img += bone.density(xx, yy)
            continue
        s_f = _visible_point(bone, rng)
        f = [float(v) for v in bone.p + s_f * bone.u]
        phi = rng.uniform(-0.7, 0.7)  # obliquity of the fracture line against the cross-section
        m = [float(v) for v in math.cos(phi) * bone.u + math.sin(phi) * bone.n]  # normal of the fracture line
        along_line = [-m[1], m[0]]
        w = (xx - f[0]) * along_line[0] + (yy - f[1]) * along_line[1]
        e = (xx - f[0]) * m[0] + (yy - f[1]) * m[1]
        # a wavy, not perfectly straight, course
        e = e + rng.uniform(0.0, 1.5) * np.sin(w * rng.uniform(0.15, 0.6) + rng.uniform(0, 2 * math.pi))
        kind = rng.uniform()
        if kind < 0.5:  # lucent line only
            offset, depth = 0.0, rng.uniform(0.3, 0.95)
        elif kind < 0.8:  # displaced, with a gap
            offset, depth = rng.uniform(1.5, 5.0), rng.uniform(0.2, 0.8)
        else:  # displaced step, no visible gap
            offset, depth = rng.uniform(2.0, 6.0), 0.0
        offset *= 1.0 if rng.uniform() < 0.5 else -1.0
        g = rng.uniform(0.8, 3.0)  # gap width, pixels
        side = np.clip(e + 0.5, 0.0, 1.0)  # 0 on the proximal side, 1 on the distal
        dens = (1.0 - side) * bone.density(xx, yy) + side * bone.density(xx, yy, shift=offset)
        dens *= 1.0 - depth * np.exp(-((e / (0.5 * g)) ** 2))
        img += dens
        sx, sy = float(offset * bone.n[0]), float(offset * bone.n[1])
        inside = bone.inside(xx, yy, margin=1.5) | bone.inside(xx - sx, yy - sy, margin=1.5)
        mask = ((np.abs(e) <= 0.5 * g + 2.5) & inside).astype(np.float32)

    # --- acquisition -------------------------------------------------------------
    img = _blur(img, rng.uniform(0.3, 1.2))
    lo, hi = np.percentile(img, [0.5, 99.8])
    img = (img - lo) / max(hi - lo, 1e-6)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    scale = rng.uniform(0.55, 1.0)
    img = img * scale + rng.uniform(0.0, 1.0 - scale)
    sigma = rng.uniform(0.004, 0.035)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * (sigma * (0.5 + np.sqrt(np.clip(img, 0, 1))))
    img = np.round(np.clip(img, 0.0, 1.0) * 65535.0) / 65535.0
    return img.astype(np.float32), mask


def cell_target(mask):
    """32x32 target: a cell is positive when any of its 8x8 pixels is on the fracture line."""
    h, w = mask.shape
    return mask.reshape(h // STRIDE, STRIDE, w // STRIDE, STRIDE).max(axis=(1, 3))


def dataset(seed: int, n: int):
    """n images, alternately negative and positive (even index = no fracture).

    Returns images [n,1,256,256] float32, cell targets [n,1,32,32] float32 and labels [n] int.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, SIZE, SIZE), dtype=np.float32)
    targets = np.empty((n, 1, SIZE // STRIDE, SIZE // STRIDE), dtype=np.float32)
    labels = np.arange(n) % 2
    for i in range(n):
        img, mask = generate(rng, bool(labels[i]))
        images[i, 0] = img
        targets[i, 0] = cell_target(mask)
    return images, targets, labels
