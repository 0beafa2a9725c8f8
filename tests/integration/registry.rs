//! Skills in an OCI registry: `skillbox::oci` against a real CNCF
//! distribution registry (`tests/oci/registry.sh`), with skopeo and curl as
//! the other clients, and against registries that are down, lie, or answer
//! garbage.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use skillbox::oci::{OciError, PullLimits, Reference, Registry, pull_skill, push_skill};
use skillbox::skill::sha256_hex;
use skillbox::trust::{Artifact, SigningKey, SkillSignature};

use crate::harness::{guest, root};

/// A private registry on 127.0.0.1, stopped (and its directory deleted)
/// when dropped.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
}

impl TestRegistry {
    /// Starts one, or returns `None` (after saying so loudly) where
    /// docker-registry is not installed; in CI that is a failure.
    pub fn start() -> Option<TestRegistry> {
        if !installed("docker-registry") {
            skip("no docker-registry (bash tests/oci/registry.sh install)");
            return None;
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/sbxr-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let out = script()
            .arg("start")
            .arg(&dir)
            .output()
            .expect("running tests/oci/registry.sh");
        assert!(
            out.status.success(),
            "registry.sh start {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Some(TestRegistry { addr, dir })
    }

    /// `oci://ADDR/rest`.
    pub fn reference(&self, rest: &str) -> Reference {
        Reference::parse(&format!("oci://{}/{rest}", self.addr)).unwrap()
    }

    /// Where the registry keeps the blob (or manifest) `digest` on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn stop(&self) {
        match script().arg("stop").arg(&self.dir).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "registry.sh stop {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("registry.sh stop {}: {e}", self.dir.display()),
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn script() -> Command {
    let mut c = Command::new("bash");
    c.arg(root().join("tests/oci/registry.sh"));
    c
}

pub fn installed(tool: &str) -> bool {
    Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn skip(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}: required in CI");
    }
    eprintln!("\n**********\nSKIPPED: {why}\n**********\n");
}

/// Bytes that start like a component; the registry never looks inside.
fn component(n: u8) -> Vec<u8> {
    let mut c = b"\0asm\x0d\x00\x01\x00".to_vec();
    c.extend(std::iter::repeat_n(n, 1000));
    c
}

const TOML: &str = "[skill]\nname = \"hello\"\nversion = \"0.1.0\"\n";

/// curl, failing the test on an error status.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-fsS", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Uploads a blob with curl (POST, then PUT to the Location).
fn curl_blob(addr: &str, repo: &str, bytes: &[u8], dir: &Path) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let file = dir.join(sha256_hex(bytes));
    std::fs::write(&file, bytes).unwrap();
    let headers = curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{addr}/v2/{repo}/blobs/uploads/"),
    ]);
    let location = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .expect("a Location");
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{addr}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]);
    digest
}

fn curl_manifest(addr: &str, repo: &str, tag: &str, manifest: &str, dir: &Path) {
    let file = dir.join("manifest.json");
    std::fs::write(&file, manifest).unwrap();
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{addr}/v2/{repo}/manifests/{tag}"),
    ]);
}

/// An HTTP/1.1 answer with `body` and a correct Content-Length.
fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

/// A "registry" on 127.0.0.1 that answers every request with `answer`
/// (after reading the request's head), for `n` connections.
fn fake_registry(answer: Vec<u8>, n: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let _ = s.write_all(&answer);
        }
    });
    addr
}

#[tokio::test]
async fn a_skill_pushed_and_pulled_comes_back_byte_identical_with_its_signature() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let wasm = std::fs::read(guest("hello")).unwrap();
    let toml = std::fs::read_to_string(root().join("skills/hello/skill.toml")).unwrap();
    let to = reg.reference("skills/hello:0.1.0");
    let artifact = Artifact::of(&wasm, &toml, None);
    let acme = SigningKey::generate();
    let signature = SkillSignature::sign(&acme, &to.repository_name(), &artifact.digest);

    let digest = push_skill(&to, &wasm, &toml, None, Some(&signature))
        .await
        .unwrap();
    assert_eq!(digest, artifact.digest);

    let pulled = pull_skill(&to, &PullLimits::default()).await.unwrap();
    assert_eq!(pulled.reference, to);
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.manifest, artifact.manifest, "the manifest as pushed");
    assert_eq!(pulled.config, artifact.config);
    assert!(pulled.component == wasm, "the component as pushed");
    assert_eq!(pulled.skill_toml, toml);
    assert_eq!(pulled.signatures, vec![signature.clone()]);
    let signed = pulled.signatures[0]
        .verify(&acme.public(), &pulled.digest)
        .unwrap();
    assert_eq!(signed.reference, to.repository_name());

    // By digest, too; and the tag list shows the artifact and its
    // attachment, as cosign names it.
    let by_digest = pull_skill(&to.pinned(&digest), &PullLimits::default())
        .await
        .unwrap();
    assert_eq!(by_digest.manifest, artifact.manifest);
    let registry = Registry::new(&reg.addr).unwrap();
    let mut tags = registry.tags("skills/hello").await.unwrap();
    tags.sort();
    let sig_tag = format!("sha256-{}.sig", &digest["sha256:".len()..]);
    assert_eq!(tags, vec!["0.1.0".to_string(), sig_tag]);

    // A second publisher's signature joins the first; the first signing
    // again replaces its own.
    let other = SigningKey::generate();
    let second = SkillSignature::sign(&other, &to.repository_name(), &digest);
    push_skill(&to, &wasm, &toml, None, Some(&second))
        .await
        .unwrap();
    let again = SkillSignature::sign(&acme, "skills/hello", &digest);
    push_skill(&to, &wasm, &toml, None, Some(&again))
        .await
        .unwrap();
    let pulled = pull_skill(&to, &PullLimits::default()).await.unwrap();
    assert_eq!(pulled.signatures, vec![second, again]);

    // Unsigned: no attachment, no signatures.
    let bare = reg.reference("skills/bare:1");
    push_skill(&bare, &component(1), TOML, None, None)
        .await
        .unwrap();
    let pulled = pull_skill(&bare, &PullLimits::default()).await.unwrap();
    assert!(pulled.signatures.is_empty());

    // A signature of something else is not attached.
    let e = push_skill(&bare, &component(2), TOML, None, Some(&signature))
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Signature { .. }), "{e:?}");
    assert!(e.to_string().contains("sign it again"), "{e}");

    // Limits hold before anything is read.
    let tight = PullLimits {
        manifest: 4 << 20,
        component: 100,
    };
    let e = pull_skill(&to, &tight).await.unwrap_err();
    assert!(matches!(e, OciError::TooLarge { limit: 100, .. }), "{e:?}");
    let tight = PullLimits {
        manifest: 10,
        component: 1 << 30,
    };
    let e = pull_skill(&to, &tight).await.unwrap_err();
    assert!(matches!(e, OciError::TooLarge { limit: 10, .. }), "{e:?}");

    // What is not there is NotFound, named.
    let e = pull_skill(&reg.reference("skills/hello:9.9.9"), &PullLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::NotFound { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("9.9.9") && m.contains(&format!("{}/skills/hello", reg.addr)),
        "{m}"
    );
}

#[tokio::test]
async fn skopeo_copies_what_push_skill_pushed_byte_for_byte() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    if !installed("skopeo") {
        skip("no skopeo (bash tests/oci/registry.sh install)");
        return;
    }
    let wasm = component(7);
    let to = reg.reference("wasm-skill:1");
    let digest = push_skill(&to, &wasm, TOML, None, None).await.unwrap();
    let artifact = Artifact::of(&wasm, TOML, None);
    assert_eq!(digest, artifact.digest);

    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let run = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/wasm-skill:1", reg.addr))
        .arg(format!("dir:{}", out.display()))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        artifact.manifest
    );
    assert_eq!(
        std::fs::read(out.join(sha256_hex(&artifact.config))).unwrap(),
        artifact.config
    );
    assert_eq!(std::fs::read(out.join(sha256_hex(&wasm))).unwrap(), wasm);
}

#[tokio::test]
async fn an_artifact_with_two_layers_or_without_the_skill_manifest_is_not_a_skill() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (addr, dir) = (reg.addr.as_str(), work.path());
    let wasm = component(3);
    let artifact = Artifact::of(&wasm, TOML, None);
    let layer = curl_blob(addr, "other", &wasm, dir);
    let config = curl_blob(addr, "other", &artifact.config, dir);
    let toml = curl_blob(addr, "other", TOML.as_bytes(), dir);
    let desc =
        |t: &str, d: &str, n: usize| format!(r#"{{"mediaType":"{t}","digest":"{d}","size":{n}}}"#);
    let config_desc = desc(
        "application/vnd.wasm.config.v0+json",
        &config,
        artifact.config.len(),
    );
    let wasm_desc = desc("application/wasm", &layer, wasm.len());
    let toml_json = serde_json::to_string(TOML).unwrap();
    let manifest = |layers: &str, annotations: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{config_desc},"layers":[{layers}],"annotations":{{{annotations}}}}}"#
        )
    };
    let cases = [
        (
            "two-layers",
            manifest(
                &format!(
                    "{wasm_desc},{}",
                    desc("application/toml", &toml, TOML.len())
                ),
                &format!(r#""dev.skillbox.manifest":{toml_json}"#),
            ),
            "it has 2 layers",
        ),
        (
            "no-annotation",
            manifest(&wasm_desc, r#""org.opencontainers.image.version":"0.1.0""#),
            "no dev.skillbox.manifest annotation",
        ),
        (
            // Everything a skill has, and one annotation more: not the
            // bytes a signature over the skill would cover.
            "extra-annotation",
            manifest(
                &wasm_desc,
                &format!(
                    r#""dev.skillbox.manifest":{toml_json},"org.opencontainers.image.version":"0.1.0""#
                ),
            ),
            "not pushed by skillbox push",
        ),
    ];
    for (tag, text, expected) in cases {
        curl_manifest(addr, "other", tag, &text, dir);
        let from = reg.reference(&format!("other:{tag}"));
        let e = pull_skill(&from, &PullLimits::default()).await.unwrap_err();
        assert!(matches!(e, OciError::NotASkill { .. }), "{tag}: {e:?}");
        let m = e.to_string();
        assert!(
            m.contains(expected) && m.contains(&from.to_string()),
            "{tag}: {m}"
        );
    }
}

#[tokio::test]
async fn a_pull_by_digest_that_serves_another_manifest_is_a_digest_mismatch() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let a = push_skill(&reg.reference("x:a"), &component(1), TOML, None, None)
        .await
        .unwrap();
    let b = push_skill(&reg.reference("x:b"), &component(2), TOML, None, None)
        .await
        .unwrap();
    // The registry's storage now holds b's manifest where a's should be.
    std::fs::copy(reg.blob_file(&b), reg.blob_file(&a)).unwrap();
    let e = pull_skill(&reg.reference(&format!("x@{a}")), &PullLimits::default())
        .await
        .unwrap_err();
    match &e {
        OciError::DigestMismatch {
            expected, actual, ..
        } => assert_eq!((expected, actual), (&a, &b)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("none of it was used"), "{e}");
}

#[tokio::test]
async fn a_blob_corrupted_in_the_registry_storage_is_a_digest_mismatch() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let wasm = component(5);
    let to = reg.reference("x:1");
    push_skill(&to, &wasm, TOML, None, None).await.unwrap();
    let layer = format!("sha256:{}", sha256_hex(&wasm));
    let mut bad = wasm.clone();
    bad[500] ^= 0xff;
    std::fs::write(reg.blob_file(&layer), &bad).unwrap();

    let e = pull_skill(&to, &PullLimits::default()).await.unwrap_err();
    match &e {
        OciError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &layer);
            assert_eq!(actual, &format!("sha256:{}", sha256_hex(&bad)));
        }
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains(&format!("blob {layer} of {}/x", reg.addr)),
        "{m}"
    );
}

#[tokio::test]
async fn a_registry_that_is_down_is_unreachable() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let to = reg.reference("x:1");
    push_skill(&to, &component(1), TOML, None, None)
        .await
        .unwrap();
    drop(reg);
    let e = pull_skill(&to, &PullLimits::default()).await.unwrap_err();
    assert!(matches!(e, OciError::Unreachable { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains(&to.registry) && m.contains("is the registry running"),
        "{m}"
    );
}

#[tokio::test]
async fn a_registry_that_answers_garbage_is_refused_with_a_clear_message() {
    // An HTTP answer whose body is not a manifest.
    let addr = fake_registry(
        http(
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
            b"junk\x00junk",
        ),
        1,
    );
    let from = Reference::parse(&format!("oci://{addr}/x:1")).unwrap();
    let e = pull_skill(&from, &PullLimits::default()).await.unwrap_err();
    assert!(matches!(e, OciError::Garbage { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains(&from.to_string()) && m.contains("not a JSON manifest"),
        "{m}"
    );

    // Not HTTP at all.
    let addr = fake_registry(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), 1);
    let from = Reference::parse(&format!("oci://{addr}/x:1")).unwrap();
    let e = pull_skill(&from, &PullLimits::default()).await.unwrap_err();
    assert!(matches!(e, OciError::Garbage { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("not HTTP") && m.contains(&addr), "{m}");

    // A tag list that is not one.
    let addr = fake_registry(http("200 OK", "", b"<html>"), 1);
    let e = Registry::new(&addr).unwrap().tags("x").await.unwrap_err();
    assert!(matches!(e, OciError::Garbage { .. }), "{e:?}");
    assert!(e.to_string().contains("not a tag list"), "{e}");

    // A connection closed without an answer.
    let addr = fake_registry(Vec::new(), 1);
    let from = Reference::parse(&format!("oci://{addr}/x:1")).unwrap();
    let e = pull_skill(&from, &PullLimits::default()).await.unwrap_err();
    assert!(matches!(e, OciError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("broke off"), "{e}");

    // A registry that wants credentials.
    let addr = fake_registry(
        http(
            "401 Unauthorized",
            "Content-Type: application/json\r\nWWW-Authenticate: Basic realm=\"r\"\r\n",
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
        ),
        1,
    );
    let from = Reference::parse(&format!("oci://{addr}/x:1")).unwrap();
    let e = pull_skill(&from, &PullLimits::default()).await.unwrap_err();
    assert!(matches!(e, OciError::Status { status: 401, .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("authentication required") && m.contains("not supported yet"),
        "{m}"
    );
}

#[tokio::test]
async fn a_registry_off_loopback_is_refused_without_any_connection() {
    // NotLoopback is returned by Registry::new, before any socket exists.
    for r in ["oci://192.0.2.1:5000/x:1", "oci://registry.example.com/x:1"] {
        let r = Reference::parse(r).unwrap();
        let e = pull_skill(&r, &PullLimits::default()).await.unwrap_err();
        assert!(matches!(e, OciError::NotLoopback(_)), "{e:?}");
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        let e = push_skill(&r, &component(1), TOML, None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, OciError::NotLoopback(_)), "{e:?}");
    }
}

#[tokio::test]
async fn skopeo_finds_the_signature_push_skill_attached() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    if !installed("skopeo") {
        skip("no skopeo (bash tests/oci/registry.sh install)");
        return;
    }
    let key = SigningKey::generate();
    let signed = reg.reference("wasm-skill:1");
    let wasm = component(9);
    let digest = Artifact::of(&wasm, TOML, None).digest;
    let signature = SkillSignature::sign(&key, &signed.repository_name(), &digest);
    push_skill(&signed, &wasm, TOML, None, Some(&signature))
        .await
        .unwrap();
    let unsigned = reg.reference("wasm-skill:2");
    push_skill(&unsigned, &component(10), TOML, None, None)
        .await
        .unwrap();

    // containers/image's sigstoreSigned policy, for this repository only,
    // with attachments looked for at sha256-<hex>.sig.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("pub.pem"), key.public().to_pem()).unwrap();
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {format!("{}/wasm-skill", reg.addr): [{
            "type": "sigstoreSigned",
            "keyPath": w.join("pub.pem"),
            "signedIdentity": {"type": "matchRepository"},
        }]}},
    });
    std::fs::write(w.join("policy.json"), policy.to_string()).unwrap();
    std::fs::create_dir(w.join("registries.d")).unwrap();
    std::fs::write(
        w.join("registries.d/test.yaml"),
        format!(
            "docker:\n  {}:\n    use-sigstore-attachments: true\n",
            reg.addr
        ),
    )
    .unwrap();
    let copy = |tag: &str| {
        let out = Command::new("skopeo")
            .arg("--policy")
            .arg(w.join("policy.json"))
            .arg("--registries.d")
            .arg(w.join("registries.d"))
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/wasm-skill:{tag}", reg.addr))
            .arg(format!("dir:{}", w.join(format!("out-{tag}")).display()))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Found and taken for a sigstore signature: accepted by a skopeo with
    // sigstore; Debian's (see tests/oci/README.md) stops at its stub.
    let (ok, stderr) = copy("1");
    assert!(
        ok || stderr.contains("Debian-local change: sigstore disabled"),
        "{stderr}"
    );
    let (ok, stderr) = copy("2");
    assert!(
        !ok && stderr.contains("A signature was required, but no signature exists"),
        "{stderr}"
    );
}
