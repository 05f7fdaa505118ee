//! Turning a model's raw output into a probability and boxes, per output format.
//! Boxes here are in model-input pixels; the caller maps them back to the
//! original image with the letterbox transform.

/// A detection in model-input pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct InputBox {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    pub class_index: usize,
    pub score: f32,
}

/// What a model said about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutput {
    /// Probability of a fracture anywhere in the image.
    pub probability: f32,
    pub boxes: Vec<InputBox>,
}

/// `values` holds one image's probability (classifier output `[1]` or `[C]`; the
/// first class is the fracture class).
pub fn classifier(values: &[f32]) -> ImageOutput {
    let probability = values.first().copied().unwrap_or(0.0).clamp(0.0, 1.0);
    ImageOutput {
        probability,
        boxes: Vec::new(),
    }
}

/// One image's heatmap (`height` x `width` cells of `stride` input pixels): the
/// image probability is the hottest cell; each 4-connected region of cells at or
/// above `threshold` is one box scored by its hottest cell.
pub fn heatmap(
    values: &[f32],
    height: usize,
    width: usize,
    stride: f32,
    threshold: f32,
) -> ImageOutput {
    let probability = values
        .iter()
        .copied()
        .fold(0.0_f32, f32::max)
        .clamp(0.0, 1.0);
    let mut seen = vec![false; values.len()];
    let mut boxes = Vec::new();
    for start in 0..values.len() {
        if seen[start] || values[start] < threshold {
            continue;
        }
        let (mut min_x, mut min_y, mut max_x, mut max_y, mut score) =
            (usize::MAX, usize::MAX, 0, 0, 0.0_f32);
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(cell) = stack.pop() {
            let (y, x) = (cell / width, cell % width);
            min_x = min_x.min(x);
            min_y = min_y.min(y);
            max_x = max_x.max(x);
            max_y = max_y.max(y);
            score = score.max(values[cell]);
            let neighbours = [
                (y > 0).then(|| cell - width),
                (y + 1 < height).then(|| cell + width),
                (x > 0).then(|| cell - 1),
                (x + 1 < width).then(|| cell + 1),
            ];
            for neighbour in neighbours.into_iter().flatten() {
                if !seen[neighbour] && values[neighbour] >= threshold {
                    seen[neighbour] = true;
                    stack.push(neighbour);
                }
            }
        }
        boxes.push(InputBox {
            x_min: min_x as f32 * stride,
            y_min: min_y as f32 * stride,
            x_max: (max_x + 1) as f32 * stride,
            y_max: (max_y + 1) as f32 * stride,
            class_index: 0,
            score,
        });
    }
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    ImageOutput { probability, boxes }
}

/// One image's YOLO output, laid out `[4 + classes, anchors]` row-major: per
/// anchor (cx, cy, w, h) then class scores. Boxes at or above `threshold` are kept
/// after per-class non-maximum suppression at `iou`; the image probability is the
/// best fracture-class (class 0) score.
pub fn yolo(
    values: &[f32],
    classes: usize,
    anchors: usize,
    threshold: f32,
    iou: f32,
) -> ImageOutput {
    let at = |row: usize, anchor: usize| values[row * anchors + anchor];
    let mut candidates: Vec<InputBox> = Vec::new();
    let mut probability = 0.0_f32;
    for anchor in 0..anchors {
        let (class_index, score) = (0..classes)
            .map(|class| (class, at(4 + class, anchor)))
            .fold((0, f32::MIN), |best, candidate| {
                if candidate.1 > best.1 {
                    candidate
                } else {
                    best
                }
            });
        if class_index == 0 {
            probability = probability.max(score);
        }
        if score < threshold {
            continue;
        }
        let (cx, cy, w, h) = (at(0, anchor), at(1, anchor), at(2, anchor), at(3, anchor));
        candidates.push(InputBox {
            x_min: cx - w / 2.0,
            y_min: cy - h / 2.0,
            x_max: cx + w / 2.0,
            y_max: cy + h / 2.0,
            class_index,
            score,
        });
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<InputBox> = Vec::new();
    for candidate in candidates {
        let suppressed = kept.iter().any(|existing| {
            existing.class_index == candidate.class_index
                && intersection_over_union(existing, &candidate) > iou
        });
        if !suppressed {
            kept.push(candidate);
        }
    }
    ImageOutput {
        probability: probability.clamp(0.0, 1.0),
        boxes: kept,
    }
}

fn intersection_over_union(a: &InputBox, b: &InputBox) -> f32 {
    let width = (a.x_max.min(b.x_max) - a.x_min.max(b.x_min)).max(0.0);
    let height = (a.y_max.min(b.y_max) - a.y_min.max(b.y_min)).max(0.0);
    let intersection = width * height;
    let area = |r: &InputBox| (r.x_max - r.x_min).max(0.0) * (r.y_max - r.y_min).max(0.0);
    let union = area(a) + area(b) - intersection;
    if union <= 0.0 {
        0.0
    } else {
        intersection / union
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_regions_become_boxes_in_input_pixels() {
        // 4x4 cells of 8 px: one 2x1 hot region and one single hot cell.
        #[rustfmt::skip]
        let cells = [
            0.9, 0.8, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.6,
            0.0, 0.0, 0.0, 0.0,
        ];
        let output = heatmap(&cells, 4, 4, 8.0, 0.5);
        assert_eq!(output.probability, 0.9);
        assert_eq!(output.boxes.len(), 2);
        assert_eq!(
            (
                output.boxes[0].x_min,
                output.boxes[0].y_min,
                output.boxes[0].x_max,
                output.boxes[0].y_max
            ),
            (0.0, 0.0, 16.0, 8.0)
        );
        assert_eq!(output.boxes[0].score, 0.9);
        assert_eq!((output.boxes[1].x_min, output.boxes[1].y_min), (24.0, 16.0));
    }

    #[test]
    fn yolo_keeps_the_best_of_overlapping_boxes() {
        // Three anchors, one class: two overlapping boxes and one far away.
        #[rustfmt::skip]
        let values = [
            10.0, 11.0, 50.0,   // cx
            10.0, 10.0, 50.0,   // cy
            10.0, 10.0, 8.0,    // w
            10.0, 10.0, 8.0,    // h
            0.8,  0.9,  0.3,    // fracture score
        ];
        let output = yolo(&values, 1, 3, 0.25, 0.45);
        assert_eq!(output.probability, 0.9);
        assert_eq!(output.boxes.len(), 2, "{:?}", output.boxes);
        assert_eq!(output.boxes[0].score, 0.9);
        assert_eq!(output.boxes[1].score, 0.3);
        assert_eq!((output.boxes[1].x_min, output.boxes[1].x_max), (46.0, 54.0));
    }

    #[test]
    fn classifier_output_is_the_probability() {
        assert_eq!(classifier(&[0.42]).probability, 0.42);
        assert_eq!(classifier(&[1.7]).probability, 1.0, "clamped");
    }
}
