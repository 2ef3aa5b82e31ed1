//! The workflow catalogue: the workflows this engine knows by id — the templates shipped
//! inside the binary (`templates/*.yaml`, embedded with `include_str!`, so an installed binary
//! has them) and the spec files named under `[catalogue]` in the config.
//!
//! `tollgate run NAME`, `tollgate templates list|show`, `GET /api/templates`,
//! `POST /api/templates/{name}/runs` and the `platform` step's `workflow.run` resolve ids here.
//! A configured workflow with the id of a shipped template replaces it (a firm's own version
//! of the SOP); two configured files declaring one id are an error naming both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_engine::spec::{ParameterType, ValidatedSpec, parse_yaml};

/// The templates shipped with Tollgate: file name and text.
pub const SHIPPED: &[(&str, &str)] = &[
    ("client-intake.yaml", include_str!("../../templates/client-intake.yaml")),
    ("compliance-check.yaml", include_str!("../../templates/compliance-check.yaml")),
    ("ingest-batch-docs.yaml", include_str!("../../templates/ingest-batch-docs.yaml")),
    ("process-webhook-data.yaml", include_str!("../../templates/process-webhook-data.yaml")),
    ("refresh-stale-reports.yaml", include_str!("../../templates/refresh-stale-reports.yaml")),
    ("weekly-memory-summary.yaml", include_str!("../../templates/weekly-memory-summary.yaml")),
];

/// `[catalogue]`: which workflows besides the shipped templates the engine knows by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogueConfig {
    /// Include the templates shipped in the binary.
    pub shipped: bool,
    /// Directories whose `*.yaml` / `*.yml` files are workflow specs (not recursive).
    pub dirs: Vec<PathBuf>,
    /// Single workflow spec files.
    pub files: Vec<PathBuf>,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        Self { shipped: true, dirs: Vec::new(), files: Vec::new() }
    }
}

/// Where a catalogue entry came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Shipped in the binary (`templates/NAME`).
    Shipped(&'static str),
    /// A configured spec file.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Shipped(name) => write!(f, "shipped templates/{name}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One workflow of the catalogue.
#[derive(Clone, Debug)]
pub struct Entry {
    pub spec: Arc<ValidatedSpec>,
    pub source: Source,
}

impl Entry {
    pub fn id(&self) -> &str {
        self.spec.spec().id.as_str()
    }

    pub fn description(&self) -> &str {
        self.spec.spec().description.as_deref().unwrap_or("")
    }

    /// The workflow's parameters, in declaration order of their names (sorted), as shown by
    /// `templates show` and `GET /api/templates`: name, type, required, default, description.
    pub fn parameters(&self) -> Vec<Value> {
        self.spec
            .spec()
            .parameters
            .iter()
            .map(|(name, p)| {
                json!({
                    "name": name,
                    "type": type_word(p.ty),
                    "required": p.required,
                    "default": p.default,
                    "description": p.description,
                })
            })
            .collect()
    }

    /// The entry as JSON: id, version, owner, description, source, parameters, step count and
    /// trigger types.
    pub fn to_json(&self) -> Value {
        let s = self.spec.spec();
        json!({
            "id": self.id(),
            "version": s.version,
            "owner": s.owner.as_str(),
            "description": self.description(),
            "source": self.source.to_string(),
            "shipped": matches!(self.source, Source::Shipped(_)),
            "steps": s.steps.len(),
            "triggers": s.triggers.iter().map(|t| t.kind().name()).collect::<Vec<_>>(),
            "parameters": self.parameters(),
        })
    }
}

pub fn type_word(t: ParameterType) -> &'static str {
    match t {
        ParameterType::String => "string",
        ParameterType::Number => "number",
        ParameterType::Integer => "integer",
        ParameterType::Boolean => "boolean",
        ParameterType::Object => "object",
        ParameterType::Array => "array",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no workflow `{id}` in the catalogue (known: {known})")]
    Unknown { id: String, known: String },
    #[error("{source_name}: {message}")]
    Invalid { source_name: String, message: String },
    #[error("catalogue: cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("catalogue: workflow id `{id}` is declared by both {first} and {second}")]
    Duplicate { id: String, first: String, second: String },
}

/// The workflows this engine knows by id.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    entries: BTreeMap<String, Entry>,
}

impl Catalogue {
    /// The shipped templates alone.
    pub fn shipped() -> Result<Self, CatalogueError> {
        Self::load(&CatalogueConfig::default())
    }

    /// The shipped templates (unless turned off), then every configured directory and file.
    pub fn load(config: &CatalogueConfig) -> Result<Self, CatalogueError> {
        let mut c = Catalogue::default();
        if config.shipped {
            for (name, text) in SHIPPED {
                let spec = parse_yaml(text).map_err(|e| CatalogueError::Invalid {
                    source_name: format!("templates/{name}"),
                    message: e.to_string(),
                })?;
                c.entries
                    .insert(spec.spec().id.to_string(), Entry { spec: Arc::new(spec), source: Source::Shipped(name) });
            }
        }
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in &config.dirs {
            let read = std::fs::read_dir(dir).map_err(|error| CatalogueError::Read { path: dir.clone(), error })?;
            let mut found: Vec<PathBuf> = read
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        }
        files.extend(config.files.iter().cloned());
        for path in files {
            c.add_file(&path)?;
        }
        Ok(c)
    }

    /// Add one configured spec file (replacing a shipped template of its id).
    fn add_file(&mut self, path: &Path) -> Result<(), CatalogueError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| CatalogueError::Read { path: path.to_path_buf(), error })?;
        let spec = parse_yaml(&text)
            .map_err(|e| CatalogueError::Invalid { source_name: path.display().to_string(), message: e.to_string() })?;
        let id = spec.spec().id.to_string();
        if let Some(Entry { source: first @ Source::File(_), .. }) = self.entries.get(&id) {
            return Err(CatalogueError::Duplicate { id, first: first.to_string(), second: path.display().to_string() });
        }
        self.entries.insert(id, Entry { spec: Arc::new(spec), source: Source::File(path.to_path_buf()) });
        Ok(())
    }

    /// The workflow with this id.
    pub fn get(&self, id: &str) -> Result<&Entry, CatalogueError> {
        self.entries.get(id).ok_or_else(|| CatalogueError::Unknown { id: id.to_string(), known: self.known() })
    }

    /// Every workflow, by id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn known(&self) -> String {
        if self.entries.is_empty() {
            "none".into()
        } else {
            self.entries.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_validates_and_is_listed_once() {
        let c = Catalogue::shipped().expect("shipped templates validate");
        assert_eq!(c.len(), SHIPPED.len(), "two shipped templates share an id");
        // Each shipped file is in templates/ under its id.
        for e in c.entries() {
            let Source::Shipped(name) = e.source else { panic!("only shipped entries") };
            assert_eq!(name, format!("{}.yaml", e.id()));
            assert!(!e.description().is_empty(), "{}: a template says what it does", e.id());
        }
    }

    #[test]
    fn every_template_in_the_directory_is_shipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let mut shipped: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        shipped.sort();
        assert_eq!(on_disk, shipped, "templates/*.yaml and catalogue::SHIPPED must list the same files");
    }

    #[test]
    fn template_parameters_are_typed_and_described() {
        for e in Catalogue::shipped().unwrap().entries() {
            for p in e.parameters() {
                assert!(
                    p["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{}: parameter {} has no description",
                    e.id(),
                    p["name"]
                );
                assert!(
                    p["required"] == true || !p["default"].is_null(),
                    "{}: optional parameter {} has no default",
                    e.id(),
                    p["name"]
                );
            }
        }
    }

    fn write(dir: &Path, name: &str, id: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("id: {id}\nowner: ops\ndescription: d\nsteps:\n  - id: a\n    type: code\n    script: return 1;\n"),
        )
        .unwrap();
        p
    }

    #[test]
    fn configured_files_and_directories_add_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wf");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "a.yaml", "alpha");
        write(&dir, "b.yml", "client-intake");
        std::fs::write(dir.join("notes.txt"), "not a spec").unwrap();
        let single = write(tmp.path(), "single.yaml", "single");
        let c =
            Catalogue::load(&CatalogueConfig { shipped: true, dirs: vec![dir.clone()], files: vec![single.clone()] })
                .unwrap();
        assert_eq!(c.get("alpha").unwrap().source, Source::File(dir.join("a.yaml")));
        assert_eq!(c.get("single").unwrap().source, Source::File(single));
        // The configured file replaced the shipped template of the same id.
        assert_eq!(c.get("client-intake").unwrap().source, Source::File(dir.join("b.yml")));

        let err = c.get("nope").unwrap_err().to_string();
        assert!(err.contains("no workflow `nope`") && err.contains("alpha") && err.contains("client-intake"), "{err}");
    }

    #[test]
    fn two_files_with_one_id_or_a_bad_file_are_errors_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a.yaml", "same");
        let b = write(tmp.path(), "b.yaml", "same");
        let err = Catalogue::load(&CatalogueConfig { shipped: false, dirs: vec![], files: vec![a.clone(), b.clone()] })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`same`") && err.contains(&a.display().to_string()) && err.contains(&b.display().to_string()),
            "{err}"
        );

        let bad = tmp.path().join("bad.yaml");
        std::fs::write(&bad, "id: bad\nowner: ops\nsteps: []\nsurprise: 1\n").unwrap();
        let err = Catalogue::load(&CatalogueConfig { shipped: false, dirs: vec![], files: vec![bad.clone()] })
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.yaml") && err.contains("surprise"), "{err}");

        let err =
            Catalogue::load(&CatalogueConfig { shipped: false, dirs: vec![tmp.path().join("missing")], files: vec![] })
                .unwrap_err()
                .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
