//! [`MountPlan`]: everything one Mount needs, parsed once from the driver's
//! `MountRequest` and validated; nothing after it looks at the raw strings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::AuthPlan;
use super::auth::parse_auth;
use super::error::RequestError;
use super::objects::{self, ObjectSpec, TemplateSpec};
use super::params::{Params, check_sizes, parse_string_map};
use super::target::{Defaults, Namespace, VaultTarget, parse_address, parse_tls};
use crate::proto::MountRequest;

/// Default file mode when the driver sends no `permission` (it always sends
/// `"420"`, i.e. 0644).
const DEFAULT_MODE: u32 = 0o644;

/// Keys the driver adds to `attributes` for the pod being mounted.
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";

/// The pod the volume belongs to, from the driver's `csi.storage.k8s.io/*`
/// keys. The v1.5 rotation reconciler sends only some of them, so all are
/// optional; they are used for logs and pod-bound identities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod UID.
    pub uid: Option<String>,
    /// Service account name.
    pub service_account: Option<String>,
}

/// Everything one Mount needs, validated.
#[derive(Clone, Debug)]
pub struct MountPlan {
    /// The pod, for logs.
    pub pod: PodInfo,
    /// `secretProviderClass` if the driver sent it (v1.5 rotation does not).
    pub spc_name: Option<String>,
    /// The Vault server.
    pub vault: Arc<VaultTarget>,
    /// How to log in.
    pub auth: AuthPlan,
    /// What to fetch and write, in `objects` order (shared: volumes of one
    /// SecretProviderClass that the provider keeps fresh hold one copy).
    pub objects: Arc<[ObjectSpec]>,
    /// Objects composed from the others by templates.
    pub templates: Vec<TemplateSpec>,
    /// File mode for objects without `filePermission`.
    pub default_mode: u32,
    /// The pod's volume directory.
    pub target_path: PathBuf,
    /// `fileOwnerUid` / `fileOwnerGid`: owner of the files (direct mode only).
    pub owner: FileOwner,
    /// `syncSecretName`: also apply the files as this Secret (provider-side sync).
    pub sync_secret: Option<SyncSecret>,
}

/// The Secret provider-side sync writes (`syncSecretName`), in the pod's
/// namespace and owned by the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSecret {
    /// The Secret's name.
    pub name: String,
    /// The pod's namespace (and the Secret's).
    pub namespace: String,
    /// The owner pod's name.
    pub pod_name: String,
    /// The owner pod's UID.
    pub pod_uid: String,
}

/// Who owns the written files and directories (`fileOwnerUid`,
/// `fileOwnerGid`). Only the provider's direct mode can honour it; unset
/// means the provider's own user (root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOwner {
    /// Numeric user ID.
    pub uid: Option<u32>,
    /// Numeric group ID.
    pub gid: Option<u32>,
}

impl MountPlan {
    /// Refuses ownership parameters in response mode, where the driver writes
    /// every file as root and cannot honour them.
    pub fn check_response_mode(&self) -> Result<(), RequestError> {
        let parameter = match (self.owner.uid, self.owner.gid) {
            (Some(_), _) => "fileOwnerUid",
            (None, Some(_)) => "fileOwnerGid",
            (None, None) => return Ok(()),
        };
        Err(RequestError::invalid(
            parameter,
            "needs the provider to run with --write-mode direct: in the default response mode \
             the driver writes the files and they are always owned by root",
        ))
    }
}

/// Parses a `MountRequest` into a plan, or says exactly which parameter is wrong.
pub fn parse(request: &MountRequest, defaults: &Defaults) -> Result<MountPlan, RequestError> {
    let attributes: HashMap<String, String> = parse_string_map(&request.attributes)
        .map_err(|why| RequestError::invalid("attributes", why))?;
    let secrets: HashMap<String, String> =
        parse_string_map(&request.secrets).map_err(|why| RequestError::invalid("secrets", why))?;
    check_sizes(&attributes, &secrets)?;
    let params = Params(&attributes);

    let pod = PodInfo {
        name: params.get(POD_NAME),
        namespace: params.get(POD_NAMESPACE),
        uid: params.get(POD_UID),
        service_account: params.get(SERVICE_ACCOUNT),
    };

    let vault = VaultTarget {
        address: match params.get("vaultAddress") {
            Some(raw) => {
                let address = parse_address(&raw)
                    .map_err(|why| RequestError::invalid("vaultAddress", why))?;
                // Checked before anything connects: the provider's network
                // position and client certificate are not the tenant's to aim.
                if !defaults.allows(&address) {
                    return Err(RequestError::invalid(
                        "vaultAddress",
                        format!(
                            "{} is not an allowed Vault origin; the provider's operator lists \
                             the ones SecretProviderClasses may name with --allowed-vault-addr",
                            address.origin().ascii_serialization()
                        ),
                    ));
                }
                address
            }
            None => defaults.vault_address.clone(),
        },
        tls: parse_tls(&params, &defaults.tls, defaults.spc_tls_dir.as_deref())?,
    };

    let namespace = match params.get("vaultNamespace") {
        Some(raw) => {
            Namespace::parse(&raw).map_err(|why| RequestError::invalid("vaultNamespace", why))?
        }
        None => defaults.vault_namespace.clone(),
    };
    let auth_namespace = match params.get("vaultAuthNamespace") {
        Some(raw) => Namespace::parse(&raw)
            .map_err(|why| RequestError::invalid("vaultAuthNamespace", why))?,
        None => namespace.clone(),
    };

    let auth = parse_auth(&params, &secrets, auth_namespace)?;

    let objects_raw = params.get("objects").ok_or_else(|| {
        RequestError::invalid("objects", "is required: list the secrets to mount")
    })?;
    let objects = objects::parse(&objects_raw, namespace.as_ref())?;
    let sync_secret = parse_sync_secret(&params, &pod)?;

    Ok(MountPlan {
        pod,
        spc_name: params.get("secretProviderClass"),
        vault: Arc::new(vault),
        auth,
        objects: objects.vault.into(),
        templates: objects.templates,
        default_mode: parse_permission(&request.permission)?,
        target_path: PathBuf::from(&request.target_path),
        owner: FileOwner {
            uid: parse_id(&params, "fileOwnerUid", "user")?,
            gid: parse_id(&params, "fileOwnerGid", "group")?,
        },
        sync_secret,
    })
}

/// `syncSecretName`: a Secret name (DNS subdomain), and the pod it belongs to.
fn parse_sync_secret(
    params: &Params<'_>,
    pod: &PodInfo,
) -> Result<Option<SyncSecret>, RequestError> {
    const KEY: &str = "syncSecretName";
    let Some(name) = params.get(KEY) else {
        return Ok(None);
    };
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(RequestError::invalid(
            KEY,
            format!("{name:?} is not a valid Secret name (lowercase DNS subdomain)"),
        ));
    }
    match (&pod.namespace, &pod.name, &pod.uid) {
        (Some(namespace), Some(pod_name), Some(pod_uid)) => Ok(Some(SyncSecret {
            name,
            namespace: namespace.clone(),
            pod_name: pod_name.clone(),
            pod_uid: pod_uid.clone(),
        })),
        _ => Err(RequestError::invalid(
            KEY,
            "needs the pod's namespace, name and uid, which the driver sends \
             (csi.storage.k8s.io/pod.*)",
        )),
    }
}

/// The request's default mode: JSON of Go's `os.FileMode`, a decimal number.
fn parse_permission(raw: &str) -> Result<u32, RequestError> {
    let raw = raw.trim().trim_matches('"');
    if raw.is_empty() {
        return Ok(DEFAULT_MODE);
    }
    let mode: u32 = raw.parse().map_err(|_| {
        RequestError::invalid("permission", format!("{raw:?} is not a decimal file mode"))
    })?;
    if mode > 0o777 {
        return Err(RequestError::invalid(
            "permission",
            format!("{mode:#o} has bits outside 0777"),
        ));
    }
    Ok(mode)
}

/// A numeric user or group ID. `4294967295` is `-1` to `chown(2)` ("leave
/// unchanged"), so it is refused rather than silently ignored.
fn parse_id(params: &Params<'_>, key: &str, what: &str) -> Result<Option<u32>, RequestError> {
    let Some(raw) = params.get(key) else {
        return Ok(None);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|id| raw.bytes().all(|b| b.is_ascii_digit()) && *id != u32::MAX)
        .map(Some)
        .ok_or_else(|| {
            RequestError::invalid(
                key,
                format!("{raw:?} is not a numeric {what} ID (0 to 4294967294)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::error::MAX_ERROR_MESSAGE;
    use crate::request::params::MAX_PARAMETER;
    use crate::request::{Credentials, TlsSettings};
    use secrecy::ExposeSecret;
    use url::Url;

    fn defaults() -> Defaults {
        Defaults {
            vault_address: Url::parse("http://127.0.0.1:8200").unwrap(),
            vault_namespace: None,
            tls: TlsSettings::default(),
            allowed_vault_addrs: Default::default(),
            spc_tls_dir: None,
        }
    }

    fn request(attributes: serde_json::Value, secrets: &str) -> MountRequest {
        MountRequest {
            attributes: attributes.to_string(),
            secrets: secrets.to_owned(),
            target_path: "/tmp/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    const OBJECTS: &str = "- objectName: a\n  secretPath: secret/data/a\n  secretKey: k\n";

    #[test]
    fn sync_secret_names_the_pod_as_owner() {
        let mut attributes = serde_json::json!({
            "roleId": "rid", "objects": OBJECTS, "syncSecretName": "app-vault",
            "csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.uid": "u",
            "csi.storage.k8s.io/pod.namespace": "team-a",
        });
        let plan = parse(
            &request(attributes.clone(), r#"{"secretId":"s"}"#),
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            plan.sync_secret,
            Some(SyncSecret {
                name: "app-vault".into(),
                namespace: "team-a".into(),
                pod_name: "p".into(),
                pod_uid: "u".into(),
            })
        );
        for bad in ["App", "a_b", "-a", "a..b", &"a".repeat(254)] {
            attributes["syncSecretName"] = serde_json::json!(bad);
            let err = parse(
                &request(attributes.clone(), r#"{"secretId":"s"}"#),
                &defaults(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("syncSecretName"), "{bad}: {err}");
        }
        attributes["syncSecretName"] = serde_json::json!("app-vault");
        attributes
            .as_object_mut()
            .unwrap()
            .remove("csi.storage.k8s.io/pod.uid");
        let err = parse(&request(attributes, r#"{"secretId":"s"}"#), &defaults()).unwrap_err();
        assert!(err.to_string().contains("uid"), "{err}");
    }

    #[test]
    fn approle_with_role_id_parameter() {
        let plan = parse(
            &request(
                serde_json::json!({
                    "roleId": "rid", "objects": OBJECTS,
                    "vaultNamespace": "admin/deployments/x",
                    "csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.uid": "u",
                }),
                r#"{"secretId":"sid"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        let Credentials::AppRole { role_id, secret_id } = &plan.auth.credentials else {
            panic!("expected AppRole");
        };
        assert_eq!(plan.auth.auth_mount, "approle");
        assert_eq!(
            plan.auth.namespace.as_ref().unwrap().as_str(),
            "admin/deployments/x"
        );
        assert_eq!(role_id, "rid");
        assert_eq!(secret_id.expose_secret(), "sid");
        assert_eq!(plan.default_mode, 0o644);
        assert_eq!(plan.pod.name.as_deref(), Some("p"));
        assert_eq!(
            plan.objects[0].source.namespace.as_ref().unwrap().as_str(),
            "admin/deployments/x"
        );
    }

    #[test]
    fn approle_from_secret_keys_and_auth_namespace() {
        let plan = parse(
            &request(
                serde_json::json!({
                    "objects": OBJECTS, "vaultNamespace": "admin/a", "vaultAuthNamespace": "admin",
                    "vaultAuthMountPath": "auth/ci-approle",
                }),
                r#"{"roleId":"rid","id":"sid"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        let Credentials::AppRole { secret_id, .. } = &plan.auth.credentials else {
            panic!("expected AppRole");
        };
        assert_eq!(plan.auth.auth_mount, "ci-approle");
        assert_eq!(plan.auth.namespace.as_ref().unwrap().as_str(), "admin");
        assert_eq!(secret_id.expose_secret(), "sid");
        assert_eq!(
            plan.objects[0].source.namespace.as_ref().unwrap().as_str(),
            "admin/a"
        );
    }

    #[test]
    fn secrets_may_be_null_empty_or_missing() {
        for secrets in ["null", "{}", ""] {
            let err = parse(
                &request(
                    serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                    secrets,
                ),
                &defaults(),
            )
            .unwrap_err();
            assert_eq!(err.parameter, "secretId", "secrets = {secrets:?}");
        }
    }

    #[test]
    fn kubernetes_is_the_default_like_hashicorp() {
        let tokens = serde_json::json!({"vault": {"token": "jwt-v", "expirationTimestamp": "x"}})
            .to_string();
        let plan = parse(
            &request(
                serde_json::json!({"roleName": "app", "objects": OBJECTS,
                    "csi.storage.k8s.io/serviceAccount.tokens": tokens}),
                "null",
            ),
            &defaults(),
        )
        .unwrap();
        let Credentials::Kubernetes(login) = &plan.auth.credentials else {
            panic!("expected Kubernetes auth");
        };
        assert_eq!(plan.auth.auth_mount, "kubernetes");
        assert_eq!(login.audience, "vault");
        assert_eq!(login.jwt.expose_secret(), "jwt-v");

        let err = parse(
            &request(
                serde_json::json!({"roleName": "app", "objects": OBJECTS, "audience": "other",
                "csi.storage.k8s.io/serviceAccount.tokens": tokens}),
                "null",
            ),
            &defaults(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let cases = [
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAuthMethod": "ldap"}),
                "vaultAuthMethod",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAddress": "ftp://x"}),
                "vaultAddress",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAddress": "http://127.0.0.1:8201"}),
                "vaultAddress",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultCACertPath": "/etc/ca.pem"}),
                "vaultCACertPath",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultSkipTLSVerify": "yes"}),
                "vaultSkipTLSVerify",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultNamespace": "a/../b"}),
                "vaultNamespace",
            ),
            (serde_json::json!({"roleId": "r"}), "objects"),
            (serde_json::json!({"objects": OBJECTS}), "roleName"),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAuthMountPath": "a", "vaultKubernetesMountPath": "b"}),
                "vaultAuthMountPath",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultTLSClientCertPath": "/c"}),
                "vaultTLSClientCertPath",
            ),
        ];
        for (attributes, parameter) in cases {
            let err = parse(
                &request(attributes.clone(), r#"{"secretId":"s"}"#),
                &defaults(),
            )
            .unwrap_err();
            assert_eq!(err.parameter, parameter, "{attributes}");
        }
    }

    #[test]
    fn vault_addresses_are_checked_against_the_allowed_origins() {
        let attributes = |address: &str| {
            request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAddress": address}),
                r#"{"secretId":"s"}"#,
            )
        };
        // --vault-addr's origin, default port spelled or not.
        assert!(parse(&attributes("http://127.0.0.1:8200/"), &defaults()).is_ok());
        let err = parse(&attributes("http://vault.evil:8200"), &defaults()).unwrap_err();
        assert_eq!(err.parameter, "vaultAddress");
        assert!(err.message.contains("--allowed-vault-addr"), "{err}");
        let listed = Defaults {
            allowed_vault_addrs: crate::request::AllowedOrigins::parse(&["https://vault.other"])
                .unwrap(),
            ..defaults()
        };
        assert!(parse(&attributes("https://vault.other:443/v"), &listed).is_ok());
        assert!(parse(&attributes("http://vault.other"), &listed).is_err());
        let any = Defaults {
            allowed_vault_addrs: crate::request::AllowedOrigins::Any,
            ..defaults()
        };
        assert!(parse(&attributes("http://vault.evil:8200"), &any).is_ok());
    }

    #[test]
    fn malformed_json_is_refused() {
        let mut req = request(serde_json::json!({}), "null");
        req.attributes = "{not json".into();
        assert_eq!(
            parse(&req, &defaults()).unwrap_err().parameter,
            "attributes"
        );
        req.attributes = r#"{"objects": 5}"#.into();
        assert_eq!(
            parse(&req, &defaults()).unwrap_err().parameter,
            "attributes"
        );
        req.attributes = serde_json::json!({"roleId": "r", "objects": OBJECTS}).to_string();
        req.secrets = "[1]".into();
        assert_eq!(parse(&req, &defaults()).unwrap_err().parameter, "secrets");
    }

    #[test]
    fn huge_values_are_refused_and_never_echoed_whole() {
        let huge = "x".repeat(MAX_PARAMETER + 1);
        let err = parse(
            &request(
                serde_json::json!({"roleId": huge, "objects": OBJECTS}),
                r#"{"secretId":"s"}"#,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.parameter, "roleId");
        let objects = format!("- objectName: {}\n  secretPath: a\n", "é".repeat(3000));
        let err = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": objects}),
                r#"{"secretId":"s"}"#,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert!(err.message.contains("objectName"), "{err}");
        assert!(err.message.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        let secrets = serde_json::json!({"secretId": huge}).to_string();
        let err = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                &secrets,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.parameter, "secret key secretId");
        assert!(
            !err.to_string().contains("xxxxxxxx"),
            "the value is not echoed"
        );
    }

    #[test]
    fn permission_is_decimal() {
        assert_eq!(parse_permission("420").unwrap(), 0o644);
        assert_eq!(parse_permission("\"384\"").unwrap(), 0o600);
        assert_eq!(parse_permission("").unwrap(), 0o644);
        assert!(parse_permission("0644x").is_err());
        assert!(parse_permission("4096").is_err());
    }

    #[test]
    fn file_owner_ids_are_numeric() {
        let with = |uid: &str, gid: &str| {
            parse(
                &request(
                    serde_json::json!({"roleId": "r", "objects": OBJECTS,
                        "fileOwnerUid": uid, "fileOwnerGid": gid}),
                    r#"{"secretId":"s"}"#,
                ),
                &defaults(),
            )
        };
        assert_eq!(
            with("1000", "").unwrap().owner,
            FileOwner {
                uid: Some(1000),
                gid: None
            }
        );
        assert_eq!(with("0", "65534").unwrap().owner.gid, Some(65534));
        for (uid, gid, parameter) in [
            ("-1", "", "fileOwnerUid"),
            ("app", "", "fileOwnerUid"),
            ("+5", "", "fileOwnerUid"),
            ("4294967295", "", "fileOwnerUid"),
            ("1000", "1e3", "fileOwnerGid"),
            ("", "4294967296", "fileOwnerGid"),
        ] {
            let err = with(uid, gid).unwrap_err();
            assert_eq!(err.parameter, parameter, "{uid:?} {gid:?}");
            assert!(err.message.contains("numeric"), "{err}");
        }
    }

    #[test]
    fn secret_id_never_appears_in_debug_output() {
        let plan = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                r#"{"secretId":"s3cr3t-id"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        assert!(!format!("{plan:?}").contains("s3cr3t-id"));
    }

    #[test]
    fn ownership_parameters_need_direct_mode() {
        let mut plan = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                r#"{"secretId":"s"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        let mut owner = FileOwner::default();
        let mut check = |owner: FileOwner| {
            plan.owner = owner;
            plan.check_response_mode().map_err(|e| e.parameter)
        };
        assert_eq!(check(owner), Ok(()));
        owner.gid = Some(10);
        assert_eq!(check(owner), Err("fileOwnerGid".into()));
        owner.uid = Some(10);
        assert_eq!(check(owner), Err("fileOwnerUid".into()));
    }
}
