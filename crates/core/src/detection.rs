//! What the model found on an image: regions with a class and a score, in the
//! original image's pixel coordinates (columns x, rows y). The same shape travels
//! in `Finding` events, is stored in `findings.detections` (JSON) and is drawn on
//! overlays.

/// A rectangle in the original image's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundingBox {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
}

/// One detected region. Serialised as `{"class", "score", "box"}`, the layout of
/// `findings.detections`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    #[serde(rename = "class")]
    pub class_name: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bounding_box: BoundingBox,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_keeps_the_stored_json_layout() {
        let detection = Detection {
            class_name: "fracture".into(),
            score: 0.5,
            bounding_box: BoundingBox {
                x_min: 1.0,
                y_min: 2.0,
                x_max: 3.0,
                y_max: 4.0,
            },
        };
        let json = serde_json::to_value(&detection).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"class": "fracture", "score": 0.5,
                "box": {"x_min": 1.0, "y_min": 2.0, "x_max": 3.0, "y_max": 4.0}})
        );
        assert_eq!(
            serde_json::from_value::<Detection>(json).expect("back"),
            detection
        );
    }
}
