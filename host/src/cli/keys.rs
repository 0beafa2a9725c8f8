//! `skillbox keys` and `skillbox sign`: signing keys, the publishers'
//! keys the operator trusts, and signatures over skills.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use skillbox::prelude::*;
use skillbox::trust::{self, KeyError, KeyStore, PublicKey};

use super::exit;
use super::output::print_error;

/// Signing keys (ECDSA P-256, cosign's kind) and the publishers' keys
/// this machine trusts.
///
/// Keys live in $SKILLBOX_KEYS, by default ~/.config/skillbox: your key
/// pairs under keys/ (private keys mode 0600), the trusted publishers'
/// public keys under trusted/.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    /// The key store's directory.
    #[arg(long, global = true, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new key pair NAME; prints its public key (hand that to the
    /// operators who should trust your skills).
    Generate {
        /// The key's name in the store.
        name: String,
    },
    /// The keys of the store: yours and the trusted ones.
    List,
    /// Print the public key NAME (yours or a trusted one) as PEM.
    Show {
        /// The key's name.
        name: String,
    },
    /// Trust a publisher's public key (a PEM `PUBLIC KEY` file, such as
    /// cosign.pub): skills it signed pass `require-signature`.
    Trust {
        /// The public key file.
        file: PathBuf,
        /// The publisher's name, as messages will say it.
        #[arg(long)]
        name: String,
        /// Trust the key only for these skills (a name or a `*`/`?`
        /// pattern; repeatable) [default: any skill]. Kept in trust.toml as
        /// [publishers.NAME].
        #[arg(long = "skill", value_name = "PATTERN")]
        skills: Vec<String>,
    },
    /// Stop trusting the publisher's key NAME.
    Untrust {
        /// The trusted key's name.
        name: String,
    },
    /// Show the trust policy (trust.toml), or change whether skills must
    /// be signed by a trusted key to run.
    ///
    /// With require-signature on, `run`, `spawn`, the API, MCP tools and
    /// the installed skills refuse a skill that is unsigned, signed by a
    /// key not trusted here, or signed by a publisher outside its
    /// --skill scope. A signature that does not hold (the skill changed
    /// since it was signed) is refused either way.
    Policy {
        /// Turn require-signature on or off.
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        require_signature: Option<bool>,
    },
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err("on or off".into()),
    }
}

fn store(dir: Option<PathBuf>) -> KeyStore {
    dir.map(KeyStore::at)
        .unwrap_or_else(KeyStore::default_location)
}

/// The trust policy of the key store at `dir` (by default
/// `$SKILLBOX_KEYS`, else the user's config dir).
pub fn trust_policy(dir: Option<PathBuf>) -> Result<trust::TrustPolicy, skillbox::Error> {
    trust::TrustPolicy::load(store(dir)).map_err(|e| skillbox::Error::Config(e.to_string()))
}

fn key_error(e: &KeyError, json: bool) -> u8 {
    let code = match e {
        KeyError::Io { .. } => exit::FAILED,
        KeyError::Name(_) | KeyError::Malformed(_) | KeyError::BadSignature(_) => exit::INVALID,
    };
    print_error(&e.to_string(), code, json)
}

/// `skillbox keys`.
pub fn keys(args: KeysArgs) -> u8 {
    let store = store(args.keys_dir);
    let json = args.json;
    let result: Result<(), KeyError> = (|| {
        match args.command {
            KeysCommand::Generate { name } => {
                let public = store.generate(&name)?;
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({
                            "name": name,
                            "fingerprint": public.fingerprint(),
                            "public_key": public.to_pem(),
                            "store": store.dir(),
                        })
                    );
                } else {
                    errln!(
                        "made the key pair {name:?} ({}) in {}; its public key:",
                        public.fingerprint(),
                        store.dir().display()
                    );
                    out!("{}", public.to_pem());
                }
            }
            KeysCommand::List => {
                let keys = store.list()?;
                if json {
                    outln!("{}", serde_json::to_string(&keys).unwrap_or_default());
                } else if keys.is_empty() {
                    errln!(
                        "no keys in {} (make one with `skillbox keys generate NAME`)",
                        store.dir().display()
                    );
                } else {
                    for k in keys {
                        let what = match (k.private, k.trusted) {
                            (true, true) => "yours, trusted",
                            (true, false) => "yours",
                            (false, _) => "trusted",
                        };
                        outln!("{:<20} {}  {what}", k.name, k.fingerprint);
                    }
                }
            }
            KeysCommand::Show { name } => {
                let key = store.public_key(&name)?;
                out!("{}", key.to_pem());
            }
            KeysCommand::Trust { file, name, skills } => {
                let text = std::fs::read_to_string(&file).map_err(|source| KeyError::Io {
                    path: file.clone(),
                    source,
                })?;
                let key = PublicKey::from_pem(&text)
                    .map_err(|e| KeyError::Malformed(format!("{}: {e}", file.display())))?;
                store.trust(&name, &key)?;
                if !skills.is_empty() {
                    trust::set_scope(&store, &name, Some(&skills))?;
                }
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({
                            "name": name,
                            "fingerprint": key.fingerprint(),
                            "skills": (!skills.is_empty()).then_some(&skills),
                        })
                    );
                } else if skills.is_empty() {
                    errln!("trusting {name:?} for any skill: {}", key.fingerprint());
                } else {
                    errln!(
                        "trusting {name:?} for the skills {}: {}",
                        skills.join(", "),
                        key.fingerprint()
                    );
                }
            }
            KeysCommand::Untrust { name } => {
                // The scope first: a trust.toml naming a key no longer
                // trusted would stop every daemon reading it.
                if store.dir().join(trust::TRUST_FILE).exists() {
                    store.public_key(&name)?;
                    trust::set_scope(&store, &name, None)?;
                }
                store.untrust(&name)?;
                errln!("no longer trusting {name:?}");
            }
            KeysCommand::Policy { require_signature } => {
                if let Some(on) = require_signature {
                    trust::set_require_signature(&store, on)?;
                }
                let policy = trust::TrustPolicy::load(store.clone())?;
                let config = policy.config();
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({
                            "file": policy.file(),
                            "require_signature": config.require_signature,
                            "publishers": config.publishers,
                            "trusted": store.trusted()?.iter().map(|(n, k)| {
                                serde_json::json!({ "name": n, "fingerprint": k.fingerprint() })
                            }).collect::<Vec<_>>(),
                        })
                    );
                } else {
                    outln!(
                        "require-signature  {}",
                        if config.require_signature {
                            "on: only skills signed by a trusted key run"
                        } else {
                            "off: unsigned skills run (a signature that does not hold is refused)"
                        }
                    );
                    for (name, key) in store.trusted()? {
                        let scope = config
                            .publishers
                            .get(&name)
                            .map(|s| s.skills.join(", "))
                            .unwrap_or_else(|| "any skill".into());
                        outln!(
                            "trusted            {name:<16} {}  for {scope}",
                            key.fingerprint()
                        );
                    }
                    if let Some(f) = policy.file() {
                        outln!("file               {}", f.display());
                    }
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => exit::OK,
        Err(e) => key_error(&e, json),
    }
}

/// Sign a skill as a whole: its component and its skill.toml (every
/// capability it requests, its limits and input schema), so that neither
/// can change without breaking the signature.
///
/// Writes skill.sig beside skill.toml: a cosign key-pair signature (ECDSA
/// P-256 over cosign's simple-signing payload) naming the skill's OCI
/// artifact digest. The key is a name in the key store or a key file,
/// which must not be inside the skill's directory.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// Skill directory or skill.toml.
    pub skill: PathBuf,
    /// The signing key: a name in the key store, or a PEM file path.
    #[arg(long)]
    pub key: String,
    /// The reference the signature names (default: the skill's name).
    #[arg(long)]
    pub reference: Option<String>,
    /// The key store's directory.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Signs `source` with the key `key` (a name in the store at `keys_dir`,
/// or a key file outside the skill's directory) and writes its
/// `skill.sig`; the signature and the artifact digest it names.
pub fn sign_source(
    source: &SkillSource,
    key: &str,
    keys_dir: Option<PathBuf>,
    reference: Option<&str>,
) -> Result<(trust::SkillSignature, String), KeyError> {
    let dir = source
        .manifest_path
        .as_deref()
        .and_then(|p| p.parent())
        .and_then(|d| d.canonicalize().ok());
    if key.contains('/')
        && let (Some(dir), Ok(path)) = (&dir, std::fs::canonicalize(key))
        && path.starts_with(dir)
    {
        return Err(KeyError::Malformed(format!(
            "the key {} is inside the skill's directory {}: a private key must never ship \
             with a skill; move it out (e.g. into the key store with `skillbox keys`)",
            path.display(),
            dir.display()
        )));
    }
    let key = store(keys_dir).signing_key(key)?;
    let signature = trust::sign(source, &key, reference)?;
    let digest = signature.claims()?.critical.image.docker_manifest_digest;
    Ok((signature, digest))
}

/// `skillbox sign`.
pub fn sign(args: SignArgs) -> u8 {
    let source = match SkillSource::open(&args.skill, false) {
        Ok(s) => s,
        Err(e) => return super::output::report_error(&e, args.json),
    };
    match sign_source(&source, &args.key, args.keys_dir, args.reference.as_deref()) {
        Ok((signature, digest)) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "skill": source.name,
                        "digest": digest,
                        "key": signature.key,
                    })
                );
            } else {
                errln!(
                    "signed {} ({digest}) with {}: wrote {}",
                    source.name,
                    signature.key,
                    trust::SIGNATURE_FILE
                );
            }
            exit::OK
        }
        Err(e) => key_error(&e, args.json),
    }
}
