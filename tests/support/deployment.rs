//! A deployment namespace set up the way the seed workflow describes it, and
//! the same AppRole + KV v2 set-up in the root namespace of a server a test owns.
#![allow(dead_code)]

use serde_json::{Value, json};

use super::openbao::{OpenBao, deployment_namespace};
use super::postgres::Postgres;

/// The pod every Mount's attributes name unless a test overrides them.
pub const POD_NAME: &str = "app-0";
pub const POD_NAMESPACE: &str = "team-a";
pub const POD_UID: &str = "0b7e2f8a-1111-2222-3333-444455556666";

/// SecretProviderClass parameters as the driver sends them for `objects`,
/// logging in as AppRole `role_id`, without a Vault namespace.
pub fn pod_attributes(role_id: &str, objects: &str) -> Value {
    json!({
        "roleId": role_id,
        "objects": objects,
        "secretProviderClass": "app-secrets",
        "csi.storage.k8s.io/pod.name": POD_NAME,
        "csi.storage.k8s.io/pod.namespace": POD_NAMESPACE,
        "csi.storage.k8s.io/pod.uid": POD_UID,
        "csi.storage.k8s.io/serviceAccount.name": "app",
        "csi.storage.k8s.io/ephemeral": "true",
    })
}

/// `attributes` with each key of the object `extra` set (added or replaced).
pub fn merge(mut attributes: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().expect("extra attributes: an object") {
        attributes[key] = value.clone();
    }
    attributes
}

/// The policy of [`RootApp::seed`]'s role: read every KV v2 secret at `secret`.
pub const READ_SECRETS: &str = r#"path "secret/data/*" { capabilities = ["read"] }"#;

/// In the root namespace of a server the test owns (durable, private, mTLS):
/// KV v2 at `secret`, AppRole at `approle` with a role `app`, and its credentials.
pub struct RootApp {
    pub role_id: String,
    pub secret_id: String,
}

impl RootApp {
    /// The set-up with a role whose policy is [`READ_SECRETS`].
    pub async fn seed(bao: &OpenBao) -> RootApp {
        Self::seed_with_policy(bao, READ_SECRETS).await
    }

    /// The set-up with a role whose policy is `policy` (HCL).
    pub async fn seed_with_policy(bao: &OpenBao, policy: &str) -> RootApp {
        bao.enable_secrets("", "secret", "kv", Some(json!({"version": "2"})))
            .await;
        bao.enable_auth("", "approle", "approle").await;
        bao.write_policy("", "app", policy).await;
        let (role_id, secret_id) = bao.approle("", "approle", "app", &["app"], json!({})).await;
        RootApp { role_id, secret_id }
    }

    /// SecretProviderClass parameters as the driver sends them, for `objects`.
    pub fn attributes(&self, objects: &str) -> Value {
        pod_attributes(&self.role_id, objects)
    }

    pub fn secrets(&self) -> String {
        json!({ "secretId": self.secret_id }).to_string()
    }
}

/// A deployment namespace with KV v2 at `secret`, an AppRole `app` whose
/// policy reads only `secret/data/app*`, and its credentials.
pub struct Deployment {
    pub bao: &'static OpenBao,
    pub ns: String,
    pub role_id: String,
    pub secret_id: String,
}

impl Deployment {
    pub async fn new(prefix: &str) -> Deployment {
        let bao = OpenBao::shared();
        let ns = deployment_namespace(bao, prefix).await;
        bao.write_policy(
            &ns,
            "app-read",
            r#"path "secret/data/app*" { capabilities = ["read"] }"#,
        )
        .await;
        let (role_id, secret_id) = bao
            .approle(&ns, "approle", "app", &["app-read"], json!({}))
            .await;
        Deployment {
            bao,
            ns,
            role_id,
            secret_id,
        }
    }

    /// SecretProviderClass parameters as the driver sends them, for `objects`.
    pub fn attributes(&self, objects: &str) -> Value {
        merge(
            pod_attributes(&self.role_id, objects),
            json!({ "vaultNamespace": self.ns }),
        )
    }

    pub fn secrets(&self) -> String {
        json!({ "secretId": self.secret_id }).to_string()
    }

    pub async fn put(&self, path: &str, data: Value) -> u64 {
        self.bao.kv2_put(&self.ns, "secret", path, data).await
    }

    /// OpenBao's database engine on `pg`: role `app` issues PostgreSQL
    /// credentials with `ttl` and `max_ttl`, and an AppRole `db` (with token
    /// settings `token`) may read and renew them. Returns the Mount's
    /// attributes for objects `username` and `password`, its secrets, and the
    /// secret ID.
    pub async fn database(
        &self,
        pg: &Postgres,
        ttl: &str,
        max_ttl: &str,
        token: Value,
    ) -> (Value, String, String) {
        let (bao, ns) = (self.bao, self.ns.as_str());
        bao.enable_secrets(ns, "database", "database", None).await;
        bao.api(
            "POST",
            ns,
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable", pg.port),
                "username": "postgres",
                "password": "unused-with-trust-auth",
                "allowed_roles": "app",
            })),
        )
        .await;
        bao.api(
            "POST",
            ns,
            "database/roles/app",
            Some(json!({
                "db_name": "pg",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "default_ttl": ttl,
                "max_ttl": max_ttl,
            })),
        )
        .await;
        bao.write_policy(
            ns,
            "db",
            r#"path "database/creds/app" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }"#,
        )
        .await;
        let (role_id, secret_id) = bao.approle(ns, "approle", "db", &["db"], token).await;
        let objects = "- objectName: username\n  secretPath: database/creds/app\n  secretKey: username\n\
                       - objectName: password\n  secretPath: database/creds/app\n  secretKey: password\n";
        let mut attributes = self.attributes(objects);
        attributes["roleId"] = json!(role_id);
        let secrets = json!({"secretId": secret_id}).to_string();
        (attributes, secrets, secret_id)
    }

    /// JWT auth at `jwt` checking signatures with a new key, and its role
    /// `app` (`role`: the role's settings); returns the private key (PEM)
    /// to sign pod tokens with ([`super::jwt::service_account_jwt`]).
    pub async fn jwt_role(&self, role: Value) -> String {
        let (private_pem, public_pem) = super::jwt::signing_key();
        self.bao.enable_auth(&self.ns, "jwt", "jwt").await;
        self.bao
            .api(
                "POST",
                &self.ns,
                "auth/jwt/config",
                Some(json!({"jwt_validation_pubkeys": [public_pem]})),
            )
            .await;
        self.bao
            .api("POST", &self.ns, "auth/jwt/role/app", Some(role))
            .await;
        private_pem
    }

    /// A PKI mount `pki` in the namespace (a root CA, a role `app` for
    /// `*.svc` backdating by 1 s), and an AppRole `fresh` that may issue from
    /// it and read `secret/data/app*`: its role ID and secret ID.
    pub async fn pki_issuer(&self) -> (String, String) {
        let (bao, ns) = (self.bao, self.ns.as_str());
        bao.enable_secrets(ns, "pki", "pki", None).await;
        bao.api(
            "POST",
            ns,
            "pki/root/generate/internal",
            Some(json!({"common_name": "ca", "ttl": "24h"})),
        )
        .await;
        bao.api(
            "POST",
            ns,
            "pki/roles/app",
            Some(json!({"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h", "not_before_duration": "1s"})),
        )
        .await;
        bao.write_policy(
            ns,
            "fresh",
            r#"path "secret/data/app*" { capabilities = ["read"] }
path "pki/issue/app" { capabilities = ["update"] }"#,
        )
        .await;
        bao.approle(ns, "approle", "fresh", &["fresh"], json!({}))
            .await
    }

    /// Logins so far: the tokens that exist in the namespace.
    pub async fn token_count(&self) -> usize {
        self.bao.token_accessors(&self.ns).await.len()
    }
}
