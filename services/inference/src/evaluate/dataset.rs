//! A labelled dataset on disk, in one of two layouts (docs/evaluation.md):
//!
//! - **table**: `labels.csv` at the top, one row per image: `file` (path under
//!   the dataset) and `fracture` (yes/no, true/false, 1/0), optionally `study`
//!   (images of one study share it; the study is positive when any image is),
//!   `body_part`, `view`, `sex` and `age` (years). MURA's study-level labels
//!   fit this layout: each image carries its study's label.
//! - **yolo**: `images/` and `labels/`, as FracAtlas and GRAZPEDWRI-DX ship
//!   them: for each image `images/X.png` a label file `labels/X.txt` (the same
//!   path, or a unique file of that stem anywhere under `labels/`), one box per
//!   line: `class cx cy w h`, normalised to 0..1. An image is positive when it
//!   has a box of a fracture class: the classes named in `classes.txt` (one
//!   name per line) whose name contains "fracture", or those given on the
//!   command line, else class 0. An empty label file is a negative image. An
//!   optional `metadata.csv` (`file` relative to `images/`, and any of
//!   `study`, `body_part`, `view`, `sex`, `age`) adds subgroups.
//!
//! Images are DICOM Part 10 files, PNG or JPEG. For a DICOM file, the body
//! part, view, sex and age the labels leave empty are read from its header.
//! Every file that cannot be used is kept with its reason: a missing or empty
//! label, a label file that does not match its image, a label file without an
//! image, a file that is not an image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The path under the dataset, as reported.
    pub file: String,
    pub path: PathBuf,
    /// The study it belongs to (the file itself when the labels say nothing).
    pub study: String,
    pub fracture: bool,
    /// Ground-truth boxes of a fracture class, normalised (x_min, y_min,
    /// x_max, y_max in 0..1); empty in the table layout.
    pub boxes: Vec<[f32; 4]>,
    pub attributes: Attributes,
}

/// What a subgroup is made of; empty when unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    pub body_part: String,
    pub view: String,
    pub sex: String,
    /// Years.
    pub age: Option<f64>,
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    pub file: String,
    /// One of: no-label, label-mismatch, label-without-image, unreadable, and
    /// the analysis failure kinds (decode-failed, unsupported-image, ...).
    pub reason: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Table,
    Yolo,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub layout: Layout,
    pub cases: Vec<Case>,
    pub excluded: Vec<Excluded>,
    /// The YOLO classes counted as fractures, and where that came from.
    pub fracture_classes: Option<(Vec<u32>, String)>,
}

/// How to read a dataset.
#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    /// YOLO classes that are fractures (indices or names of `classes.txt`).
    pub fracture_classes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "{0}: neither labels.csv nor images/ with labels/ (the two layouts of docs/evaluation.md)"
    )]
    UnknownLayout(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads the dataset at `root`: its layout, its cases and the files left out.
pub fn load(root: &Path, options: &DatasetOptions) -> Result<Dataset, DatasetError> {
    if root.join("labels.csv").is_file() {
        load_table(root)
    } else if root.join("images").is_dir() && root.join("labels").is_dir() {
        load_yolo(root, options)
    } else {
        Err(DatasetError::UnknownLayout(root.to_owned()))
    }
}

/// A yes/no label; `None` when empty or not understood.
fn parse_label(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "y" | "positive" | "fracture" => Some(true),
        "0" | "no" | "false" | "n" | "negative" | "normal" => Some(false),
        _ => None,
    }
}

/// Rows of a CSV file with a header, as column name to value.
fn read_csv(path: &Path) -> Result<Vec<HashMap<String, String>>, DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .map_err(|error| invalid(path, error.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|error| invalid(path, error.to_string()))?
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|error| invalid(path, error.to_string()))?;
        rows.push(
            headers
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_owned))
                .collect(),
        );
    }
    Ok(rows)
}

fn attributes_of(row: &HashMap<String, String>) -> Attributes {
    let get = |name: &str| row.get(name).cloned().unwrap_or_default();
    Attributes {
        body_part: get("body_part").to_uppercase(),
        view: get("view").to_uppercase(),
        sex: get("sex").to_uppercase(),
        age: row.get("age").and_then(|age| age.trim().parse().ok()),
    }
}

fn load_table(root: &Path) -> Result<Dataset, DatasetError> {
    let labels = root.join("labels.csv");
    let rows = read_csv(&labels)?;
    let Some(first) = rows.first() else {
        return Err(invalid(&labels, "no rows"));
    };
    for column in ["file", "fracture"] {
        if !first.contains_key(column) {
            return Err(invalid(&labels, format!("no `{column}` column")));
        }
    }
    let mut cases = Vec::new();
    let mut excluded = Vec::new();
    for row in &rows {
        let file = row["file"].clone();
        let path = root.join(&file);
        let Some(fracture) = parse_label(&row["fracture"]) else {
            excluded.push(Excluded {
                file,
                reason: "no-label".into(),
                detail: format!("the fracture label is {:?}, not yes or no", row["fracture"]),
            });
            continue;
        };
        if !path.is_file() {
            excluded.push(Excluded {
                file,
                reason: "label-without-image".into(),
                detail: "labels.csv names a file that does not exist".into(),
            });
            continue;
        }
        let study = row
            .get("study")
            .filter(|study| !study.is_empty())
            .cloned()
            .unwrap_or_else(|| file.clone());
        cases.push(Case {
            file,
            path,
            study,
            fracture,
            boxes: Vec::new(),
            attributes: attributes_of(row),
        });
    }
    // Images in the dataset that labels.csv does not name: reported, so that a
    // forgotten row is seen.
    let named: std::collections::HashSet<PathBuf> =
        rows.iter().map(|row| root.join(&row["file"])).collect();
    for path in image_files(root) {
        if !named.contains(&path) {
            excluded.push(Excluded {
                file: relative(root, &path),
                reason: "no-label".into(),
                detail: "an image that labels.csv does not name".into(),
            });
        }
    }
    Ok(Dataset {
        root: root.to_owned(),
        layout: Layout::Table,
        cases,
        excluded,
        fracture_classes: None,
    })
}

/// Files that look like images by their extension, sorted.
fn image_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .filter(|path| {
            path.extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| {
                    matches!(
                        extension.to_ascii_lowercase().as_str(),
                        "dcm" | "dicom" | "png" | "jpg" | "jpeg"
                    )
                })
        })
        .collect();
    files.sort();
    files
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The fracture classes: those given (indices, or names in `classes.txt`),
/// else the names in `classes.txt` containing "fracture", else class 0.
fn fracture_classes(root: &Path, given: &[String]) -> Result<(Vec<u32>, String), DatasetError> {
    let names_path = root.join("classes.txt");
    let names: Vec<String> = std::fs::read_to_string(&names_path)
        .map(|text| {
            text.lines()
                .map(|line| line.trim().to_owned())
                .filter(|line| !line.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !given.is_empty() {
        let mut classes = Vec::new();
        for class in given {
            let index = match class.parse::<u32>() {
                Ok(index) => index,
                Err(_) => names
                    .iter()
                    .position(|name| name.eq_ignore_ascii_case(class))
                    .ok_or_else(|| invalid(&names_path, format!("no class named {class:?}")))?
                    as u32,
            };
            classes.push(index);
        }
        return Ok((classes, "given on the command line".into()));
    }
    let named: Vec<u32> = names
        .iter()
        .enumerate()
        .filter(|(_, name)| name.to_ascii_lowercase().contains("fracture"))
        .map(|(index, _)| index as u32)
        .collect();
    if named.is_empty() {
        Ok((
            vec![0],
            "class 0 (no classes.txt naming a fracture class)".into(),
        ))
    } else {
        Ok((
            named,
            "the classes of classes.txt whose name contains \"fracture\"".into(),
        ))
    }
}

/// The boxes of a YOLO label file of the fracture classes, or why the file
/// does not match its image.
fn parse_yolo(text: &str, classes: &[u32]) -> Result<Vec<[f32; 4]>, String> {
    // Boxes may reach the border by rounding; not further.
    const SLACK: f32 = 0.01;
    let mut boxes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "line {}: {} fields, not `class cx cy w h`",
                number + 1,
                fields.len()
            ));
        }
        let class: u32 = fields[0]
            .parse()
            .map_err(|_| format!("line {}: class {:?} is not a number", number + 1, fields[0]))?;
        let mut values = [0.0_f32; 4];
        for (value, field) in values.iter_mut().zip(&fields[1..]) {
            *value = field
                .parse()
                .map_err(|_| format!("line {}: {field:?} is not a number", number + 1))?;
        }
        let [cx, cy, w, h] = values;
        let corners = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
        if !(w > 0.0 && h > 0.0)
            || corners
                .iter()
                .any(|&v| !v.is_finite() || !(-SLACK..=1.0 + SLACK).contains(&v))
        {
            return Err(format!(
                "line {}: the box ({cx} {cy} {w} {h}) lies outside its image",
                number + 1
            ));
        }
        if classes.contains(&class) {
            boxes.push(corners.map(|v| v.clamp(0.0, 1.0)));
        }
    }
    Ok(boxes)
}

fn load_yolo(root: &Path, options: &DatasetOptions) -> Result<Dataset, DatasetError> {
    let images_root = root.join("images");
    let labels_root = root.join("labels");
    let classes = fracture_classes(root, &options.fracture_classes)?;
    let metadata: HashMap<String, HashMap<String, String>> = if root.join("metadata.csv").is_file()
    {
        read_csv(&root.join("metadata.csv"))?
            .into_iter()
            .filter_map(|row| Some((row.get("file")?.clone(), row)))
            .collect()
    } else {
        HashMap::new()
    };
    // Label files by relative path without extension, and by stem.
    let mut labels_by_path: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut labels_by_stem: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for entry in walkdir::WalkDir::new(&labels_root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
    {
        let path = entry.into_path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let key = path
            .strip_prefix(&labels_root)
            .unwrap_or(&path)
            .with_extension("");
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            labels_by_stem
                .entry(stem.to_owned())
                .or_default()
                .push(path.clone());
        }
        labels_by_path.insert(key, path);
    }
    let images = image_files(&images_root);
    let key_of = |path: &Path| PathBuf::from(relative(&images_root, path)).with_extension("");
    let stem_of = |path: &Path| {
        path.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned()
    };
    // A label at an image's own path is that image's. A label found by its
    // name alone is taken only when it is the one of that name, no image has
    // it at its own path, and one image only has that name (X.png and X.jpg
    // would share it).
    let matched_by_path: std::collections::HashSet<PathBuf> = images
        .iter()
        .filter_map(|path| labels_by_path.get(&key_of(path)).cloned())
        .collect();
    let mut image_stems: HashMap<String, usize> = HashMap::new();
    for path in &images {
        *image_stems.entry(stem_of(path)).or_default() += 1;
    }
    let mut used = std::collections::HashSet::new();
    let mut cases = Vec::new();
    let mut excluded = Vec::new();
    for path in images.iter().cloned() {
        let file = relative(&images_root, &path);
        let key = key_of(&path);
        let stem = stem_of(&path);
        let label = labels_by_path.get(&key).cloned().or_else(|| {
            match labels_by_stem.get(&stem).map(Vec::as_slice) {
                Some([only])
                    if !matched_by_path.contains(only) && image_stems.get(&stem) == Some(&1) =>
                {
                    Some(only.clone())
                }
                _ => None,
            }
        });
        let Some(label) = label else {
            excluded.push(Excluded {
                file: format!("images/{file}"),
                reason: "no-label".into(),
                detail: "no label file of its own under labels/ (the same path, or the only one of its name)".into(),
            });
            continue;
        };
        used.insert(label.clone());
        let text = match std::fs::read_to_string(&label) {
            Ok(text) => text,
            Err(error) => {
                excluded.push(Excluded {
                    file: format!("images/{file}"),
                    reason: "no-label".into(),
                    detail: format!("cannot read {}: {error}", relative(root, &label)),
                });
                continue;
            }
        };
        let boxes = match parse_yolo(&text, &classes.0) {
            Ok(boxes) => boxes,
            Err(why) => {
                excluded.push(Excluded {
                    file: format!("images/{file}"),
                    reason: "label-mismatch".into(),
                    detail: format!("{}: {why}", relative(root, &label)),
                });
                continue;
            }
        };
        let row = metadata.get(&file);
        let study = row
            .and_then(|row| row.get("study"))
            .filter(|study| !study.is_empty())
            .cloned()
            .unwrap_or_else(|| file.clone());
        cases.push(Case {
            file: format!("images/{file}"),
            path,
            study,
            fracture: !boxes.is_empty(),
            boxes,
            attributes: row.map(attributes_of).unwrap_or_default(),
        });
    }
    for label in labels_by_path.values() {
        if !used.contains(label) {
            excluded.push(Excluded {
                file: relative(root, label),
                reason: "label-without-image".into(),
                detail: "no image of the same name under images/".into(),
            });
        }
    }
    Ok(Dataset {
        root: root.to_owned(),
        layout: Layout::Yolo,
        cases,
        excluded,
        fracture_classes: Some(classes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolo_lines_of_fracture_classes_become_boxes() {
        let boxes = parse_yolo("0 0.5 0.5 0.2 0.4\n3 0.1 0.1 0.1 0.1\n\n", &[0]).unwrap();
        assert_eq!(boxes.len(), 1);
        let [x0, y0, x1, y1] = boxes[0];
        assert!((x0 - 0.4).abs() < 1e-6 && (x1 - 0.6).abs() < 1e-6);
        assert!((y0 - 0.3).abs() < 1e-6 && (y1 - 0.7).abs() < 1e-6);
        assert!(parse_yolo("", &[0]).unwrap().is_empty(), "a negative image");
    }

    #[test]
    fn yolo_lines_that_do_not_fit_are_refused_with_the_line() {
        let why = parse_yolo("0 0.5 0.5 0.2\n", &[0]).unwrap_err();
        assert!(why.contains("line 1: 4 fields"), "{why}");
        let why = parse_yolo("0 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n", &[0]).unwrap_err();
        assert!(why.contains("line 2") && why.contains("outside"), "{why}");
        let why = parse_yolo("x 0.5 0.5 0.2 0.2\n", &[0]).unwrap_err();
        assert!(why.contains("class \"x\""), "{why}");
        let why = parse_yolo("0 0.5 0.5 0 0.2\n", &[0]).unwrap_err();
        assert!(why.contains("outside"), "an empty box: {why}");
    }

    #[test]
    fn a_label_found_by_name_is_taken_only_when_it_is_nobody_elses() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // X: the train image has its label at its own path; the val image of
        // the same name must not take it. Y: its only label lives elsewhere.
        // Z: two pictures of one name cannot share one label.
        write("images/train/X.png", "");
        write("labels/train/X.txt", "0 0.5 0.5 0.2 0.2\n");
        write("images/val/X.png", "");
        write("images/a/Y.png", "");
        write("labels/other/Y.txt", "");
        write("images/b/Z.png", "");
        write("images/b/Z.jpg", "");
        write("labels/c/Z.txt", "");
        let dataset = load(root.path(), &DatasetOptions::default()).unwrap();
        let cases: Vec<&str> = dataset.cases.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(
            cases,
            ["images/a/Y.png", "images/train/X.png"],
            "{:?}",
            dataset.excluded
        );
        let left_out: Vec<(&str, &str)> = dataset
            .excluded
            .iter()
            .map(|e| (e.file.as_str(), e.reason.as_str()))
            .collect();
        assert!(
            left_out.contains(&("images/val/X.png", "no-label")),
            "{left_out:?}"
        );
        assert!(
            left_out.contains(&("images/b/Z.png", "no-label")),
            "{left_out:?}"
        );
        assert!(
            left_out.contains(&("images/b/Z.jpg", "no-label")),
            "{left_out:?}"
        );
        assert!(
            left_out.contains(&("labels/c/Z.txt", "label-without-image")),
            "{left_out:?}"
        );
    }

    #[test]
    fn labels_and_ages_are_read_as_written() {
        assert_eq!(parse_label(" Yes "), Some(true));
        assert_eq!(parse_label("0"), Some(false));
        assert_eq!(parse_label(""), None);
        assert_eq!(parse_label("maybe"), None);
        assert_eq!(fxtriage_dicom::age_in_years("045Y"), Some(45.0));
        assert_eq!(fxtriage_dicom::age_in_years("006M"), Some(0.5));
        assert_eq!(fxtriage_dicom::age_in_years(""), None);
        assert_eq!(fxtriage_dicom::age_in_years("45"), None);
    }
}
