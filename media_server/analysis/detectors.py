"""The detectors: OpenCV over small grey pictures (the sampler's), no I/O.

Each takes one picture at a time and says how strongly its condition holds now (a score
in 0..1, or None when it does not); episodes.py turns those into alerts. Thresholds are
for pictures `AnalysisSettings.width` wide (320 by default): coarse enough that sensor
noise averages out, fine enough for a person-sized blob.

- Motion: a running-average background, the absolute difference thresholded by the
  sensitivity, opened to drop specks, limited to the zones minus the masks; the biggest
  blob must cover `min_area` of the frame.
- Person: OpenCV's built-in HOG people detector (no weights to download); a person must be
  about 130 px tall at the analysed width, and count only with its feet in a zone.
- Covered: a flat picture (black, a hand, paper over the lens).
- Defocused: sharpness (variance of the Laplacian) far below the scene's usual, learnt
  slowly while the picture is sound.
- Moved: the coarse picture no longer correlates with a slowly adapting reference.
- Frozen: two pictures in a row identical (a live sensor never repeats its noise); the
  keyframes of a frozen encoder differ a little, which episodes.py bridges.
"""

from __future__ import annotations

import cv2
import numpy as np

from media_server.analysis.settings import AnalysisSettings, Polygon

Scores = dict[str, float]

BACKGROUND_ALPHA = 0.05  # per analysed picture: ~10 s of memory at 2 fps
FLAT_STD = 8.0  # a picture this flat shows nothing (covered, black, one colour)
DARK_MEAN, DARK_STD = 30.0, 14.0  # or this dark and flat (a hand, a dark cloth)
DEFOCUS_RATIO = 0.35  # sharpness below this share of the usual: defocused
SHARPNESS_ALPHA = 0.02  # how fast the usual sharpness follows a sound picture
MIN_SHARPNESS = 30.0  # a scene with less detail than this cannot tell defocus
REFERENCE_SIZE = (64, 48)  # the coarse picture "moved" compares
REFERENCE_ALPHA = 0.01  # ~50 s of memory at 2 fps: a pan stands out, a walk-through fades
MOVED_CORRELATION = 0.5  # below: the camera looks elsewhere
FROZEN_DIFF = 0.35  # mean absolute difference (grey levels) below which two are the same
WARMUP = 4  # pictures each reference needs before it judges


def region_mask(polygons: list[Polygon], shape: tuple[int, int], default: int) -> np.ndarray:
    """A uint8 mask (255 inside) of polygons in 0..1 coordinates, for pictures of shape;
    with no polygons, everything (default 255) or nothing (0)."""
    height, width = shape
    if not polygons:
        return np.full(shape, default, np.uint8)
    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:
        points = np.array(
            [[round(x * (width - 1)), round(y * (height - 1))] for x, y in polygon.points],
            np.int32,
        )
        cv2.fillPoly(mask, [points], 255)
    return mask


class MotionDetector:
    def __init__(self, settings: AnalysisSettings) -> None:
        self.settings = settings
        self._background: np.ndarray | None = None
        self._active: np.ndarray | None = None
        self._kernel = np.ones((3, 3), np.uint8)

    def _active_mask(self, shape: tuple[int, int]) -> np.ndarray:
        if self._active is None or self._active.shape != shape:
            zones = region_mask(self.settings.zones, shape, 255)
            masks = region_mask(self.settings.masks, shape, 0)
            self._active = cv2.bitwise_and(zones, cv2.bitwise_not(masks))
        return self._active

    def moving(self, picture: np.ndarray) -> np.ndarray | None:
        """The moving pixels (255) inside the zones and outside the masks."""
        smooth = cv2.GaussianBlur(picture, (5, 5), 0)
        if self._background is None or self._background.shape != smooth.shape:
            self._background = smooth.astype(np.float32)
            return None
        diff = cv2.absdiff(smooth, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(smooth, self._background, BACKGROUND_ALPHA)
        threshold = 8 + (1 - self.settings.sensitivity) * 40
        _, changed = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, self._kernel)
        return cv2.bitwise_and(changed, self._active_mask(picture.shape[:2]))

    def score(self, picture: np.ndarray) -> float | None:
        """The biggest moving blob's share of the frame, when it reaches min_area."""
        changed = self.moving(picture)
        if changed is None or not changed.any():
            return None
        count, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
        if count < 2:
            return None
        biggest = float(stats[1:, cv2.CC_STAT_AREA].max()) / changed.size
        if biggest < max(self.settings.min_area, 1 / changed.size):
            return None
        return min(1.0, biggest)


class PersonDetector:
    def __init__(self, settings: AnalysisSettings) -> None:
        cv2.setNumThreads(1)  # a worker thread per stream: no pool of OpenCV's own beside it
        self.settings = settings
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector()))
        self._zones: np.ndarray | None = None

    def score(self, picture: np.ndarray) -> float | None:
        """The best detection's confidence, squashed to 0..1, of a person whose feet are
        in a zone."""
        shape = picture.shape[:2]
        if self._zones is None or self._zones.shape != shape:
            self._zones = region_mask(self.settings.zones, shape, 255)
        boxes, weights = self._hog.detectMultiScale(
            picture, winStride=(8, 8), padding=(8, 8), scale=1.05
        )
        best: float | None = None
        for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=False):
            feet = (min(shape[1] - 1, int(x + w // 2)), min(shape[0] - 1, int(y + h - 1)))
            if self._zones[feet[1], feet[0]] and weight > 0.3:
                confidence = float(1 - np.exp(-float(weight)))
                best = confidence if best is None else max(best, confidence)
        return best


class TamperDetector:
    """covered, defocused, moved and frozen, from one picture at a time."""

    def __init__(self) -> None:
        self.sharpness = 0.0  # the scene's usual sharpness
        self._sound = 0  # sound pictures seen (the references' warm-up)
        self._reference: np.ndarray | None = None
        self._previous: np.ndarray | None = None

    def scores(self, picture: np.ndarray) -> Scores:
        out: Scores = {}
        frozen = self._frozen(picture)
        if frozen is not None:
            out["frozen"] = frozen
        mean, std = cv2.meanStdDev(picture)
        mean_v, std_v = float(mean[0][0]), float(std[0][0])
        if std_v < FLAT_STD or (mean_v < DARK_MEAN and std_v < DARK_STD):
            # nothing else can be told of a covered camera (a black one repeats itself),
            # nor learnt from it
            return {"covered": round(1 - min(1.0, std_v / DARK_STD), 3)}
        sharp = float(cv2.Laplacian(picture, cv2.CV_32F).var())
        coarse = cv2.resize(picture, REFERENCE_SIZE, interpolation=cv2.INTER_AREA)
        coarse = coarse.astype(np.float32)
        warm = self._sound >= WARMUP
        if warm and self.sharpness >= MIN_SHARPNESS and sharp < self.sharpness * DEFOCUS_RATIO:
            out["defocused"] = round(1 - sharp / self.sharpness, 3)
        else:
            rate = 1.0 if self._sound == 0 else SHARPNESS_ALPHA if warm else 0.5
            self.sharpness += rate * (sharp - self.sharpness)
        if self._reference is None:
            self._reference = coarse
        else:
            correlation = _correlation(coarse, self._reference)
            if warm and correlation < MOVED_CORRELATION:
                out["moved"] = round(min(1.0, 1 - correlation), 3)
            alpha = REFERENCE_ALPHA if warm else 0.5
            cv2.accumulateWeighted(coarse, self._reference, alpha)
        self._sound += 1
        return out

    def _frozen(self, picture: np.ndarray) -> float | None:
        previous, self._previous = self._previous, picture
        if previous is None or previous.shape != picture.shape:
            return None
        if float(cv2.absdiff(picture, previous).mean()) < FROZEN_DIFF:
            return 1.0
        return None


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of two same-sized pictures (-1..1)."""
    a0, b0 = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a0 * a0).sum() * (b0 * b0).sum()))
    return float((a0 * b0).sum() / norm) if norm > 0 else 1.0


class Detectors:
    """Every detector a stream's settings turn on, over one picture."""

    def __init__(self, settings: AnalysisSettings) -> None:
        self.settings = settings
        on = settings.detectors
        self.motion = MotionDetector(settings) if on.get("motion") else None
        self.person = PersonDetector(settings) if on.get("person") else None
        self.tamper = TamperDetector()

    def scores(self, picture: np.ndarray) -> Scores:
        out = {k: v for k, v in self.tamper.scores(picture).items() if self.settings.detectors[k]}
        if self.motion is not None:
            motion = self.motion.score(picture)
            if motion is not None:
                out["motion"] = round(motion, 4)
        if self.person is not None:
            person = self.person.score(picture)
            if person is not None:
                out["person"] = round(person, 3)
        return out
