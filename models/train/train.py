"""Train the fxtriage demo model on synthetic radiographs and export it.

    python train.py [--out ../fxtriage-demo]

Steps (all seeded, CPU only, 2 threads):
  1. generate the training set (synth.py, seed TRAIN_SEED), a calibration set
     (CALIB_SEED) and a held-out set (HELD_OUT_SEED), 50 % with fractures;
  2. train a small fully-convolutional CNN that maps a 256x256 windowed
     radiograph to a 32x32 map of fracture probabilities (stride 8);
  3. shift the head's bias by -log(POS_WEIGHT) to undo the class weighting of
     the loss, export to ONNX (input `image` [N,1,256,256], output `heatmap`
     [N,1,32,32], dynamic N), and check that ONNX Runtime gives the same
     output as PyTorch;
  4. with ONNX Runtime on the exported file, pick the two operating points on
     the calibration set and measure them, with the AUC, on the held-out set;
  5. write model.onnx, manifest.toml and MODEL_CARD.md.

The image-level probability is the maximum of the heatmap.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import synth

SEED = 20260101  # torch initialisation and batch order
TRAIN_SEED = 1
TRAIN_IMAGES = 4000
CALIB_SEED = 2
CALIB_IMAGES = 1000
HELD_OUT_SEED = 1001
HELD_OUT_IMAGES = 1000
EPOCHS = 12
BATCH = 32
CROP = 128  # training crops (in pixels, multiple of the stride); evaluation uses whole images
LR = 3e-3
OPSET = 17
POS_WEIGHT = 16.0  # weight of positive cells in the loss
SUSPECTED_MIN_SPECIFICITY = 0.95  # "suspected": the lowest threshold with at least this specificity
POSSIBLE_MIN_SENSITIVITY = 0.95  # "possible": the highest threshold with at least this sensitivity
HERE = os.path.dirname(os.path.abspath(__file__))


def conv(cin, cout, stride=1):
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class HeatmapNet(nn.Module):
    """256x256x1 -> 32x32x1, fully convolutional.

    Encoder: 3x3 convolutions with batch normalisation and ReLU, three of them
    with stride 2 (256 -> 128 -> 64 -> 32); a context branch goes down once
    more (16x16), is upsampled back (nearest) and added; one more 3x3
    convolution, a 1x1 head to a single channel, and a sigmoid.
    """

    def __init__(self, a=16, b=32, c=32):
        super().__init__()
        self.encoder = nn.Sequential(
            *conv(1, a, 2),  # 128
            *conv(a, b, 2),  # 64
            *conv(b, b),
            *conv(b, c, 2),  # 32
            *conv(c, c),
        )
        self.context = nn.Sequential(*conv(c, c, 2), *conv(c, c))  # 16
        self.decoder = nn.Sequential(*conv(c, c))
        self.head = nn.Conv2d(c, 1, 1)

    def logits(self, x):
        f = self.encoder(x)
        g = F.interpolate(self.context(f), scale_factor=2.0, mode="nearest")
        return self.head(self.decoder(f + g))

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


def dihedral(x, k):
    """One of the 8 rotations/flips of an NCHW batch (k in 0..7)."""
    if k & 4:
        x = x.transpose(2, 3)
    return torch.rot90(x, k & 3, dims=(2, 3))


def loss_fn(logits, target):
    """Weighted per-cell binary cross-entropy.

    Cells next to a fracture cell are ambiguous at stride 8: they count
    neither for nor against. The few positive cells weigh POS_WEIGHT times more
    (undone after training by a shift of the head's bias, see main).
    (An extra image-level term on the maximum cell stalled training.)
    """
    near = F.max_pool2d(target, 3, stride=1, padding=1)
    weight = torch.where((near > 0) & (target == 0), 0.0, 1.0) + (POS_WEIGHT - 1.0) * target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / weight.sum()


def auc(scores, labels):
    """Area under the ROC curve (Mann-Whitney, ties count half)."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    rpos = r[: len(pos)].sum()
    return float((rpos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def rates(scores, labels, threshold):
    pred = scores >= threshold
    sens = float((pred & (labels == 1)).sum() / (labels == 1).sum())
    spec = float((~pred & (labels == 0)).sum() / (labels == 0).sum())
    return sens, spec


def pick_thresholds(scores, labels):
    """Thresholds rounded to 4 decimals, chosen on the calibration set."""
    cands = np.unique(np.round(scores.astype(np.float64), 4))
    cands = np.concatenate([cands, [1.0]])
    suspected = next(t for t in cands if rates(scores, labels, t)[1] >= SUSPECTED_MIN_SPECIFICITY)
    possible = max(t for t in cands if rates(scores, labels, t)[0] >= POSSIBLE_MIN_SENSITIVITY)
    # "possible" is never stricter than "suspected"
    possible = min(possible, suspected)
    return float(suspected), float(possible)


def ort_scores(path, images, batch=100):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    heat = np.concatenate([sess.run(["heatmap"], {"image": images[i:i + batch]})[0] for i in range(0, len(images), batch)])
    return heat


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fxtriage-demo"))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--checkpoint", help="save the trained weights here; if the file exists, load it and skip training")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    torch.set_num_threads(2)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    t0 = time.time()
    resume = bool(args.checkpoint and os.path.exists(args.checkpoint))
    if resume:
        x_tr = np.zeros((TRAIN_IMAGES, 1, synth.SIZE, synth.SIZE), np.float32)  # not needed
        y_tr = np.zeros((TRAIN_IMAGES, 1, synth.SIZE // synth.STRIDE, synth.SIZE // synth.STRIDE), np.float32)
    else:
        print(f"generating {TRAIN_IMAGES} training images (seed {TRAIN_SEED}) ...", flush=True)
        x_tr, y_tr, _ = synth.dataset(TRAIN_SEED, TRAIN_IMAGES)
    print(f"generating {CALIB_IMAGES} calibration images (seed {CALIB_SEED}) ...", flush=True)
    x_ca, _, l_ca = synth.dataset(CALIB_SEED, CALIB_IMAGES)
    t_gen = time.time() - t0
    print(f"  {t_gen:.0f} s", flush=True)

    model = HeatmapNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps_per_epoch = TRAIN_IMAGES // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=args.epochs * steps_per_epoch, pct_start=0.15)
    xt = torch.from_numpy(x_tr)
    yt = torch.from_numpy(y_tr)
    xc = torch.from_numpy(x_ca[:400])
    gen = torch.Generator().manual_seed(SEED)
    cells = synth.SIZE // synth.STRIDE
    ccells = CROP // synth.STRIDE

    def crop_batch(idx):
        """Crops aligned to the cell grid; for 80 % of fractured images the crop holds the fracture."""
        xb = torch.empty(len(idx), 1, CROP, CROP)
        yb = torch.empty(len(idx), 1, ccells, ccells)
        r = torch.rand(len(idx), 3, generator=gen)
        for j, i in enumerate(idx.tolist()):
            pos = torch.nonzero(yt[i, 0])
            if len(pos) and r[j, 0] < 0.8:
                cy, cx = pos[int(r[j, 1] * len(pos))].tolist()
                lo_y, hi_y = max(0, cy - ccells + 1), min(cy, cells - ccells)
                lo_x, hi_x = max(0, cx - ccells + 1), min(cx, cells - ccells)
                oy = lo_y + int(r[j, 2] * (hi_y - lo_y + 1))
                ox = lo_x + int(torch.rand(1, generator=gen) * (hi_x - lo_x + 1))
            else:
                oy, ox = torch.randint(0, cells - ccells + 1, (2,), generator=gen).tolist()
            p = synth.STRIDE
            xb[j] = xt[i, :, oy * p:oy * p + CROP, ox * p:ox * p + CROP]
            yb[j] = yt[i, :, oy:oy + ccells, ox:ox + ccells]
        return xb, yb

    def monitor_auc():
        model.eval()
        with torch.no_grad():
            sc = torch.cat([model.logits(xc[i:i + 50]).flatten(1).max(dim=1).values for i in range(0, len(xc), 50)])
        model.train()
        return auc(sc.numpy(), l_ca[: len(xc)])

    if resume:
        ck = torch.load(args.checkpoint)
        model.load_state_dict(ck["state_dict"])
        t_train, t_gen = ck["t_train"], ck["t_gen"]
        args.epochs = ck["epochs"]
        print(f"loaded {args.checkpoint}, skipping training", flush=True)
    else:
        t1 = time.time()
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(TRAIN_IMAGES, generator=gen)
            ks = torch.randint(0, 8, (steps_per_epoch,), generator=gen)
            total = 0.0
            for step in range(steps_per_epoch):
                xb, yb = crop_batch(perm[step * BATCH:(step + 1) * BATCH])
                k = int(ks[step])
                xb, yb = dihedral(xb, k), dihedral(yb, k)
                loss = loss_fn(model.logits(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            print(f"epoch {epoch + 1}/{args.epochs}: loss {total / steps_per_epoch:.4f}, "
                  f"AUC on 400 calibration images {monitor_auc():.4f} ({time.time() - t1:.0f} s)", flush=True)
        t_train = time.time() - t1
        if args.checkpoint:
            torch.save({"state_dict": model.state_dict(), "t_train": t_train, "t_gen": t_gen, "epochs": args.epochs},
                       args.checkpoint)
    del xt, yt, x_tr, y_tr

    # --- export --------------------------------------------------------------------
    model.eval()
    # Weighting positives by POS_WEIGHT shifts the learned logits up by log(POS_WEIGHT)
    # (prior correction); take that back out so the probabilities are less inflated.
    with torch.no_grad():
        model.head.bias -= math.log(POS_WEIGHT)
    onnx_path = os.path.join(out, "model.onnx")
    dummy = torch.zeros(2, 1, synth.SIZE, synth.SIZE)
    torch.onnx.export(
        model,
        (dummy,),
        onnx_path,
        dynamo=False,
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["image"],
        output_names=["heatmap"],
        dynamic_axes={"image": {0: "N"}, "heatmap": {0: "N"}},
    )
    import onnx

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)
    # no producer timestamp or path in the file, so the same weights give the same bytes
    print(f"exported {onnx_path}: {os.path.getsize(onnx_path)} bytes, opset {m.opset_import[0].version}, ir {m.ir_version}", flush=True)

    # --- evaluation with ONNX Runtime on the exported file ----------------------------
    print(f"generating the held-out set (seed {HELD_OUT_SEED}) ...", flush=True)
    x_ho, y_ho, l_ho = synth.dataset(HELD_OUT_SEED, HELD_OUT_IMAGES)

    with torch.no_grad():
        ref = model(torch.from_numpy(x_ho[:64])).numpy()
    heat_ho = ort_scores(onnx_path, x_ho)
    diff = float(np.abs(heat_ho[:64] - ref).max())
    print(f"max |onnxruntime - torch| on 64 images: {diff:.2e}", flush=True)
    assert diff < 1e-4, diff
    assert heat_ho.shape == (HELD_OUT_IMAGES, 1, 32, 32), heat_ho.shape

    s_ca = ort_scores(onnx_path, x_ca).reshape(CALIB_IMAGES, -1).max(axis=1)
    s_ho = heat_ho.reshape(HELD_OUT_IMAGES, -1).max(axis=1)
    t_susp, t_poss = pick_thresholds(s_ca, l_ca)
    se_s, sp_s = rates(s_ho, l_ho, t_susp)
    se_p, sp_p = rates(s_ho, l_ho, t_poss)
    a = auc(s_ho, l_ho)
    # localisation: in true positives at "suspected", is a hot cell (>= box_threshold) on the fracture?
    # boxes: cells at or above the "possible" threshold (rounded down), so every
    # image flagged at either operating point has at least one box
    box_threshold = math.floor(t_poss * 100.0) / 100.0
    # localisation: in true positives at "suspected", is the hottest cell on or next to the fracture?
    hit = []
    for i in np.where((l_ho == 1) & (s_ho >= t_susp))[0]:
        near = F.max_pool2d(torch.from_numpy(y_ho[i:i + 1]), 3, stride=1, padding=1).numpy()[0, 0] > 0
        hit.append(bool(near.flat[int(np.argmax(heat_ho[i, 0]))]))
    loc = float(np.mean(hit)) if hit else 0.0
    # false boxes: negatives with any cell at or above box_threshold are exactly those
    # flagged "possible" or higher (1 - specificity at "possible")
    print(f"held-out: AUC {a:.4f}", flush=True)
    print(f"  suspected  t={t_susp:.4f}: sensitivity {se_s:.4f} specificity {sp_s:.4f}", flush=True)
    print(f"  possible   t={t_poss:.4f}: sensitivity {se_p:.4f} specificity {sp_p:.4f}", flush=True)
    print(f"  box_threshold {box_threshold:.2f}; true positives at 'suspected' whose hottest cell is on the fracture: {loc:.4f}",
          flush=True)

    digest = sha256(onnx_path)
    info = dict(
        n_params=n_params,
        size=os.path.getsize(onnx_path),
        sha=digest,
        opset=m.opset_import[0].version,
        ir=m.ir_version,
        t_susp=t_susp,
        t_poss=t_poss,
        se_s=se_s,
        sp_s=sp_s,
        se_p=se_p,
        sp_p=sp_p,
        auc=a,
        loc=loc,
        box=box_threshold,
        t_train=t_train,
        t_gen=t_gen,
        epochs=args.epochs,
        versions=f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, onnx {onnx.__version__}",
    )
    write_manifest(os.path.join(out, "manifest.toml"), info)
    write_card(os.path.join(out, "MODEL_CARD.md"), info)
    print(f"sha256 {digest}", flush=True)
    print(f"total {time.time() - t0:.0f} s", flush=True)


def write_manifest(path, i):
    text = f'''# fxtriage model manifest, written by models/train/train.py; do not edit by hand.
name = "fxtriage-demo"
version = "0.1.0"
intended_use = "Demonstration only: trained on synthetic images only, to exercise the fxtriage pipeline. No clinical validity; not a medical device; not for diagnosis. Performance on real radiographs is unmeasured."
trained_on = "synthetic radiographs generated by models/train/train.py (synth.py, training seed {TRAIN_SEED}, {TRAIN_IMAGES} images, half with fractures)"

[weights]
file = "model.onnx"
sha256 = "{i["sha"]}"

[input]
name = "image"
size = 256          # square side in pixels
channels = 1
# normalisation applied to the windowed 0..1 image (bright = dense): (x - mean) / std
mean = 0.0
std = 1.0

[output]
name = "heatmap"
format = "heatmap"  # one of classifier | heatmap | yolo
stride = 8          # heatmap cell size in input pixels; output [N,1,32,32]
box_threshold = {i["box"]:.2f} # heatmap cells at or above this form boxes (connected regions);
                    # the "possible" threshold rounded down, so a flagged image always has a box
classes = ["fracture"]
# image-level probability = maximum of the heatmap

# Thresholds chosen on a calibration set (seed {CALIB_SEED}, {CALIB_IMAGES} images);
# sensitivity and specificity measured on the held-out set below.
[operating_points.suspected]
# lowest threshold with specificity >= {SUSPECTED_MIN_SPECIFICITY} on the calibration set
threshold = {i["t_susp"]:.4f}
sensitivity = {i["se_s"]:.4f}
specificity = {i["sp_s"]:.4f}

[operating_points.possible]
# highest threshold with sensitivity >= {POSSIBLE_MIN_SENSITIVITY} on the calibration set
threshold = {i["t_poss"]:.4f}
sensitivity = {i["se_p"]:.4f}
specificity = {i["sp_p"]:.4f}

[evaluation]
held_out_images = {HELD_OUT_IMAGES}
held_out_seed = {HELD_OUT_SEED}
auc = {i["auc"]:.4f}
'''
    with open(path, "w") as f:
        f.write(text)


def write_card(path, i):
    text = f'''# Model card: fxtriage-demo 0.1.0

**Trained on synthetic images only, to exercise the fxtriage pipeline. It has no
clinical validity, is not a medical device and must not be used for diagnosis.
Its performance on real radiographs is unmeasured.**

## What it is

A small fully-convolutional network that turns a windowed radiograph
(256x256, one channel, 0..1, bright = dense) into a 32x32 map of fracture
probabilities, one cell per 8x8 input pixels (the `heatmap` output format of
`manifest.toml`). The image-level probability is the maximum of the map;
cells at or above `box_threshold` ({i["box"]:.2f}, the "possible" threshold rounded
down) are grouped into connected regions that become boxes. It exists so that the fxtriage pipeline, its tests
and its benchmarks run end to end with a model that ships in the repository;
replace it with a real model (same manifest format) for any other purpose.

| | |
| --- | --- |
| file | `model.onnx`, {i["size"]} bytes, sha256 `{i["sha"]}` |
| ONNX | opset {i["opset"]}, IR version {i["ir"]}, dynamic batch dimension `N` |
| input | `image` float32 [N,1,256,256], windowed 0..1, no further normalisation (mean 0, std 1) |
| output | `heatmap` float32 [N,1,32,32], sigmoid probabilities, stride 8 |
| parameters | {i["n_params"]} |

## Architecture

A small encoder with a context branch, all 3x3 convolutions followed by batch
normalisation (folded into the convolutions at export) and ReLU:
1→16 (stride 2, 128x128), 16→32 (stride 2, 64x64), 32→32, 32→32 (stride 2,
32x32), 32→32; a context branch 32→32 (stride 2, 16x16), 32→32, upsampled
(nearest) back to 32x32 and added; 32→32; then a 1x1 convolution to one
channel and a sigmoid. Receptive field about 100 input pixels.

## Training data

All images come from `models/train/synth.py` (numpy, seeded). Each is a
projection of one or two long bones (35 % two: parallel like radius and ulna,
or crossing) drawn as hollow cylinders with rounded, slightly flared ends, so
the cortex shows as bright rims around a darker medulla, inside a soft-tissue
cylinder over a smooth background. Width (radius 7-24 px), cortical thickness,
densities, orientation (any angle), position and length vary. Half of the
images carry one fracture in one bone: a line across the bone at a random
point and an oblique angle (up to 40°), with a wavy course, drawn as a lucent
gap (0.8-3 px wide, 20-95 % loss of density), a sideways-displaced fragment
(1.5-6 px step), or both. Faint thin dark lines through the soft tissue appear
in positives and negatives alike. Acquisition: blur, a random window
(contrast 55-100 % of the range), gamma 0.7-1.4, Gaussian plus
signal-dependent noise, quantisation to 16 bits. The training target of each
32x32 cell is 1 where the cell holds part of the fracture line inside the
bone; cells next to those are ignored in the loss.

Training: {TRAIN_IMAGES} images (seed {TRAIN_SEED}), seen as random 128x128 crops
aligned to the 8-pixel grid (80 % of the crops of a fractured image hold the
fracture), random rotations and flips by multiples of 90°, {i["epochs"]} epochs of
{TRAIN_IMAGES // BATCH} batches of {BATCH}, AdamW with a one-cycle schedule (peak {LR}); loss:
per-cell binary cross-entropy, positive cells weighted {POS_WEIGHT:g}x (after training,
log({POS_WEIGHT:g}) is subtracted from the head's bias to undo the shift in the
probabilities that this weighting causes). PyTorch on 2 CPU
threads, fixed seeds, deterministic algorithms. Training took {i["t_train"]:.0f} s
(plus {i["t_gen"]:.0f} s to generate the images) on a 2-core machine shared with other work. Tools:
{i["versions"]}.

## Evaluation (synthetic only)

Measured with ONNX Runtime on the exported `model.onnx`. The thresholds were
chosen on a calibration set ({CALIB_IMAGES} images, seed {CALIB_SEED}); the rates are measured
on a separate held-out set ({HELD_OUT_IMAGES} images, seed {HELD_OUT_SEED}, 500 with a
fracture, 500 without), generated the same way as the training images.

| operating point | rule (on the calibration set) | threshold | sensitivity | specificity |
| --- | --- | --- | --- | --- |
| suspected | lowest threshold with specificity ≥ {SUSPECTED_MIN_SPECIFICITY:.2f} | {i["t_susp"]:.4f} | {i["se_s"]:.4f} | {i["sp_s"]:.4f} |
| possible | highest threshold with sensitivity ≥ {POSSIBLE_MIN_SENSITIVITY:.2f} | {i["t_poss"]:.4f} | {i["se_p"]:.4f} | {i["sp_p"]:.4f} |

ROC AUC on the held-out set: **{i["auc"]:.4f}**. Of the held-out fractures found
at "suspected", {100 * i["loc"]:.1f} % have their hottest heatmap cell on or next to
the fracture line (localisation).

These numbers only say that the model learned the synthetic task; the
synthetic images are far simpler than real radiographs (no joints, no
overlapping anatomy beyond a second bone, no implants, casts or growth
plates, no real noise texture). **No claim is made about real images.**

## Reproducing

See `models/train/README.md`: `models/train/run.sh` creates a virtual
environment with the pinned versions and reruns this training, which writes
the same thresholds and rates (and, with the same library versions on the same
CPU type, the same file).
'''
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
