//! BOS data exported with CSM's `export_bos_data.sh` (docs-csm "Exporting and Importing BOS
//! Data"), read as a snapshot of BOS session templates: an admin who exported before an upgrade
//! or a rebuild can have the BOS step restore templates from it.
//!
//! The script has had several versions, and `import_bos_data.sh` takes what any of them made:
//! a `tgz` (`bos-export-<YYYYmmddHHMMSS>-<random>/v2/sessiontemplates.json`, beside `options.json`,
//! `sessions.json`, `components.json`, and sometimes a `v1/` directory), or a JSON file. Read
//! here: the archive's `v2/sessiontemplates.json` (else a `sessiontemplates.json` anywhere in
//! it, else the manual procedure's `templates/<name>.json` files, one template each), or a
//! JSON file that is a list of templates or an object with a `sessiontemplates` list (at its
//! top or under `v2`). BOS options, sessions and components are not templates and are not
//! imported (the BOS step restores templates only).

use std::io::Read;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

/// The largest archive or file accepted, compressed or not (BOS exports are kilobytes).
pub const MAX_EXPORT_BYTES: usize = 16 * 1024 * 1024;
/// The most the archive may unpack to: a guard against a compression bomb.
const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;

/// What an export holds that a snapshot keeps.
#[derive(Debug, PartialEq)]
pub struct BosExport {
    /// The session templates, each with its `name`.
    pub templates: Vec<Value>,
    /// When it was exported, from the archive's directory name; `None` when it does not say.
    pub exported_at: Option<DateTime<Utc>>,
    /// Where in the archive the templates were found (`bos-export-.../v2/sessiontemplates.json`).
    pub found_in: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("the body is empty")]
    Empty,
    #[error("not a gzip-compressed tar archive: {0}")]
    Archive(String),
    #[error("{path} is not JSON: {reason}")]
    Json { path: String, reason: String },
    #[error("the archive unpacks to more than {} MiB", MAX_UNPACKED_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("{0}")]
    NoTemplates(String),
    #[error("{path}: session template {index} has no name")]
    Unnamed { path: String, index: usize },
}

/// Reads an export: a gzip-compressed tar archive (by its magic bytes) or a JSON file.
pub fn read(bytes: &[u8]) -> Result<BosExport, ExportError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ExportError::Empty);
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_archive(bytes)
    } else {
        let json = parse("the JSON file", bytes)?;
        let templates = templates_of(&json).ok_or_else(|| {
            ExportError::NoTemplates(
                "the JSON file is neither a list of session templates nor an object with \
                 \"sessiontemplates\""
                    .to_owned(),
            )
        })?;
        named("the JSON file", templates, None)
    }
}

fn parse(path: &str, bytes: &[u8]) -> Result<Value, ExportError> {
    serde_json::from_slice(bytes).map_err(|e| ExportError::Json {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The templates of an export's JSON: a list, or `sessiontemplates` at the top or under `v2`.
fn templates_of(json: &Value) -> Option<Vec<Value>> {
    match json {
        Value::Array(items) => Some(items.clone()),
        Value::Object(map) => map
            .get("sessiontemplates")
            .or_else(|| map.get("v2").and_then(|v2| v2.get("sessiontemplates")))
            .and_then(Value::as_array)
            .cloned(),
        _ => None,
    }
}

fn read_archive(bytes: &[u8]) -> Result<BosExport, ExportError> {
    let unpacked = flate2::read::GzDecoder::new(bytes).take(MAX_UNPACKED_BYTES + 1);
    let mut archive = tar::Archive::new(unpacked);
    let entries = archive
        .entries()
        .map_err(|e| ExportError::Archive(e.to_string()))?;
    // (path, content) of the JSON files that may hold templates.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExportError::Archive(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| ExportError::Archive(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !path.ends_with(".json") {
            continue;
        }
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .map_err(|e| ExportError::Archive(e.to_string()))?;
        total += content.len() as u64;
        if total > MAX_UNPACKED_BYTES {
            return Err(ExportError::TooLarge);
        }
        files.push((path, content));
    }
    if files.is_empty() {
        return Err(ExportError::NoTemplates(
            "the archive holds no JSON file (an export of export_bos_data.sh holds \
             bos-export-<time>-<id>/v2/sessiontemplates.json)"
                .to_owned(),
        ));
    }
    let exported_at = files.iter().find_map(|(path, _)| export_time(path));
    let file_named = |suffix: &str| files.iter().find(|(path, _)| path.ends_with(suffix));
    if let Some((path, content)) =
        file_named("v2/sessiontemplates.json").or_else(|| file_named("sessiontemplates.json"))
    {
        let json = parse(path, content)?;
        let templates = templates_of(&json).ok_or_else(|| {
            ExportError::NoTemplates(format!("{path} is not a list of session templates"))
        })?;
        return named(path, templates, exported_at);
    }
    // The manual procedure: one template per file under templates/.
    let mut templates = Vec::new();
    let mut found_in = None;
    for (path, content) in files.iter().filter(|(p, _)| p.contains("templates/")) {
        templates.push(parse(path, content)?);
        found_in.get_or_insert_with(|| {
            path.rsplit_once('/')
                .map_or(path.clone(), |p| p.0.to_owned())
        });
    }
    match found_in {
        Some(dir) => named(&dir, templates, exported_at),
        None => Err(ExportError::NoTemplates(format!(
            "the archive has no sessiontemplates.json and no templates/ directory (its JSON \
             files: {})",
            files
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Checks every template has a name (BOS keys them by it).
fn named(
    path: &str,
    templates: Vec<Value>,
    exported_at: Option<DateTime<Utc>>,
) -> Result<BosExport, ExportError> {
    if let Some(index) = templates.iter().position(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    }) {
        return Err(ExportError::Unnamed {
            path: path.to_owned(),
            index,
        });
    }
    Ok(BosExport {
        templates,
        exported_at,
        found_in: path.to_owned(),
    })
}

/// `bos-export-20230417181409-oK4WMw/...`: the export's time (the script's `date
/// +%Y%m%d%H%M%S`, the node's clock, taken as UTC).
fn export_time(path: &str) -> Option<DateTime<Utc>> {
    let at = path.find("bos-export-")? + "bos-export-".len();
    let stamp = path.get(at..at + 14)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tgz as `export_bos_data.sh` makes it: `files` under `bos-export-<time>-<id>/`.
    fn archive(files: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn an_archive_of_the_script_gives_its_v2_templates_and_time() {
        let templates = json!([{"name": "uan", "enable_cfs": true}, {"name": "compute"}]);
        let bytes = archive(&[
            ("bos-export-20230417181409-oK4WMw/v2/options.json", "{}"),
            (
                "bos-export-20230417181409-oK4WMw/v2/sessiontemplates.json",
                &templates.to_string(),
            ),
            ("bos-export-20230417181409-oK4WMw/v2/version.json", "{}"),
        ]);
        let export = read(&bytes).unwrap();
        assert_eq!(export.templates, templates.as_array().unwrap().clone());
        assert_eq!(
            export.exported_at.unwrap().to_rfc3339(),
            "2023-04-17T18:14:09+00:00"
        );
        assert!(export.found_in.ends_with("v2/sessiontemplates.json"));
    }

    #[test]
    fn the_manual_procedures_files_and_json_files_are_read_too() {
        let bytes = archive(&[
            ("export/templates/a.json", r#"{"name": "a"}"#),
            ("export/templates/b.json", r#"{"name": "b"}"#),
            ("export/options.json", "{}"),
        ]);
        assert_eq!(read(&bytes).unwrap().templates.len(), 2);
        let file = json!({"v2": {"sessiontemplates": [{"name": "x"}]}}).to_string();
        assert_eq!(
            read(file.as_bytes()).unwrap().templates,
            vec![json!({"name": "x"})]
        );
        assert_eq!(read(b"[{\"name\": \"y\"}]").unwrap().exported_at, None);
    }

    #[test]
    fn what_is_not_an_export_says_why() {
        assert_eq!(read(b"  \n"), Err(ExportError::Empty));
        assert!(matches!(
            read(b"{\"x\": 1}"),
            Err(ExportError::NoTemplates(_))
        ));
        assert!(matches!(
            read(b"[{\"enable_cfs\": true}]"),
            Err(ExportError::Unnamed { index: 0, .. })
        ));
        assert!(matches!(
            read(&[0x1f, 0x8b, 1, 2, 3]),
            Err(ExportError::Archive(_))
        ));
        let no_json = archive(&[("bos-export-x/readme.txt", "hi")]);
        assert!(matches!(read(&no_json), Err(ExportError::NoTemplates(_))));
        let bad = archive(&[("e/v2/sessiontemplates.json", "[{")]);
        assert!(matches!(read(&bad), Err(ExportError::Json { .. })));
    }
}
