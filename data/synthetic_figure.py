"""Articulated stick-figure people for the synthetic set: plausible 2-D poses, drawing, honest visibility.

A figure is sampled in a body frame (pelvis at the origin, height ~1, image axes), posed by a similarity
transform, then drawn part by part into the RGB image and into an int32 part-id map. Visibility:
v=0 outside the image, v=1 inside but hidden (behind another figure, behind its own torso, or a face
point turned away from the camera), v=2 when the pixel under the keypoint shows one of its own parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SHIFT = 4  # cv2 drawing with 1/16-pixel precision
_ONE = 1 << SHIFT

# Parts that may show at each of the 17 COCO keypoints for it to count as visible ("side" = l/r of the joint).
_OWN_PARTS = (
    ("head",),
    ("head",),
    ("head",),
    ("head",),
    ("head",),
    ("torso", "upper_arm_l"),
    ("torso", "upper_arm_r"),
    ("upper_arm_l", "forearm_l"),
    ("upper_arm_r", "forearm_r"),
    ("forearm_l", "hand_l"),
    ("forearm_r", "hand_r"),
    ("torso", "thigh_l"),
    ("torso", "thigh_r"),
    ("thigh_l", "shin_l"),
    ("thigh_r", "shin_r"),
    ("shin_l", "foot_l"),
    ("shin_r", "foot_r"),
)
# Face points: (azimuth on the head in degrees, +90 = person's left; height on the head in radii).
_FACE = ((0.0, -0.15), (30.0, 0.22), (-30.0, 0.22), (90.0, 0.0), (-90.0, 0.0))


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([v[0] * c - v[1] * s, v[0] * s + v[1] * c])


def _colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


@dataclass
class Figure:
    """A posed person: keypoints (17, 2) in image pixels, parts to draw in order, face self-occlusion."""

    keypoints: np.ndarray
    face_hidden: np.ndarray  # (5,) bool: face point turned away from the camera
    far_side_hidden: dict[str, bool]  # 'l'/'r': that shoulder/hip is behind the torso (profile view)
    parts: list[tuple[str, str, np.ndarray, float, tuple[int, int, int]]] = field(default_factory=list)
    head: tuple[np.ndarray, float, float, float] = (np.zeros(2), 0.0, 0.0, 0.0)  # centre, rx, ry, angle(deg)
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def sample_figure(
    rng: np.random.Generator, height_px: float, pelvis_xy: np.ndarray, side_shade: float = 0.0, tilt_deg: float = 0.0
) -> Figure:
    """Sample a plausible pose (view, lean, limb angles, foreshortening) for a figure `height_px` tall.

    ``side_shade`` darkens the person's left arm and leg by that fraction: without it left and right limbs
    look alike, and only the face (often a few pixels) tells a figure seen from the front from one seen from
    the back, i.e. which limb is the left one. ``tilt_deg`` > 0 rotates the whole figure by U(-t, t) degrees
    instead of the default mostly-upright tilt.
    """
    view = rng.choice(3, p=[0.55, 0.2, 0.25])  # front, back, profile
    yaw = np.deg2rad(
        [rng.uniform(-35, 35), 180 + rng.uniform(-35, 35), rng.choice([-1, 1]) * rng.uniform(60, 120)][view]
    )
    cy, sy = np.cos(yaw), np.sin(yaw)
    up = _rot(np.array([0.0, -1.0]), np.deg2rad(np.clip(rng.normal(0, 8), -25, 25)))
    lat = np.array([-up[1], up[0]])
    neck = up * 0.30
    sw, hw = 0.24 * max(abs(cy), 0.25), 0.16 * max(abs(cy), 0.3)
    side_x = {"l": 1.0 if cy >= 0 else -1.0, "r": -1.0 if cy >= 0 else 1.0}
    depth = {"l": -sy, "r": sy}
    shoulder = {s: neck + lat * side_x[s] * sw / 2 - up * 0.02 for s in "lr"}
    hip = {s: lat * side_x[s] * hw / 2 for s in "lr"}
    pts: dict[str, np.ndarray] = {}
    walking = rng.random() < 0.35
    for s in "lr":
        sx = side_x[s] if abs(cy) > 0.3 else float(rng.choice([-1.0, 1.0]))
        d_up = _rot(-up, -np.deg2rad(rng.uniform(-20, 160) if rng.random() < 0.5 else rng.uniform(-15, 60)) * sx)
        d_fore = _rot(d_up, np.deg2rad(rng.uniform(0, 140)) * rng.choice([-1.0, 1.0]))
        pts["shoulder_" + s] = shoulder[s]
        pts["elbow_" + s] = shoulder[s] + d_up * 0.17 * rng.uniform(0.65, 1.0)
        pts["wrist_" + s] = pts["elbow_" + s] + d_fore * 0.15 * rng.uniform(0.65, 1.0)
        swing = rng.uniform(-35, 80) if walking else rng.uniform(-10, 40)
        d_thigh = _rot(-up, -np.deg2rad(swing) * sx)
        knee_bend = rng.uniform(0, 110) if walking else rng.uniform(0, 25)
        d_shin = _rot(d_thigh, np.deg2rad(knee_bend) * sx)
        pts["hip_" + s] = hip[s]
        pts["knee_" + s] = hip[s] + d_thigh * 0.24 * rng.uniform(0.6, 1.0)
        pts["ankle_" + s] = pts["knee_" + s] + d_shin * 0.23 * rng.uniform(0.7, 1.0)
    up_h = _rot(up, np.deg2rad(np.clip(rng.normal(0, 12), -35, 35)))
    lat_h = np.array([-up_h[1], up_h[0]])
    radius = 0.068
    head_c = neck + up_h * 0.13
    face = []
    face_hidden = np.zeros(5, dtype=bool)
    for i, (azimuth, v_off) in enumerate(_FACE):
        psi = yaw + np.deg2rad(azimuth)
        face.append(head_c + lat_h * radius * np.sin(psi) + up_h * radius * v_off)
        face_hidden[i] = np.cos(psi) < (0.15 if i < 3 else -0.3)

    # Similarity transform to the image: global rotation (sometimes lying or bending), scale, translation.
    if tilt_deg > 0:
        tilt = rng.uniform(-tilt_deg, tilt_deg)
    else:
        tilt = rng.normal(0, 8) if rng.random() < 0.85 else rng.uniform(-90, 90)
    c, s = np.cos(np.deg2rad(tilt)), np.sin(np.deg2rad(tilt))
    rot = np.array([[c, -s], [s, c]]) * height_px

    def place(p: np.ndarray) -> np.ndarray:
        return rot @ p + pelvis_xy

    # COCO order: 5 face points, then (left, right) shoulders, elbows, wrists, hips, knees, ankles.
    body = [pts[f"{j}_{s}"] for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle") for s in "lr"]
    keypoints = np.stack([place(p) for p in face + body])
    fig = Figure(
        keypoints=keypoints,
        face_hidden=face_hidden,
        far_side_hidden={k: abs(sy) > 0.5 and depth[k] < 0 for k in "lr"},
    )
    _add_parts(
        fig,
        rng,
        height_px,
        depth,
        abs(sy) < 0.35,
        place(neck),
        place(head_c),
        radius * height_px,
        tilt + np.rad2deg(np.arctan2(up_h[0], -up_h[1])),
        view,
        side_shade,
    )
    return fig


def _add_parts(
    fig: Figure,
    rng: np.random.Generator,
    height_px: float,
    depth: dict[str, float],
    frontal: bool,
    neck: np.ndarray,
    head_c: np.ndarray,
    radius: float,
    head_angle: float,
    view: int,
    side_shade: float,
) -> None:
    """Fill fig.parts (name, kind, points, thickness, colour) in back-to-front drawing order."""
    k = fig.keypoints
    skin = _colour(rng, 60, 230)
    shirt, pants, shoes = _colour(rng), _colour(rng), _colour(rng, 0, 120)
    sleeve = shirt if rng.random() < 0.5 else skin
    arm_t = max(2.0, 0.045 * height_px * rng.uniform(0.8, 1.2))
    leg_t = max(2.0, 0.06 * height_px * rng.uniform(0.8, 1.2))
    idx = {"l": (5, 7, 9, 11, 13, 15), "r": (6, 8, 10, 12, 14, 16)}

    def shade(colour: tuple[int, int, int], s: str) -> tuple[int, int, int]:
        return tuple(int(round(c * (1 - side_shade))) for c in colour) if s == "l" else colour

    def arm(s: str) -> list:
        sh, el, wr = (k[i] for i in idx[s][:3])
        return [
            (f"upper_arm_{s}", "line", np.stack([sh, el]), arm_t, shade(shirt, s)),
            (f"forearm_{s}", "line", np.stack([el, wr]), arm_t * 0.9, shade(sleeve, s)),
            (f"hand_{s}", "disc", wr[None], arm_t * 0.7, shade(skin, s)),
        ]

    def leg(s: str) -> list:
        hp, kn, an = (k[i] for i in idx[s][3:])
        return [
            (f"thigh_{s}", "line", np.stack([hp, kn]), leg_t, shade(pants, s)),
            (f"shin_{s}", "line", np.stack([kn, an]), leg_t * 0.85, shade(pants, s)),
            (f"foot_{s}", "disc", an[None], leg_t * 0.6, shade(shoes, s)),
        ]

    torso = [
        ("torso", "poly", k[[5, 6, 12, 11]], max(arm_t, leg_t), shirt),
        ("neck", "line", np.stack([neck, head_c]), arm_t, skin),
    ]
    if frontal:
        order = leg("l") + leg("r") + torso + ["head"] + arm("l") + arm("r")
    else:
        far, near = ("l", "r") if depth["l"] < depth["r"] else ("r", "l")
        order = arm(far) + leg(far) + torso + ["head"] + leg(near) + arm(near)
    fig.parts = [p if p != "head" else ("head", "head", head_c[None], radius, skin) for p in order]
    fig.head = (head_c, radius, radius * 1.15, head_angle)
    fig.colours = {"skin": skin, "hair": _colour(rng, 0, 90), "view": (view, 0, 0)}


def _pts(p: np.ndarray) -> np.ndarray:
    return np.round(p * _ONE).astype(np.int32)


def draw_figure(image: np.ndarray, labels: np.ndarray, fig: Figure, first_id: int) -> list[str]:
    """Draw `fig` into image (H, W, 3) uint8 and labels (H, W) int32 (part ids from first_id); return names."""
    names = []
    for offset, (name, kind, pts, size, colour) in enumerate(fig.parts):
        pid = first_id + offset
        names.append(name)
        for target, value, aa in ((image, colour, cv2.LINE_AA), (labels, pid, cv2.LINE_8)):
            if kind == "line":
                a, b = _pts(pts)
                cv2.line(target, tuple(a), tuple(b), value, max(1, int(round(size))), aa, SHIFT)
            elif kind == "disc":
                cv2.circle(target, tuple(_pts(pts[0])), int(round(size * _ONE)), value, -1, aa, SHIFT)
            elif kind == "poly":
                cv2.fillPoly(target, [_pts(pts)], value, aa, SHIFT)
                cv2.polylines(target, [_pts(pts)], True, value, max(1, int(round(size))), aa, SHIFT)
            else:
                _draw_head(target, fig, value, aa, is_label=target is labels)
    return names


def _draw_head(target: np.ndarray, fig: Figure, value, aa: int, is_label: bool) -> None:
    centre, rx, ry, angle = fig.head
    c = tuple(_pts(centre))
    axes = (int(round(rx * _ONE)), int(round(ry * _ONE)))
    cv2.ellipse(target, c, axes, angle, 0, 360, value, -1, aa, SHIFT)
    ear_r = max(1.0, 0.3 * rx)
    for i in (3, 4):  # ears stick out a little; they belong to the head
        if not fig.face_hidden[i]:
            cv2.circle(
                target,
                tuple(_pts(fig.keypoints[i])),
                int(round(ear_r * _ONE)),
                value if is_label else tuple(int(v * 0.8) for v in fig.colours["skin"]),
                -1,
                aa,
                SHIFT,
            )
    if is_label:
        return
    hair = fig.colours["hair"]
    if fig.colours["view"][0] == 1:  # seen from the back: mostly hair
        cv2.ellipse(target, c, axes, angle, 0, 360, hair, -1, aa, SHIFT)
    else:  # hair cap on the top of the head
        cv2.ellipse(target, c, axes, angle, 180, 360, hair, -1, aa, SHIFT)
        dot = max(1.0, 0.14 * rx)
        for i, col in ((0, tuple(int(v * 0.6) for v in fig.colours["skin"])), (1, (20, 20, 20)), (2, (20, 20, 20))):
            if not fig.face_hidden[i]:
                cv2.circle(target, tuple(_pts(fig.keypoints[i])), int(round(dot * _ONE)), col, -1, aa, SHIFT)


def keypoint_visibility(fig: Figure, labels: np.ndarray, part_names: dict[int, tuple[int, str]], me: int) -> np.ndarray:
    """(17,) COCO flags for figure `me` given the final part-id map and {part id: (figure, part name)}."""
    h, w = labels.shape
    vis = np.zeros(17, dtype=np.int64)
    for j, (x, y) in enumerate(fig.keypoints):
        px, py = int(round(x)), int(round(y))  # pixel centres sit at integer coordinates
        if not (0 <= px < w and 0 <= py < h):
            continue
        side = "l" if j in (5, 11) else "r" if j in (6, 12) else None
        own = set(_OWN_PARTS[j])
        if side is not None and fig.far_side_hidden[side]:
            own.discard("torso")
        if j < 5 and fig.face_hidden[j]:
            vis[j] = 1
            continue
        owner = part_names.get(int(labels[py, px]))
        vis[j] = 2 if owner is not None and owner[0] == me and owner[1] in own else 1
    return vis
