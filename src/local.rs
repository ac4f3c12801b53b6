//! `vault-secrets-provider mount`: a SecretProviderClass file rendered into a
//! local directory, without a driver or a cluster.
//!
//! The file's `spec.parameters` and the pod fields given on the command line
//! become the `attributes` the driver would send, the `--secret*` files the
//! `nodePublishSecretRef` Secret; then the very same parse and Mount as in
//! `serve` run. The files appear all at once: they are written into a
//! temporary directory next to the output directory, with their modes, and
//! renamed into place, so a failed Mount leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::MountArgs;
use crate::proto::{File, MountRequest, MountResponse};
use crate::provider::{MountError, Provider};
use crate::vault::{Vault, VaultConfig};
use crate::version::Versioner;

/// A SecretProviderClass as far as a Mount needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProviderClass {
    /// `metadata.name`.
    pub name: String,
    /// `spec.provider`.
    pub provider: String,
    /// `spec.parameters`.
    pub parameters: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Document {
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Default, Deserialize)]
struct Metadata {
    name: Option<String>,
}

#[derive(Default, Deserialize)]
struct Spec {
    provider: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Finds the SecretProviderClass in a YAML file of one or more documents:
/// the only one, or the one named `name`.
pub fn parse_spc(yaml: &str, name: Option<&str>) -> Result<SecretProviderClass> {
    let mut found = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("document {} is not valid YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        let document: Document = serde_yaml_ng::from_value(value)
            .with_context(|| format!("document {} is not a Kubernetes object", i + 1))?;
        if document.kind.as_deref() != Some("SecretProviderClass") {
            continue;
        }
        let spc_name = document.metadata.name.unwrap_or_default();
        let mut parameters = BTreeMap::new();
        for (key, value) in document.spec.parameters {
            // The API server takes only strings here; say so now rather than
            // let `kubectl apply` fail later.
            let serde_yaml_ng::Value::String(value) = value else {
                bail!(
                    "SecretProviderClass {spc_name:?}: spec.parameters.{key} must be a string \
                     (quote it, or use `|` for a YAML block such as objects)"
                );
            };
            parameters.insert(key, value);
        }
        found.push(SecretProviderClass {
            name: spc_name,
            provider: document.spec.provider.unwrap_or_default(),
            parameters,
        });
    }
    let spc = match name {
        Some(name) => found
            .into_iter()
            .find(|spc| spc.name == name)
            .ok_or_else(|| anyhow!("no SecretProviderClass named {name:?} in the file"))?,
        None if found.len() > 1 => bail!(
            "the file holds {} SecretProviderClasses ({}): choose one with --name",
            found.len(),
            found
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => found
            .pop()
            .ok_or_else(|| anyhow!("the file holds no document of kind SecretProviderClass"))?,
    };
    if spc.provider != "vault" {
        bail!(
            "SecretProviderClass {:?} has spec.provider {:?}: this provider serves \"vault\"",
            spc.name,
            spc.provider
        );
    }
    Ok(spc)
}

/// What the driver would add for the pod, and the Secret's keys.
#[derive(Debug, Default)]
pub struct PodInputs {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Service account name.
    pub service_account: String,
    /// A service-account token for the SPC's audience.
    pub token: Option<String>,
    /// The `nodePublishSecretRef` Secret's data.
    pub secrets: BTreeMap<String, String>,
    /// Default file mode.
    pub permission: u32,
}

/// The `MountRequest` the driver would send for `spc` in that pod.
pub fn mount_request(spc: &SecretProviderClass, pod: &PodInputs, target: &Path) -> MountRequest {
    let mut attributes: serde_json::Map<String, Value> = spc
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut set = |key: &str, value: String| {
        attributes.insert(key.to_owned(), Value::String(value));
    };
    set("secretProviderClass", spc.name.clone());
    set("csi.storage.k8s.io/pod.name", pod.name.clone());
    set("csi.storage.k8s.io/pod.namespace", pod.namespace.clone());
    set("csi.storage.k8s.io/pod.uid", pod.uid.clone());
    set(
        "csi.storage.k8s.io/serviceAccount.name",
        pod.service_account.clone(),
    );
    set("csi.storage.k8s.io/ephemeral", "true".to_owned());
    if let Some(token) = &pod.token {
        let audience = spc
            .parameters
            .get("audience")
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .unwrap_or("vault");
        set(
            "csi.storage.k8s.io/serviceAccount.tokens",
            json!({ audience: { "token": token.trim(), "expirationTimestamp": "" } }).to_string(),
        );
    }
    MountRequest {
        attributes: Value::Object(attributes).to_string(),
        secrets: json!(pod.secrets).to_string(),
        target_path: target.to_string_lossy().into_owned(),
        permission: pod.permission.to_string(),
        current_object_version: Vec::new(),
    }
}

/// Runs `vault-secrets-provider mount`. `Ok(Err(..))` is a failed Mount (its
/// gRPC code and message), `Err(..)` anything else.
pub async fn run(args: &MountArgs) -> Result<Result<(), MountError>> {
    let yaml = if args.spc_file == Path::new("-") {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the SecretProviderClass from standard input")?;
        text
    } else {
        fs::read_to_string(&args.spc_file)
            .with_context(|| format!("cannot read {}", args.spc_file.display()))?
    };
    let spc = parse_spc(&yaml, args.name.as_deref())
        .with_context(|| format!("{}", args.spc_file.display()))?;

    let read_secret = |path: &Path, what: &str| {
        fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    let mut secrets = BTreeMap::new();
    if let Some(path) = &args.secret_id_file {
        secrets.insert(
            "secretId".to_owned(),
            read_secret(path, "--secret-id-file")?,
        );
    }
    for (key, path) in &args.secrets {
        secrets.insert(key.clone(), read_secret(path, "--secret")?);
    }
    let token = args
        .service_account_token_file
        .as_deref()
        .map(|path| read_secret(path, "--service-account-token-file"))
        .transpose()?;
    let pod = PodInputs {
        name: args.pod_name.clone(),
        namespace: args.pod_namespace.clone(),
        uid: args.pod_uid.clone(),
        service_account: args.service_account.clone(),
        token,
        secrets,
        permission: args.permission,
    };
    check_output_dir(&args.output_dir, args.force)?;

    let defaults = args.vault.defaults().map_err(|why| anyhow!(why))?;
    let vault = Vault::new(VaultConfig {
        request_timeout: args.vault.vault_request_timeout,
        token_cache_size: 1,
    });
    // No key file: versions only have to be consistent within this run.
    let provider = Provider::new(vault, Versioner::ephemeral(), defaults);
    let request = mount_request(&spc, &pod, &args.output_dir);
    let mounted = match tokio::time::timeout(args.mount_timeout, provider.mount(&request)).await {
        Ok(result) => result,
        Err(_) => Err(MountError::Timeout(args.mount_timeout)),
    };
    let response = match mounted {
        Ok(response) => response,
        Err(err) => return Ok(Err(err)),
    };
    write_output(&response.files, &args.output_dir, args.force)?;
    print!("{}", summary(&spc.name, &args.output_dir, &response));
    Ok(Ok(()))
}

/// Fails early (before any Vault call) if the output cannot be placed.
fn check_output_dir(dir: &Path, force: bool) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot inspect {}", dir.display())),
        Ok(meta) if !meta.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) if force => Ok(()),
        Ok(_) => {
            let empty = fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_none();
            if empty {
                Ok(())
            } else {
                bail!(
                    "{} is not empty: choose another --output-dir, or --force to replace it",
                    dir.display()
                )
            }
        }
    }
}

/// Writes `files` with their modes into a fresh directory next to `dir`, then
/// renames it into place: `dir` is never seen half-written. With `force` a
/// non-empty `dir` is moved aside first and removed once the new one is in place.
pub fn write_output(files: &[File], dir: &Path, force: bool) -> Result<()> {
    check_output_dir(dir, force)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".vsp-mount.")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )
        })?;
    for file in files {
        write_file(staging.path(), file)?;
    }
    // A directory of secrets: only its owner may list it.
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700))?;

    let replaced = match fs::rename(staging.path(), dir) {
        Ok(()) => None,
        Err(_) if force && dir.is_dir() => {
            let aside = tempfile::Builder::new()
                .prefix(".vsp-mount-old.")
                .tempdir_in(&parent)?;
            // rename() onto an empty directory replaces it.
            fs::rename(dir, aside.path())
                .with_context(|| format!("cannot move {} aside", dir.display()))?;
            if let Err(err) = fs::rename(staging.path(), dir) {
                let _ = fs::rename(aside.path(), dir);
                return Err(err).with_context(|| format!("cannot place {}", dir.display()));
            }
            Some(aside)
        }
        Err(err) => return Err(err).with_context(|| format!("cannot place {}", dir.display())),
    };
    // The staging directory now is `dir`: it must not be removed.
    let _ = staging.keep();
    drop(replaced); // removes the old output, if any
    Ok(())
}

fn write_file(root: &Path, file: &File) -> Result<()> {
    let relative = Path::new(&file.path);
    // The request module validates object names; the files must stay inside anyway.
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        bail!(
            "refusing to write {:?} outside the output directory",
            file.path
        );
    }
    let path = root.join(relative);
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mode = u32::try_from(file.mode).unwrap_or(0o600) & 0o777;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    out.write_all(&file.contents)?;
    out.sync_all()?;
    // Set after writing, and explicitly: the umask must not change the mode.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// What was written: names, sizes, modes, versions; never contents.
pub fn summary(spc: &str, dir: &Path, response: &MountResponse) -> String {
    let versions: BTreeMap<&str, &str> = response
        .object_version
        .iter()
        .map(|v| (v.id.as_str(), v.version.as_str()))
        .collect();
    let mut out = format!(
        "SecretProviderClass {spc:?}: {} file(s) written to {}\n",
        response.files.len(),
        dir.display()
    );
    let width = response
        .files
        .iter()
        .map(|f| f.path.len())
        .max()
        .unwrap_or(0)
        .max(4);
    out.push_str(&format!(
        "  {:<width$}  {:>4}  {:>8}  VERSION\n",
        "PATH", "MODE", "BYTES"
    ));
    for file in &response.files {
        out.push_str(&format!(
            "  {:<width$}  {:04o}  {:>8}  {}\n",
            file.path,
            file.mode,
            file.contents.len(),
            versions.get(file.path.as_str()).copied().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request;

    /// The plan `serve` would make of the request.
    fn plan_of(request: &MountRequest) -> request::MountPlan {
        request::parse(
            request,
            &request::Defaults {
                vault_address: url::Url::parse("http://127.0.0.1:8200").unwrap(),
                vault_namespace: None,
                tls: Default::default(),
            },
        )
        .unwrap()
    }

    const SPC: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets
spec:
  provider: vault
  parameters:
    roleId: rid
    vaultNamespace: admin/deployments/x
    objects: |
      - objectName: db-password
        secretPath: secret/data/database
        secretKey: password
"#;

    #[test]
    fn spc_becomes_the_drivers_request() {
        let spc = parse_spc(SPC, None).unwrap();
        assert_eq!(spc.name, "app-secrets");
        let pod = PodInputs {
            name: "p".into(),
            namespace: "team-a".into(),
            uid: "u".into(),
            service_account: "sa".into(),
            token: None,
            secrets: [("secretId".to_owned(), "sid\n".to_owned())].into(),
            permission: 0o640,
        };
        let request = mount_request(&spc, &pod, Path::new("/tmp/out"));
        assert_eq!(request.permission, "416");
        let plan = plan_of(&request);
        assert_eq!(plan.spc_name.as_deref(), Some("app-secrets"));
        assert_eq!(plan.pod.namespace.as_deref(), Some("team-a"));
        assert_eq!(plan.objects.len(), 1);
        assert_eq!(plan.default_mode, 0o640);
    }

    #[test]
    fn service_account_token_goes_to_the_spcs_audience() {
        let mut spc = parse_spc(SPC, None).unwrap();
        spc.parameters.remove("roleId");
        spc.parameters.insert("roleName".into(), "app".into());
        spc.parameters.insert("audience".into(), "bao".into());
        let pod = PodInputs {
            token: Some("jwt-value\n".into()),
            ..PodInputs::default()
        };
        let request = mount_request(&spc, &pod, Path::new("/tmp/out"));
        let attributes: Value = serde_json::from_str(&request.attributes).unwrap();
        let tokens: Value = serde_json::from_str(
            attributes["csi.storage.k8s.io/serviceAccount.tokens"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(tokens["bao"]["token"], "jwt-value");
        let plan = plan_of(&request);
        assert!(matches!(
            plan.auth.credentials,
            request::Credentials::Kubernetes(_) | request::Credentials::Jwt(_)
        ));
    }

    #[test]
    fn spc_file_problems_are_explained() {
        let two = format!("{SPC}---\n{}", SPC.replace("app-secrets", "other"));
        assert!(
            parse_spc(&two, None)
                .unwrap_err()
                .to_string()
                .contains("--name")
        );
        assert_eq!(parse_spc(&two, Some("other")).unwrap().name, "other");
        assert!(parse_spc("kind: Pod\n", None).is_err());
        let unquoted = SPC.replace("roleId: rid", "vaultSkipTLSVerify: true");
        let err = parse_spc(&unquoted, None).unwrap_err().to_string();
        assert!(err.contains("vaultSkipTLSVerify must be a string"), "{err}");
        let azure = SPC.replace("provider: vault", "provider: azure");
        assert!(parse_spc(&azure, None).is_err());
    }

    fn file(path: &str, mode: i32, contents: &[u8]) -> File {
        File {
            path: path.into(),
            mode,
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn output_appears_whole_with_modes() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let files = [file("a", 0o640, b"1"), file("dir/b", 0o400, b"22")];
        write_output(&files, &out, false).unwrap();
        assert_eq!(fs::read(out.join("dir/b")).unwrap(), b"22");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.join("a")), 0o640);
        assert_eq!(mode(&out.join("dir/b")), 0o400);
        assert_eq!(mode(&out), 0o700);

        // Not empty: refused without --force, replaced with it.
        assert!(write_output(&files[..1], &out, false).is_err());
        write_output(&files[..1], &out, true).unwrap();
        assert!(!out.join("dir").exists());
        // Nothing but `out` is left next to it.
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1);

        // A file that would escape: nothing is placed.
        let bad = root.path().join("bad");
        assert!(write_output(&[file("../x", 0o644, b"")], &bad, false).is_err());
        assert!(!bad.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
