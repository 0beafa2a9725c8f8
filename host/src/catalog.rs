//! Installed skills: the skills an operator offers to agents (as MCP tools),
//! each with the grants it always runs with.
//!
//! The grants come from the operator's configuration file, never from the
//! agent: an MCP client chooses a tool and its input, nothing else.
//!
//! ```toml
//! [skills.hello]
//! path = "skills/hello"            # skill directory (relative to this file)
//!
//! [skills.greeter]
//! path = "oci://127.0.0.1:5000/acme/hello:1"   # as locked by `skillbox pull`
//!
//! [skills.disk-report]
//! path = "/srv/skills/disk-report"
//! policy = "disk-report.policy.toml"   # grants, as for `run --policy`
//! grants = { net = { allow = ["127.0.0.1:9000"] } }   # and/or inline
//! partial = false                  # refuse to offer it if a request is not granted
//! ```
//!
//! Loading opens every skill (its manifest must pin its component's digest),
//! reads its input schema, computes its effective policy and fails on the
//! first problem, so a bad catalog stops the server at start-up rather than
//! at an agent's first call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::policy::{EffectivePolicy, Grants, PolicyReport, ReportStatus};
use crate::skill::SkillSource;
use crate::store::NotifyMode;
use crate::trust::TrustPolicy;

/// One `[skills.NAME]` table of the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstalledSkill {
    /// Skill directory or `skill.toml`, relative to the configuration
    /// file; or an `oci://` reference, standing for the artifact its
    /// repository is locked at (`skillbox pull`).
    pub path: PathBuf,
    /// The tool's description [default: the manifest's].
    #[serde(default)]
    pub description: Option<String>,
    /// A policy file of grants (the `run --policy` shape); relative to the
    /// configuration file.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Inline grants in the same shape, added to the policy file's.
    #[serde(default)]
    pub grants: Grants,
    /// Offer the skill even if some of its requests are not granted (calls
    /// that need them are refused inside the sandbox).
    #[serde(default)]
    pub partial: bool,
    /// Which state changes of its tasks the relay announces.
    #[serde(default)]
    pub notify: Option<NotifyMode>,
    /// The relay sinks its tasks notify, by name.
    #[serde(default)]
    pub notify_to: Vec<String>,
}

/// Largest input schema file read.
const MAX_SCHEMA: u64 = 1 << 20;

/// An installed skill, opened and checked.
pub struct Tool {
    /// Its name, as agents call it.
    pub name: String,
    /// The skill's path.
    pub skill: PathBuf,
    /// What it runs with.
    pub grants: Grants,
    /// The configuration it came from.
    pub config: InstalledSkill,
    /// What it does, then what it is granted.
    pub description: String,
    /// The JSON Schema of its input (an object schema).
    pub input_schema: Map<String, Value>,
    validator: jsonschema::Validator,
}

impl Tool {
    /// Checks `input` against the tool's input schema; the error lists
    /// every mismatch with where it is.
    pub fn check_input(&self, input: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(input)
            .take(10)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The installed skills, by name.
#[derive(Default)]
pub struct Catalog {
    tools: BTreeMap<String, Tool>,
}

impl Catalog {
    /// Opens and checks every skill of `skills`, each admitted by `trust`;
    /// relative paths are taken from `base` (the configuration file's
    /// directory).
    pub fn load(
        skills: &BTreeMap<String, InstalledSkill>,
        base: &Path,
        trust: &TrustPolicy,
    ) -> Result<Catalog, Error> {
        let mut tools = BTreeMap::new();
        for (name, config) in skills {
            let tool = load_tool(name, config, base, trust)
                .map_err(|e| Error::Config(format!("[skills.{name}]: {e}")))?;
            tools.insert(name.clone(), tool);
        }
        Ok(Catalog { tools })
    }

    /// One tool.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// Every tool, by name.
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// Whether no skill is installed.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err("a skill's name: 1 to 64 letters, digits, '-' and '_'".into())
    }
}

impl InstalledSkill {
    /// Its skill's absolute path and what it is granted (the policy file's
    /// grants and the inline ones); relative paths are taken from `base`,
    /// the configuration file's directory.
    pub fn resolve(&self, base: &Path) -> Result<(PathBuf, Grants), String> {
        // Absolute: a task records it, and a worker opens it again later.
        let skill = crate::oci::store::local_path(&self.path)
            .map_err(|e| e.to_string())?
            .map_or_else(|| base.join(&self.path).canonicalize(), Ok)
            .map_err(|e| format!("skill {}: {e}", self.path.display()))?;
        let mut grants = match &self.policy {
            Some(p) => Grants::load(&base.join(p)).map_err(|e| e.to_string())?,
            None => Grants::default(),
        };
        self.grants.validate()?;
        grants.merge(self.grants.clone());
        Ok((skill, grants))
    }
}

fn load_tool(
    name: &str,
    config: &InstalledSkill,
    base: &Path,
    trust: &TrustPolicy,
) -> Result<Tool, String> {
    check_name(name)?;
    let (skill, grants) = config.resolve(base)?;
    let source = SkillSource::open(&skill, false).map_err(|e| e.to_string())?;
    trust.admit(&source).map_err(|e| e.to_string())?;
    let (_, report) = EffectivePolicy::compute(source.manifest.as_ref(), &grants);
    let missing: Vec<String> = report
        .not_granted()
        .map(|i| format!("{} {}", i.capability, i.item))
        .collect();
    if !missing.is_empty() && !config.partial {
        return Err(format!(
            "requests not granted: {} (grant them, or set `partial = true` to offer the skill without them)",
            missing.join(", ")
        ));
    }
    let input_schema = match source
        .manifest
        .as_ref()
        .and_then(|m| m.skill.input_schema.as_ref())
    {
        Some(rel) => {
            let dir = source
                .manifest_path
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            read_schema(&dir.join(rel))?
        }
        None => serde_json::json!({ "type": "object" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let validator = jsonschema::validator_for(&Value::Object(input_schema.clone()))
        .map_err(|e| format!("its input schema is not a valid JSON Schema: {e}"))?;
    let what = config
        .description
        .clone()
        .or_else(|| {
            source
                .manifest
                .as_ref()
                .and_then(|m| m.skill.description.clone())
        })
        .unwrap_or_else(|| format!("The {} skill.", source.name));
    Ok(Tool {
        name: name.to_string(),
        skill,
        grants,
        config: config.clone(),
        description: format!("{what}\n\n{}", sandbox_text(&report)),
        input_schema,
        validator,
    })
}

fn read_schema(path: &Path) -> Result<Map<String, Value>, String> {
    use std::io::Read;
    let shown = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCHEMA + 1).read_to_string(&mut text))
        .map_err(|e| format!("input schema {shown}: {e}"))?;
    if text.len() as u64 > MAX_SCHEMA {
        return Err(format!(
            "input schema {shown}: larger than {MAX_SCHEMA} bytes"
        ));
    }
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| format!("input schema {shown}: {e}"))?;
    match schema {
        Value::Object(o) if o.get("type") == Some(&Value::from("object")) => Ok(o),
        _ => Err(format!(
            "input schema {shown}: must be a JSON Schema object with \"type\": \"object\""
        )),
    }
}

/// What the tool's runs may touch, in words, for the agent (and its user)
/// to read before calling it.
fn sandbox_text(report: &PolicyReport) -> String {
    let mut lines = vec!["Runs in the skillbox sandbox, with only:".to_string()];
    for i in &report.items {
        let line = match &i.status {
            ReportStatus::Granted => format!("- {}: {}", i.capability, i.item),
            ReportStatus::Narrowed { reason } => {
                format!("- {}: {} ({reason})", i.capability, i.item)
            }
            ReportStatus::NotGranted { .. } => {
                format!("- {}: {} — NOT granted, refused", i.capability, i.item)
            }
            ReportStatus::Unrequested => continue,
        };
        lines.push(line);
    }
    if lines.len() == 1 {
        lines.push("- nothing: no files, programs, variables or network".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A skill directory whose manifest pins a stand-in component (only
    /// its header is read here) and requests one variable.
    fn skill(dir: &Path) {
        let bytes = b"\0asm\x0d\x00\x01\x00stand-in";
        std::fs::write(dir.join("s.wasm"), bytes).unwrap();
        std::fs::write(
            dir.join("skill.toml"),
            format!(
                "[skill]\nname = \"s\"\nversion = \"1\"\ndescription = \"From the manifest\"\n\
                 component = \"s.wasm\"\nsha256 = \"{}\"\n[env]\nallow = [\"WANTED\"]\n",
                crate::skill::sha256_hex(bytes)
            ),
        )
        .unwrap();
    }

    fn load(dir: &Path, table: &str) -> Result<Catalog, String> {
        let config: crate::config::HostConfig =
            toml::from_str(&format!("[skills.s]\npath = \"skill\"\n{table}"))
                .map_err(|e| e.to_string())?;
        Catalog::load(&config.skills, dir, &TrustPolicy::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn grants_come_from_the_policy_file_and_the_inline_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("skill")).unwrap();
        skill(&dir.path().join("skill"));

        // Nothing granted: refused, naming the request; `partial` offers it.
        let e = load(dir.path(), "").err().unwrap();
        assert!(
            e.contains("env WANTED") && e.contains("partial = true"),
            "{e}"
        );
        let c = load(dir.path(), "partial = true\n").unwrap();
        let t = c.get("s").unwrap();
        assert!(
            t.description.contains("WANTED — NOT granted"),
            "{}",
            t.description
        );

        // From a policy file (relative to the configuration's directory).
        std::fs::write(dir.path().join("p.toml"), "[env]\nallow = [\"WANTED\"]\n").unwrap();
        let c = load(dir.path(), "policy = \"p.toml\"\n").unwrap();
        let t = c.get("s").unwrap();
        assert_eq!(t.grants.env.allow, ["WANTED"]);
        assert!(
            t.description.starts_with("From the manifest"),
            "{}",
            t.description
        );
        assert!(t.description.contains("- env: WANTED"), "{}", t.description);
        assert!(t.skill.is_absolute());

        // Inline, with a description of the operator's.
        let c = load(
            dir.path(),
            "description = \"Ours\"\ngrants = { env = { allow = [\"WANTED\"] } }\n",
        )
        .unwrap();
        assert!(c.get("s").unwrap().description.starts_with("Ours\n"));

        // A missing policy file or skill is an error, not an empty grant.
        let e = load(dir.path(), "policy = \"missing.toml\"\n")
            .err()
            .unwrap();
        assert!(e.contains("missing.toml"), "{e}");
        let config: crate::config::HostConfig =
            toml::from_str("[skills.s]\npath = \"elsewhere\"\n").unwrap();
        let e = Catalog::load(&config.skills, dir.path(), &TrustPolicy::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("[skills.s]") && e.contains("elsewhere"), "{e}");
    }

    #[test]
    fn an_input_schema_must_be_an_object_schema() {
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("skill");
        std::fs::create_dir(&sdir).unwrap();
        skill(&sdir);
        let manifest = std::fs::read_to_string(sdir.join("skill.toml")).unwrap();
        std::fs::write(
            sdir.join("skill.toml"),
            manifest.replace("component =", "input-schema = \"in.json\"\ncomponent ="),
        )
        .unwrap();
        let table = "partial = true\n";
        std::fs::write(sdir.join("in.json"), r#"{"type": "array"}"#).unwrap();
        let e = load(dir.path(), table).err().unwrap();
        assert!(e.contains("\"type\": \"object\""), "{e}");
        std::fs::write(
            sdir.join("in.json"),
            r#"{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}"#,
        )
        .unwrap();
        let c = load(dir.path(), table).unwrap();
        let t = c.get("s").unwrap();
        assert!(t.check_input(&serde_json::json!({"n": 1})).is_ok());
        let e = t.check_input(&serde_json::json!({"n": "x"})).unwrap_err();
        assert!(e.contains("/n"), "{e}");
        assert!(t.check_input(&serde_json::json!({})).is_err());
    }
}
